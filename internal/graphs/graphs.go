// Package graphs keeps job graphs (chain, group, on-done edges) in Redis:
// one hash per graph, {<prefix>:graph:<id>}, holding each waiting job's
// message, its parents and children, and which jobs are done or cancelled.
// A job is released (published) when all its parents are done. Release is
// computed from the done marks, not by counting down, so it is idempotent:
// a worker that dies between marking and publishing leaves the parent's
// message unacknowledged, it runs again, and the release repeats (the
// publish is deduplicated by the child's job id).
package graphs

import (
	"context"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/connector-go/connector/internal/wire"
	"github.com/redis/go-redis/v9"
)

// TTL bounds how long an unfinished graph is kept: TTL after the latest
// ETA of its jobs, and at least TTL after its last job done (Done renews
// it).
const TTL = 30 * 24 * time.Hour

// Key is the Redis hash of a graph.
func Key(n wire.Names, graph string) string { return "{" + n.Prefix + ":graph:" + graph + "}" }

// Pending is a job held until its parents are done.
type Pending struct {
	Subject string              `msgpack:"s"`
	Header  map[string][]string `msgpack:"h"`
	Data    []byte              `msgpack:"d"`
}

// Node is one job of a graph as stored.
type Node struct {
	ID       string
	Parents  []string
	Children []string
	Pending  *Pending // nil for roots (published at once)
	// ETA is when the job is due, zero for now. The graph is kept TTL
	// past the latest ETA of its jobs.
	ETA time.Time
}

// Store writes a new graph.
func Store(ctx context.Context, rdb redis.UniversalClient, n wire.Names, graph string, nodes []Node) error {
	key := Key(n, graph)
	vals := make([]any, 0, 6*len(nodes))
	var last time.Time // latest ETA
	for _, nd := range nodes {
		if nd.ETA.After(last) {
			last = nd.ETA
		}
		if len(nd.Children) > 0 {
			vals = append(vals, "children:"+nd.ID, strings.Join(nd.Children, ","))
		}
		if len(nd.Parents) > 0 {
			vals = append(vals, "parents:"+nd.ID, strings.Join(nd.Parents, ","))
		}
		if nd.Pending != nil {
			b, err := wire.Marshal(nd.Pending)
			if err != nil {
				return err
			}
			vals = append(vals, "job:"+nd.ID, b)
		}
	}
	if len(vals) == 0 {
		return nil
	}
	pipe := rdb.TxPipeline()
	pipe.HSet(ctx, key, vals...)
	ttl := TTL
	if wait := time.Until(last); wait > 0 {
		// Saturating: time.Until caps at the largest Duration, and a sum
		// past it would be a negative expiry Redis refuses.
		ttl += min(wait, math.MaxInt64-TTL)
	}
	pipe.PExpire(ctx, key, ttl)
	_, err := pipe.Exec(ctx)
	if err != nil {
		return fmt.Errorf("graphs: %w", err)
	}
	return nil
}

// doneScript marks a job done and returns its children now ready. A graph
// that is not kept (one without edges stores nothing; an expired one is
// gone) has nothing to release: the mark would make a hash without expiry.
// A graph making progress is kept at least ARGV[2] ms more (never less
// than it was), so the children released now find it when they are done.
var doneScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 0 then return {} end
redis.call('HSET', KEYS[1], 'done:' .. ARGV[1], '1')
local ttl = tonumber(ARGV[2])
local left = redis.call('PTTL', KEYS[1])
if left >= 0 and left < ttl then redis.call('PEXPIRE', KEYS[1], ttl) end
local kids = redis.call('HGET', KEYS[1], 'children:' .. ARGV[1])
if not kids then return {} end
local out = {}
for kid in string.gmatch(kids, '[^,]+') do
  local ready = true
  local parents = redis.call('HGET', KEYS[1], 'parents:' .. kid) or ''
  for p in string.gmatch(parents, '[^,]+') do
    if redis.call('HEXISTS', KEYS[1], 'done:' .. p) == 0 then ready = false break end
  end
  if ready and redis.call('HEXISTS', KEYS[1], 'cancelled:' .. kid) == 0 then
    local m = redis.call('HGET', KEYS[1], 'job:' .. kid)
    if m then table.insert(out, kid) table.insert(out, m) end
  end
end
return out
`)

// Released is a child ready to publish.
type Released struct {
	ID string
	Pending
}

// Done marks id done and returns the children now ready.
func Done(ctx context.Context, rdb redis.UniversalClient, n wire.Names, graph, id string) ([]Released, error) {
	res, err := doneScript.Run(ctx, rdb, []string{Key(n, graph)}, id, TTL.Milliseconds()).StringSlice()
	if err != nil {
		return nil, fmt.Errorf("graphs: %w", err)
	}
	out := make([]Released, 0, len(res)/2)
	for i := 0; i+1 < len(res); i += 2 {
		r := Released{ID: res[i]}
		if err := wire.Unmarshal([]byte(res[i+1]), &r.Pending); err != nil {
			return nil, fmt.Errorf("graphs: job %s: %w", res[i], err)
		}
		out = append(out, r)
	}
	return out, nil
}

var cancelScript = redis.NewScript(`
local out = {}
local queue = {ARGV[1]}
local seen = {}
while #queue > 0 do
  local id = table.remove(queue)
  if not seen[id] then
    seen[id] = true
    if id ~= ARGV[1] then
      redis.call('HSET', KEYS[1], 'cancelled:' .. id, '1')
      table.insert(out, id)
    end
    local kids = redis.call('HGET', KEYS[1], 'children:' .. id)
    if kids then
      for kid in string.gmatch(kids, '[^,]+') do table.insert(queue, kid) end
    end
  end
end
return out
`)

// CancelDescendants marks every descendant of id cancelled and returns them.
func CancelDescendants(ctx context.Context, rdb redis.UniversalClient, n wire.Names, graph, id string) ([]string, error) {
	res, err := cancelScript.Run(ctx, rdb, []string{Key(n, graph)}, id).StringSlice()
	if err != nil {
		return nil, fmt.Errorf("graphs: %w", err)
	}
	return res, nil
}

// cancelPendingScript marks a waiting job cancelled, so that no parent
// releases it, and tells whether its parents were all done already (it
// was released, or is being released now).
var cancelPendingScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
redis.call('HSET', KEYS[1], 'cancelled:' .. ARGV[1], '1')
local parents = redis.call('HGET', KEYS[1], 'parents:' .. ARGV[1]) or ''
for p in string.gmatch(parents, '[^,]+') do
  if redis.call('HEXISTS', KEYS[1], 'done:' .. p) == 0 then return 0 end
end
return 1
`)

// CancelPending marks a job that waits for its parents cancelled: no
// parent releases it after this. released reports that its parents were
// all done before (a worker released it, or is releasing it: its message
// may be in the jobs stream).
func CancelPending(ctx context.Context, rdb redis.UniversalClient, n wire.Names, graph, id string) (released bool, err error) {
	r, err := cancelPendingScript.Run(ctx, rdb, []string{Key(n, graph)}, id).Int()
	if err != nil {
		return false, fmt.Errorf("graphs: %w", err)
	}
	return r == 1, nil
}
