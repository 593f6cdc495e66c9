package worker

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/connector-go/connector/internal/channels"
	"github.com/connector-go/connector/internal/graphs"
	"github.com/connector-go/connector/internal/records"
	"github.com/connector-go/connector/internal/telemetry"
	"github.com/connector-go/connector/internal/wire"
	"github.com/connector-go/connector/job"
	"github.com/nats-io/nats.go"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
)

// The receiving side of a worker: pullers fetch batches of jobs into the
// local scheduler. Every received message is under heartbeat at once
// (inflight), whether it runs or waits, so no job loses its lease while it
// waits in this process (nats.go#1929).
//
// Before a job is queued, it is decoded and checked against Redis in one
// round trip per group of messages that arrived together: a job cancelled
// meanwhile is dropped, and a redelivered job learns how many of its
// deliveries were hand-backs (a job this worker received and gave back
// without running it: shutdown, no channel slot, unknown name), which do
// not count as attempts.

func (w *Worker) startPullers(ctx context.Context, spec *consumerSpec) {
	for i := 0; i < w.pullersOf(spec); i++ {
		w.pullers.Add(1)
		go func() {
			defer w.pullers.Done()
			w.fetchLoop(ctx, spec, w.credits)
		}()
	}
}

// pullersOf: unlimited channels get several pullers so pulls overlap.
func (w *Worker) pullersOf(spec *consumerSpec) int {
	if spec.unlimited() {
		return w.cfg.pullers
	}
	return 1
}

// fetchLoop pulls batches of up to maxBatch jobs, as many as there are
// credits, and queues them for the runners.
func (w *Worker) fetchLoop(ctx context.Context, spec *consumerSpec, credits *credits) {
	maxBatch := 256
	if !spec.unlimited() {
		maxBatch = min(16, minCapacity(spec.cs.chain)+1)
	}
	band := spec.band
	if band < 0 {
		band = channels.BandNormal // sequential: one band, in order
	}
	ps, err := newPullSub(w.js, w.names.JobsStream(), spec.name, 2*maxBatch+64)
	if err != nil {
		w.log.Error("puller not started", telemetry.ErrField(err), zap.String("consumer", spec.name))
		return
	}
	ps.order = spec.acks
	// A request still open when the puller stops is filled until it ends
	// (a job another runner hands back at shutdown goes to the first open
	// request): the puller waits for its end (at most fetchWait) and hands
	// back at once what arrives, rather than leave it to its lease.
	var open string
	var openUntil time.Time
	defer func() {
		var back []*item
		for _, m := range ps.finish(open, openUntil) {
			back = append(back, received(ps, m, spec, band))
		}
		w.handBack(back, 0)
	}()
	backoff := 100 * time.Millisecond
	// Received groups are admitted (a Redis round trip) and queued by a
	// goroutine of their own, so that the next pull request goes out as
	// soon as a batch is in, not after it is admitted: the server always
	// has a request to fill. The puller never waits for admission (while
	// Redis is down it waits long): the messages of its open request that
	// it has not read yet are under no heartbeat. The credits bound what
	// waits for admission.
	var admitQ groups
	admitQ.init()
	admitted := make(chan struct{})
	go func() {
		defer close(admitted)
		for {
			g, ok := admitQ.pop()
			if !ok {
				return
			}
			w.queue(ctx, g, credits)
		}
	}()
	defer func() {
		admitQ.close()
		<-admitted
	}()
	// The batch adapts: an idle puller long-polls for one job and holds no
	// credit meanwhile (it takes one when the job arrives, the job already
	// under heartbeat); a busy one reserves credits and doubles its batch up
	// to maxBatch. Of a consumer's pullers, one long-polls while it is idle
	// (spec.idle); the others wait until that poll brings a job.
	want := 1
	polling := false
	defer func() {
		if polling {
			spec.idle.release()
		}
	}()
	for ctx.Err() == nil {
		if want == 1 && !polling && w.pullersOf(spec) > 1 {
			if wake, waits := spec.idle.take(); waits {
				select {
				case <-wake:
				case <-ctx.Done():
					return
				}
				continue
			}
			polling = true
		}
		// A band whose jobs wait for a slot pulls no more until they start.
		for spec.cs.limited && spec.cs.hasBlocked(spec.band) {
			select {
			case <-ctx.Done():
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
		reserved := 0
		if want > 1 {
			if !credits.take(ctx) {
				return
			}
			for reserved = 1; reserved < want && credits.tryTake(); reserved++ {
			}
		}
		n := max(reserved, 1)
		reply, err := ps.request(n, w.cfg.fetchWait)
		if err != nil {
			credits.putBack(reserved)
			if ctx.Err() != nil {
				return
			}
			w.log.Warn("pull request failed; retrying", telemetry.ErrField(err), zap.String("consumer", spec.name), zap.Duration("backoff", backoff))
			if !sleep(ctx, &backoff) {
				return
			}
			continue
		}
		// Messages are queued as they arrive, in groups of those that
		// arrived together (one Redis round trip per group). The server
		// ends the request (408) at its expiry; the deadline covers a
		// request lost on the way.
		deadline := time.Now().Add(w.cfg.fetchWait + time.Second)
		got := 0
		var perr error
		for ended := false; !ended; {
			msg, end, err := ps.next(ctx, reply, deadline, true)
			ended, perr = end, err
			if end && ctx.Err() != nil {
				open, openUntil = reply, deadline // stopped waiting; not ended
			}
			if msg == nil {
				break
			}
			group := make([]*item, 0, 16)
			for msg != nil {
				got++
				it := received(ps, msg, spec, band)
				w.inflight.add(it) // under heartbeat from now on
				if got > reserved {
					// It is here already (an idle puller's single job, or a
					// late one of an earlier request): it never waits for a
					// credit behind other pullers' reservations, so a
					// better band's job goes straight to the runners. The
					// bound is exceeded by at most one job per idle puller.
					credits.force()
				}
				group = append(group, it)
				if got >= n {
					ended = true // all it asked for: the request is over
					break
				}
				msg, end, err = ps.next(ctx, reply, deadline, false)
				if end {
					ended, perr = true, err
				}
			}
			admitQ.push(group)
		}
		credits.putBack(reserved - got)
		if polling && got > 0 {
			polling = false
			spec.idle.release() // jobs are coming: all pull
		}
		if got >= n && n > 0 {
			want = min(2*n, maxBatch)
		} else {
			want = max(1, got)
		}
		if perr != nil && ctx.Err() == nil && got == 0 {
			if spec.stop != nil && errors.Is(perr, errConsumerGone) {
				spec.gone.Store(true) // an unconfigured channel's: the sweeper makes it again
			}
			w.log.Warn("pull request ended with an error", telemetry.ErrField(perr), zap.String("consumer", spec.name))
			if !sleep(ctx, &backoff) {
				return
			}
			continue
		}
		backoff = 100 * time.Millisecond
	}
}

// idlePoll lets one of a consumer's pullers long-poll it while it is
// idle: the others wait for that poll to bring a job, so an idle consumer
// costs one pull request per fetchWait and process, not one per puller.
type idlePoll struct {
	mu   sync.Mutex
	held bool
	wake chan struct{} // closed when the poller gets a job or stops
}

// take makes the caller the poller, or (waits) returns what to wait on.
func (p *idlePoll) take() (wake <-chan struct{}, waits bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.held {
		return p.wake, true
	}
	p.held, p.wake = true, make(chan struct{})
	return nil, false
}

// release ends the caller's turn as the poller and wakes the others.
func (p *idlePoll) release() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.held {
		p.held = false
		close(p.wake)
	}
}

// groups is a puller's queue of received groups for admission: pushing
// never blocks.
type groups struct {
	mu     sync.Mutex
	q      [][]*item
	closed bool
	more   chan struct{} // a group was pushed, or closed (buffered 1)
}

func (g *groups) init() { g.more = make(chan struct{}, 1) }

func (g *groups) push(its []*item) {
	g.mu.Lock()
	g.q = append(g.q, its)
	g.mu.Unlock()
	g.signal()
}

func (g *groups) close() {
	g.mu.Lock()
	g.closed = true
	g.mu.Unlock()
	g.signal()
}

func (g *groups) signal() {
	select {
	case g.more <- struct{}{}:
	default:
	}
}

// pop waits for the next group; false once closed and empty.
func (g *groups) pop() ([]*item, bool) {
	for {
		g.mu.Lock()
		if len(g.q) > 0 {
			its := g.q[0]
			g.q[0] = nil
			g.q = g.q[1:]
			g.mu.Unlock()
			return its, true
		}
		closed := g.closed
		g.mu.Unlock()
		if closed {
			return nil, false
		}
		<-g.more
	}
}

// received makes the item of a job message a puller received.
func received(ps *pullSub, m *nats.Msg, spec *consumerSpec, band int) *item {
	it := &item{received: time.Now(), ch: spec.cs, band: band, group: spec.name, spans: spec.spans}
	if spec.cs != nil && spec.cs.limited {
		it.token = wire.NewID()
	}
	ps.wrap(m, &it.pulled)
	it.msg = &it.pulled
	return it
}

// sleep waits *backoff (false if ctx ends first) and doubles it, up to 5 s.
func sleep(ctx context.Context, backoff *time.Duration) bool {
	t := time.NewTimer(*backoff)
	defer t.Stop()
	*backoff = min(*backoff*2, 5*time.Second)
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// queue admits a group of received jobs (each holding a credit) and hands
// them to the runners; when shutting down they go back.
func (w *Worker) queue(ctx context.Context, group []*item, credits *credits) {
	if len(group) == 0 {
		return
	}
	group = w.admit(ctx, group, credits)
	for _, it := range group {
		if it.env != nil && !it.env.Template {
			it.jobID = it.env.ID
		}
		it.admitted.Store(true)
	}
	if ctx.Err() != nil {
		w.handBack(group, 0) // shutting down: straight back
		credits.give(len(group))
		return
	}
	w.sched.pushAll(group)
}

// admit decodes a group of received jobs and checks them against Redis: it
// settles the cancelled ones (they never start) and returns the others,
// with their hand-back counts. While Redis is unreachable it waits (the
// jobs stay under heartbeat): work pauses rather than run a cancelled job.
func (w *Worker) admit(ctx context.Context, group []*item, credits *credits) []*item {
	checks, redelivered := 0, 0
	for _, it := range group {
		meta, err := it.msg.Metadata()
		if err != nil {
			it.bad = err
			continue
		}
		it.meta = meta
		if err := wire.DecodeEnvelopeInto(it.msg.Data(), w.cfg.maxEnvelope, &it.envelope); err != nil {
			it.bad = fmt.Errorf("%w: %v", job.ErrBadEnvelope, err)
			continue
		}
		env := &it.envelope
		it.env = env
		if !env.Template {
			checks++
		}
		if meta.NumDelivered > 1 {
			redelivered++
		}
	}
	// A periodic firing is checked against no tombstone, but a redelivered
	// one has its hand-backs too.
	if w.cfg.rdb == nil || checks == 0 && redelivered == 0 {
		return group
	}
	ids := make([]string, 0, checks)
	for _, it := range group {
		if it.env != nil && !it.env.Template {
			ids = append(ids, it.env.ID)
		}
	}
	var scores *redis.FloatSliceCmd
	counts := make([]*redis.StringCmd, len(group))
	for backoff := 100 * time.Millisecond; ; {
		pipe := w.cfg.rdb.Pipeline()
		if len(ids) > 0 {
			scores = pipe.ZMScore(ctx, w.cancelsKey, ids...)
		}
		for i, it := range group {
			if it.env != nil && it.meta.NumDelivered > 1 {
				counts[i] = pipe.Get(ctx, w.handbackKey(it.meta.Sequence.Stream))
			}
		}
		cmds, err := pipe.Exec(ctx)
		if err != nil {
			err = pipeErr(cmds, err)
		}
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return group
		}
		w.log.Warn("jobs not admitted: Redis unreachable; waiting", telemetry.ErrField(err), zap.Duration("backoff", backoff))
		if !sleep(ctx, &backoff) {
			return group
		}
	}
	var cancelled []float64
	if scores != nil {
		cancelled = scores.Val()
	}
	out, c := group[:0], 0
	for i, it := range group {
		if cmd := counts[i]; cmd != nil {
			if n, err := strconv.Atoi(cmd.Val()); err == nil {
				it.handbacks = n
			}
		}
		if it.env == nil || it.env.Template {
			out = append(out, it)
			continue
		}
		gone := c < len(cancelled) && cancelled[c] > 0
		c++
		if !gone {
			out = append(out, it)
			continue
		}
		w.dropCancelled(it)
		credits.give(1)
	}
	return out
}

// pipeErr is the first error of a pipeline's commands that is not
// redis.Nil (a key not there: an answer), else Exec's error err unless it
// is redis.Nil. Exec answers the first command's error only: a redis.Nil
// there would hide a later command that failed (its reply lost, its value
// empty).
func pipeErr(cmds []redis.Cmder, err error) error {
	for _, cmd := range cmds {
		if e := cmd.Err(); e != nil && !errors.Is(e, redis.Nil) {
			return e
		}
	}
	if errors.Is(err, redis.Nil) {
		return nil
	}
	return err
}

// dropCancelled settles a job found cancelled before it started: it never
// runs. As Cancel does for a job it reaches first, its identity key is
// freed (a new job of that key may be enqueued) and the graph jobs that
// wait for it are cancelled too. The caller gives back its credit.
func (w *Worker) dropCancelled(it *item) {
	if it.settle() {
		_ = it.msg.Ack()
	}
	w.inflight.del(it)
	w.forgetHandbacks(it)
	if it.fate.CompareAndSwap(fateOpen, fateCancelled) {
		w.cancelled(it)
	}
}

// cancelled records the fate of a job found cancelled before it started:
// its record says so, its identity key is freed and the graph jobs that
// wait for it are cancelled. Its message may still be held (a job waiting
// for a slot or a runner, dropped when it gets there).
func (w *Worker) cancelled(it *item) {
	env := it.env
	u := envRecord(env)
	now := time.Now()
	u.State, u.EndedAt, u.Worker = job.StateCancelled, now, w.cfg.name
	if env.Identity != "" {
		w.releaseIdentity(env.Identity, env.ID)
	}
	if env.Graph != "" {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		kids, err := graphs.CancelDescendants(ctx, w.cfg.rdb, w.names, env.Graph, env.ID)
		cancel()
		if err != nil {
			w.log.Warn("graph jobs waiting for a cancelled job not cancelled", append(w.msgFields(it, 0), telemetry.ErrField(err))...)
		}
		for _, kid := range kids {
			w.record(records.Update{ID: kid, State: job.StateCancelled, EndedAt: now})
		}
	}
	// After its descendants': Cancel returns once this job's record says
	// cancelled, and theirs must say so by then.
	w.record(u)
	w.log.Info("cancelled job dropped", w.msgFields(it, 0)...)
}

// dropHeld settles a cancelled job this process held, taken out of its
// queue: its slot (if it had one) and its credit go back.
func (w *Worker) dropHeld(it *item) {
	w.dropCancelled(it)
	w.giveBack(it, w.credits)
}

// recheckAfter: a job held this long in the process before it starts (by
// busy runners, or waiting for a channel slot) is checked against the
// cancel tombstones again, every watchEvery while it waits (watchCancels)
// and once more as it starts (cancelledMeanwhile), and so is every job
// that waited for a slot. Cancel, finding the job taken by a worker, waits
// for its record: cancelled, when a check finds it first.
const (
	recheckAfter = 250 * time.Millisecond
	watchEvery   = 250 * time.Millisecond
)

// watchCancels checks the jobs this process holds and has not started
// (admitted at least recheckAfter ago) against the cancel tombstones, one
// ZMSCORE every watchEvery when there are any. A cancelled one is decided
// at once (its record says cancelled, its identity key is freed) and its
// message goes: now if it is queued for a runner, at once from its
// channel's blocked loop (woken), or from the runner that took it.
func (w *Worker) watchCancels(ctx context.Context, done chan struct{}) {
	defer close(done)
	t := time.NewTicker(watchEvery)
	defer t.Stop()
	var its []*item
	var ids []string
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			its, ids = its[:0], ids[:0]
			for _, it := range w.inflight.snapshot() {
				if !it.admitted.Load() || it.jobID == "" || it.fate.Load() != fateOpen || it.running.Load() || now.Sub(it.received) < recheckAfter {
					continue
				}
				its, ids = append(its, it), append(ids, it.jobID)
			}
			if len(ids) == 0 {
				continue
			}
			cctx, cancel := context.WithTimeout(ctx, time.Second)
			scores, err := w.cfg.rdb.ZMScore(cctx, w.cancelsKey, ids...).Result()
			cancel()
			if err != nil {
				w.log.Debug("held jobs not checked against the cancel tombstones", telemetry.ErrField(err))
				continue
			}
			for i, sc := range scores {
				if it := its[i]; sc > 0 && it.fate.CompareAndSwap(fateOpen, fateCancelled) {
					w.cancelled(it)
					if w.sched.remove(it) {
						w.dropHeld(it) // queued for a runner: goes now
					} else if it.ch != nil {
						it.ch.freed.signal() // its blocked loop drops it now
					}
				}
			}
		}
	}
}

// cancelledMeanwhile reports whether a job that waited since its admission
// (for a channel slot, or at least recheckAfter for a runner) was
// cancelled meanwhile. One ZSCORE, for such jobs only; when Redis does not
// answer, the job runs (Cancel told ErrStarted).
func (w *Worker) cancelledMeanwhile(ctx context.Context, it *item, blocked bool) bool {
	if it.fate.Load() == fateCancelled {
		return true // watchCancels found it first
	}
	if w.cfg.rdb == nil || it.jobID == "" || !blocked && time.Since(it.received) < recheckAfter {
		return false
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 250*time.Millisecond)
	defer cancel()
	_, err := w.cfg.rdb.ZScore(ctx, w.cancelsKey, it.jobID).Result()
	if err != nil && !errors.Is(err, redis.Nil) {
		w.log.Debug("cancel tombstone not checked again; the job runs", append(w.msgFields(it, 0), telemetry.ErrField(err))...)
	}
	return err == nil
}

// handBack returns jobs this worker received and did not run: the
// hand-back is counted in Redis first, so that their next delivery is not
// counted as an attempt, then each is Nak'ed (after delay, if > 0).
// Callers give back the items' credits.
func (w *Worker) handBack(its []*item, delay time.Duration) {
	if len(its) == 0 {
		return
	}
	if w.cfg.rdb != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		pipe := w.cfg.rdb.Pipeline()
		for _, it := range its {
			if it.meta == nil {
				it.meta, _ = it.msg.Metadata()
			}
			if it.meta != nil {
				k := w.handbackKey(it.meta.Sequence.Stream)
				pipe.Incr(ctx, k)
				pipe.PExpire(ctx, k, w.recordTTL())
			}
		}
		if _, err := pipe.Exec(ctx); err != nil {
			w.log.Warn("hand-backs not counted: the next delivery of these jobs counts as an attempt",
				zap.Int("jobs", len(its)), telemetry.ErrField(err))
		}
		cancel()
	}
	for _, it := range its {
		if !it.settle() {
			continue
		}
		if delay > 0 {
			_ = it.msg.NakWithDelay(delay)
		} else {
			_ = it.msg.Nak()
		}
		w.inflight.del(it)
	}
}

// forgetHandbacks deletes the hand-back count of a message that has ended.
func (w *Worker) forgetHandbacks(it *item) {
	if it.handbacks == 0 || w.cfg.rdb == nil || it.meta == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	w.cfg.rdb.Del(ctx, w.handbackKey(it.meta.Sequence.Stream))
}

func (w *Worker) handbackKey(seq uint64) string {
	return w.names.RedisKey("handback", strconv.FormatUint(seq, 10))
}
