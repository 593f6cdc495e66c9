package events

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/connector-go/connector/internal/telemetry"
	"github.com/connector-go/connector/internal/wire"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
)

// How a listener's partitioning is owned across the fleet.
//
// The consumers of listener L with n partitions are ev_L_<i>of<n>: a "set".
// Processes configured with different n for L create different sets, and
// two sets consuming at once would each handle every event (twice per
// listener) and break per-record order. So a process consumes its set only
// when no other set of L is live (not retired), or when its own set is the
// oldest live one. Otherwise it waits until every other live set is idle:
// no pull request waiting and nothing delivered for idleWindow (a live
// process always has a pull waiting within PullExpiry; with an event still
// unacknowledged, for idleWindow plus the set's AckWait). Then it takes
// over: it marks the other sets retired in their metadata (their processes
// watch for it and stop), and gives its own set the handover floors: per
// record bucket, the last stream sequence the other sets handled (their
// ack floors, and the Redis marks). Its set starts at the lowest floor and
// acknowledges, unhandled, the events at or below their bucket's floor: no
// event is replayed, none is skipped, and each record's order holds across
// the change.
//
// Only the JetStream consumer INFO and CREATE APIs are used, which the
// workers' least-privilege permissions allow (docs/security.md).

// Metadata keys of listener consumers.
const (
	metaListener   = "connector.listener"
	metaPartitions = "connector.partitions"
	metaRetired    = "connector.retired"
	metaFloors     = "connector.floors"
)

// Timing of the partitioning protocol. pullExpiry bounds every pull; the
// idle window must exceed it.
const (
	pullExpiry = 2 * time.Second
	idleWindow = pullExpiry + time.Second
)

// Defaults of how often a waiting listener looks again, and how often a
// consuming one checks it still owns the listener.
const (
	defaultPollInterval  = 2 * time.Second
	defaultWatchInterval = 5 * time.Second
)

// errRetired: the partition's consumer was retired by a takeover.
var errRetired = errors.New("events: consumer retired")

// errStreamReplaced: the events stream was deleted and created again since
// the runner last read it.
var errStreamReplaced = errors.New("events: events stream replaced")

// ConflictError says that the events stream holds a consumer of a
// listener's name whose filter is not the one this process would give it:
// the listener is registered elsewhere (or was) for another model or event.
// Give the new definition a new listener name, or delete the old consumers
// (an operator's right) once no process runs them.
type ConflictError struct {
	Listener string   // the listener's name
	Consumer string   // the consumer found in the stream
	Have     []string // its filter subjects
	Want     []string // the filter subjects of this process's listener
}

func (e *ConflictError) Error() string {
	return fmt.Sprintf("events: listener %s: consumer %s filters %v, this process's listener %v (another model or event under the same name)",
		e.Listener, e.Consumer, e.Have, e.Want)
}

// Unwrap makes a ConflictError match ErrListenerConflict.
func (e *ConflictError) Unwrap() error { return ErrListenerConflict }

// consumerSet is one partitioning of a listener, seen by its partition 0.
type consumerSet struct {
	n       int
	head    *jetstream.ConsumerInfo
	retired bool
}

// runner owns one listener in this process: it decides whether the process
// may consume the listener's set, and runs terms of consumption.
type runner struct {
	l  *Listeners
	li *listener
	// created is the stream's creation time, for the Redis marks; markTTL
	// how long a mark outlives its last update (0: forever). Both are read
	// again by resolve, between terms: the stream may have been replaced.
	created string
	markTTL time.Duration
	log     *zap.Logger

	cons    []jetstream.Consumer // the set, as ensured by resolve
	ready   bool                 // start found the set ready to consume
	idle    idleTracker
	waitLog time.Time
	lastErr string
}

func newRunner(l *Listeners, li *listener, created string, markTTL time.Duration) *runner {
	return &runner{l: l, li: li, created: created, markTTL: markTTL,
		log: l.log.With(zap.String("listener", li.name), zap.Int("partitions", li.partitions))}
}

// filters are the subject filters of partition i of n of the listener.
func (li *listener) filters(names wire.Names, i, n int) []string {
	if n == 1 {
		return []string{names.EventFilter(li.model, li.event, "")}
	}
	var out []string
	for b := i; b < wire.EventBuckets; b += n {
		out = append(out, names.EventFilter(li.model, li.event, fmt.Sprintf("%02x", b)))
	}
	return out
}

// config is the configuration of a new partition consumer i of the
// listener's set, reading the stream from its start.
func (r *runner) config(i int) jetstream.ConsumerConfig {
	n := r.li.partitions
	return jetstream.ConsumerConfig{
		Durable:        ConsumerName(r.li.name, i, n),
		Description:    fmt.Sprintf("events listener %s, partition %d of %d", r.li.name, i, n),
		FilterSubjects: r.li.filters(r.l.names, i, n),
		DeliverPolicy:  jetstream.DeliverAllPolicy,
		AckPolicy:      jetstream.AckExplicitPolicy,
		AckWait:        r.l.ackWait,
		// One event at a time per partition, fleet-wide: per-record order.
		MaxAckPending: 1,
		// Dead-lettering is ours: the server must not silently stop
		// delivering an event we have not dead-lettered yet.
		MaxDeliver: -1,
		Metadata: map[string]string{
			metaListener:   r.li.name,
			metaPartitions: strconv.Itoa(n),
		},
	}
}

// start resolves the listener once, at Run: a conflicting definition or a
// consumer that cannot be created is an error; having to wait is not.
func (r *runner) start(ctx context.Context) error {
	ok, err := r.resolve(ctx)
	r.ready = ok
	return err
}

// run consumes the listener whenever this process may, until ctx ends.
func (r *runner) run(ctx, hctx context.Context, g *gate) {
	for ctx.Err() == nil {
		ok, err := r.ready, error(nil)
		if !r.ready {
			ok, err = r.resolve(ctx)
		}
		r.ready = false
		if err != nil {
			// The set may be ours but not ready (ensureLive failed): do
			// not consume it as it is (r.cons is stale, or nil when it was
			// never ensured); look again.
			ok = false
			if ctx.Err() == nil {
				r.logError(err)
			}
		}
		if ok {
			r.term(ctx, hctx, g)
			continue
		}
		select {
		case <-ctx.Done():
		case <-time.After(r.l.pollInterval):
		}
	}
}

// logError logs err, once per distinct error and minute.
func (r *runner) logError(err error) {
	if msg := err.Error(); msg != r.lastErr || time.Since(r.waitLog) > time.Minute {
		r.lastErr, r.waitLog = msg, time.Now()
		r.log.Error("events: listener cannot run", telemetry.ErrField(err))
	}
}

// term consumes the set until ctx ends or the set stops being this
// process's to consume (retired by a takeover, or beaten by an older live
// set); then the runner resolves again.
func (r *runner) term(ctx, hctx context.Context, g *gate) {
	tctx, endTerm := context.WithCancel(ctx)
	defer endTerm()
	n := r.li.partitions
	parts := make([]*partition, n)
	for i := range parts {
		p := &partition{l: r.l, li: r.li, r: r, index: i,
			consum: ConsumerName(r.li.name, i, n),
			dest:   r.l.names.EventsStream(),
		}
		p.seqKey, p.markTTL, p.created = r.markKey(p.consum), r.markTTL, r.created
		p.spans = telemetry.NewConsumerSpans(r.l.tracer, r.l.link, p.dest, p.consum)
		p.use(r.cons[i])
		parts[i] = p
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		var wg sync.WaitGroup
		for _, p := range parts {
			wg.Add(1)
			go func() {
				defer wg.Done()
				p.supervise(tctx, hctx, g, endTerm)
			}()
		}
		wg.Wait()
	}()
	r.log.Info("events: consuming")
	t := time.NewTicker(r.l.watchInterval)
	defer t.Stop()
	for {
		select {
		case <-done:
			return
		case <-t.C:
			if lost, why := r.lost(tctx); lost {
				r.log.Warn("events: listener taken over by another partitioning; this process stops consuming it", zap.String("why", why))
				endTerm()
			}
		}
	}
}

// lost reports whether the set is no longer this process's to consume.
func (r *runner) lost(ctx context.Context) (bool, string) {
	sets, err := r.discover(ctx)
	if err != nil {
		return false, "" // look again later
	}
	ours := sets[r.li.partitions]
	switch {
	case ours == nil:
		return false, "" // partition 0 deleted: its supervisor creates it again
	case ours.retired:
		return true, ours.head.Config.Metadata[metaRetired]
	case !beatsAll(ours, rivals(sets, r.li.partitions)):
		return true, "an older live partitioning exists"
	}
	return false, ""
}

// use makes c the partition's consumer and loads its floors.
func (p *partition) use(c jetstream.Consumer) {
	p.cons = c
	p.last = c.CachedInfo().Config
	floors := parseFloors(p.last.Metadata[metaFloors])
	p.floors.Store(&floors)
}

// resolve decides whether this process may consume the listener's set now;
// when it may, the set exists, up to date, in r.cons.
func (r *runner) resolve(ctx context.Context) (bool, error) {
	if err := r.refresh(ctx); err != nil {
		return false, err
	}
	sets, err := r.discover(ctx)
	if err != nil {
		return false, err
	}
	if len(sets) == 0 {
		// A new listener: its consumers read the stream from the start.
		if err := r.ensure(ctx, nil, nil); err != nil {
			return false, err
		}
		if sets, err = r.discover(ctx); err != nil {
			return false, err
		}
	}
	n := r.li.partitions
	if ours := sets[n]; ours != nil && !ours.retired && beatsAll(ours, rivals(sets, n)) {
		r.idle.reset()
		return true, r.ensureLive(ctx, sets)
	}
	// Another partitioning is (or was) in charge.
	if live := rivals(sets, n); len(live) > 0 {
		idle, err := r.idle.check(ctx, r, live, time.Now())
		if err != nil || !idle {
			if err == nil && time.Since(r.waitLog) > time.Minute {
				r.waitLog = time.Now()
				r.log.Warn("events: the listener's consumers run with another partition count elsewhere; waiting until no process runs them to take over",
					zap.Ints("running", setSizes(live)))
			}
			return false, err
		}
	}
	if err := r.takeOver(ctx, sets); err != nil {
		return false, err
	}
	r.idle.reset()
	// Look again: another process may have taken over at the same time.
	if sets, err = r.discover(ctx); err != nil {
		return false, err
	}
	if ours := sets[n]; ours != nil && !ours.retired && beatsAll(ours, rivals(sets, n)) {
		return true, r.ensureLive(ctx, sets)
	}
	return false, nil
}

// ensureLive ensures this process's set, found live (sets as discovered).
// A partition of it missing beside other, retired, sets of the listener is
// one a takeover did not get to create (it failed or its process stopped
// halfway): it is created with the handover floors, read again from those
// sets, as the takeover would have, not from the start of the stream (which
// would handle again every event the old partitioning handled).
func (r *runner) ensureLive(ctx context.Context, sets map[int]*consumerSet) error {
	n := r.li.partitions
	var fill []uint64
	if len(sets) > 1 {
		missing := false
		for i := 0; i < n && !missing; i++ {
			_, err := r.info(ctx, ConsumerName(r.li.name, i, n))
			if errors.Is(err, jetstream.ErrConsumerNotFound) {
				missing = true
			} else if err != nil {
				return fmt.Errorf("events: listener %s: %w", r.li.name, err)
			}
		}
		if missing {
			others := slices.DeleteFunc(slices.Sorted(maps.Keys(sets)), func(m int) bool { return m == n })
			var err error
			if fill, err = r.floorsOf(ctx, others); err != nil {
				return err
			}
		}
	}
	return r.ensure(ctx, nil, fill)
}

// refresh reads the events stream again: a stream deleted and created
// again (its sequences restart at 1) must not inherit the old one's marks.
func (r *runner) refresh(ctx context.Context) error {
	created, markTTL, err := r.stream(ctx)
	if err != nil {
		return err
	}
	r.created, r.markTTL = created, markTTL
	return nil
}

// stream reads the events stream's marks parameters (streamMarks).
func (r *runner) stream(ctx context.Context) (string, time.Duration, error) {
	s, err := r.l.js.Stream(ctx, r.l.names.EventsStream())
	if err != nil {
		return "", 0, fmt.Errorf("events: listener %s: %w", r.li.name, err)
	}
	created, markTTL := streamMarks(s.CachedInfo())
	return created, markTTL, nil
}

// rivals are the live sets of sets with another partition count than n.
func rivals(sets map[int]*consumerSet, n int) []*consumerSet {
	var out []*consumerSet
	for _, m := range slices.Sorted(maps.Keys(sets)) {
		if s := sets[m]; m != n && !s.retired {
			out = append(out, s)
		}
	}
	return out
}

// beatsAll: s is older than every live rival (ties: fewer partitions).
func beatsAll(s *consumerSet, rivals []*consumerSet) bool {
	for _, o := range rivals {
		if leads(o.head.Created, o.n, s.head.Created, s.n) {
			return false
		}
	}
	return true
}

// leads: of two live partitionings, the one whose head (partition 0) was
// created at a, with n partitions, is in charge before the one created at
// b with m: the older, or with fewer partitions if created together.
func leads(a time.Time, n int, b time.Time, m int) bool {
	return a.Before(b) || (a.Equal(b) && n < m)
}

func setSizes(sets []*consumerSet) []int {
	out := make([]int, len(sets))
	for i, s := range sets {
		out[i] = s.n
	}
	return out
}

// info returns the consumer's information, jetstream.ErrConsumerNotFound
// when it does not exist.
func (r *runner) info(ctx context.Context, name string) (*jetstream.ConsumerInfo, error) {
	c, err := r.l.js.Consumer(ctx, r.l.names.EventsStream(), name)
	if err != nil {
		return nil, err
	}
	return c.CachedInfo(), nil
}

// discover finds the listener's sets by their partition 0, one INFO per
// possible partition count, and checks that they filter the listener's
// model and event.
func (r *runner) discover(ctx context.Context) (map[int]*consumerSet, error) {
	sets := map[int]*consumerSet{}
	for n := 1; n <= wire.EventBuckets; n *= 2 {
		info, err := r.info(ctx, ConsumerName(r.li.name, 0, n))
		if errors.Is(err, jetstream.ErrConsumerNotFound) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("events: listener %s: %w", r.li.name, err)
		}
		have, want := filtersOf(info.Config), r.li.filters(r.l.names, 0, n)
		if !slices.Equal(have, want) {
			return nil, &ConflictError{Listener: r.li.name, Consumer: info.Name, Have: have, Want: want}
		}
		sets[n] = &consumerSet{n: n, head: info, retired: info.Config.Metadata[metaRetired] != ""}
	}
	return sets, nil
}

func filtersOf(c jetstream.ConsumerConfig) []string {
	var out []string
	if c.FilterSubject != "" {
		out = append(out, c.FilterSubject)
	}
	out = append(out, c.FilterSubjects...)
	sort.Strings(out)
	return out
}

// ensure makes the set's consumers exist with this process's settings,
// keeping their start and metadata, and loads them into r.cons. With
// floors (a takeover), every partition gets the floors of its buckets
// (never lowered) and is un-retired; a partition created then starts at
// its lowest floor. Without floors, a partition that must be created gets
// those of fill (nil: none, it reads the stream from its start).
func (r *runner) ensure(ctx context.Context, floors, fill []uint64) error {
	n := r.li.partitions
	cons := make([]jetstream.Consumer, n)
	for i := 0; i < n; i++ {
		c, err := r.ensurePartition(ctx, i, floors, fill)
		if err != nil {
			return fmt.Errorf("events: listener %s: consumer %s: %w", r.li.name, ConsumerName(r.li.name, i, n), err)
		}
		cons[i] = c
	}
	r.cons = cons
	return nil
}

func (r *runner) ensurePartition(ctx context.Context, i int, floors, fill []uint64) (jetstream.Consumer, error) {
	c, err := r.ensurePartitionOnce(ctx, i, floors, fill)
	if errors.Is(err, jetstream.ErrConsumerExists) {
		// Another process created it meanwhile, differently: update it.
		c, err = r.ensurePartitionOnce(ctx, i, floors, fill)
	}
	return c, err
}

func (r *runner) ensurePartitionOnce(ctx context.Context, i int, floors, fill []uint64) (jetstream.Consumer, error) {
	stream := r.l.names.EventsStream()
	want := r.config(i)
	c, err := r.l.js.Consumer(ctx, stream, want.Durable)
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		if floors == nil {
			floors = fill
		}
		if floors != nil {
			mine := bucketFloors(floors, i, r.li.partitions)
			if low := lowest(floors, i, r.li.partitions); low > 0 {
				want.DeliverPolicy, want.OptStartSeq = jetstream.DeliverByStartSequencePolicy, low+1
			}
			if len(mine) > 0 {
				want.Metadata[metaFloors] = formatFloors(mine)
			}
		}
		return r.l.js.CreateConsumer(ctx, stream, want)
	}
	if err != nil {
		return nil, err
	}
	have := c.CachedInfo().Config
	cfg := have // keeps the start (which cannot change) and the metadata
	if !slices.Equal(filtersOf(have), want.FilterSubjects) {
		cfg.FilterSubject, cfg.FilterSubjects = "", want.FilterSubjects
	}
	cfg.Description, cfg.AckPolicy, cfg.AckWait = want.Description, want.AckPolicy, want.AckWait
	cfg.MaxAckPending, cfg.MaxDeliver = want.MaxAckPending, want.MaxDeliver
	cfg.Metadata = userMetadata(have.Metadata)
	maps.Copy(cfg.Metadata, want.Metadata)
	if floors != nil {
		delete(cfg.Metadata, metaRetired)
		cfg.InactiveThreshold = want.InactiveThreshold
		mine := parseFloors(cfg.Metadata[metaFloors])
		for b, f := range bucketFloors(floors, i, r.li.partitions) {
			mine[b] = max(mine[b], f)
		}
		if len(mine) > 0 {
			cfg.Metadata[metaFloors] = formatFloors(mine)
		}
	}
	old := have
	old.Metadata = userMetadata(have.Metadata)
	if reflect.DeepEqual(old, cfg) {
		return c, nil
	}
	return r.l.js.UpdateConsumer(ctx, stream, cfg)
}

// recreate brings back a partition's consumer after its consumption
// stopped: the same consumer if it still exists (errRetired if it was
// retired), else a new one with the configuration it last had, unless
// another set of the listener is live (errRetired). errStreamReplaced: the
// events stream is not the one of the term any more.
func (r *runner) recreate(ctx context.Context, p *partition) (jetstream.Consumer, error) {
	// A replaced stream: the term's marks and p.last (start, floors) are
	// the old stream's, whatever consumer is found in the new one.
	if created, _, err := r.stream(ctx); err != nil {
		return nil, err
	} else if created != r.created {
		return nil, errStreamReplaced
	}
	stream := r.l.names.EventsStream()
	c, err := r.l.js.Consumer(ctx, stream, p.consum)
	if err == nil {
		if c.CachedInfo().Config.Metadata[metaRetired] != "" {
			return nil, errRetired
		}
		p.use(c)
		return c, nil
	}
	if !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return nil, err
	}
	// Deleted. Beside another live set, this one was retired and then
	// removed (an operator cleaning up after a change of partitions, this
	// process cut off meanwhile): coming back would make two live sets,
	// each handling every event. The runner resolves again instead, and
	// takes the listener back only by a takeover.
	sets, err := r.discover(ctx)
	if err != nil {
		return nil, err
	}
	if len(rivals(sets, r.li.partitions)) > 0 {
		return nil, errRetired
	}
	cfg := p.last
	cfg.Metadata = userMetadata(cfg.Metadata)
	if c, err = r.l.js.CreateConsumer(ctx, stream, cfg); err != nil {
		return nil, err
	}
	p.use(c)
	return c, nil
}

// takeOver retires the other sets of the listener and gives this process's
// set the handover floors (see the top of this file). The other live sets
// have been found idle.
func (r *runner) takeOver(ctx context.Context, sets map[int]*consumerSet) error {
	n := r.li.partitions
	others := slices.Sorted(maps.Keys(sets))
	others = slices.DeleteFunc(others, func(m int) bool { return m == n })
	stamp := fmt.Sprintf("taken over by %d partitions at %s", n, time.Now().UTC().Format(time.RFC3339))
	// Retire first, then read the floors: a straggler of an old set sees
	// its retirement and stops; what it handled before shows in its floors.
	for _, m := range others {
		// A set retired before keeps its stamp (and gets the TTL if it
		// has another, or none: retired by an older version).
		for j := 0; j < m; j++ { // partition 0 first: the one processes watch
			if err := r.retire(ctx, ConsumerName(r.li.name, j, m), stamp); err != nil {
				return err
			}
		}
	}
	floors, err := r.floorsOf(ctx, others)
	if err != nil {
		return err
	}
	r.log.Info("events: taking the listener over from its previous partitioning", zap.Ints("from", others))
	return r.ensure(ctx, floors, nil)
}

// floorsOf reads the handover floors of the listener's sets of the
// partition counts others: per record bucket, the last stream sequence
// they handled (their ack floors, the Redis marks, and their own floors).
func (r *runner) floorsOf(ctx context.Context, others []int) ([]uint64, error) {
	floors := make([]uint64, wire.EventBuckets)
	for _, m := range others {
		for j := 0; j < m; j++ {
			info, err := r.info(ctx, ConsumerName(r.li.name, j, m))
			if errors.Is(err, jetstream.ErrConsumerNotFound) {
				continue // deleted: its buckets are replayed (at least once)
			}
			if err != nil {
				return nil, fmt.Errorf("events: listener %s: %w", r.li.name, err)
			}
			f := max(info.AckFloor.Stream, r.mark(ctx, info.Name))
			own := parseFloors(info.Config.Metadata[metaFloors])
			for b := j; b < wire.EventBuckets; b += m {
				floors[b] = max(floors[b], f, own[b])
			}
		}
	}
	return floors, nil
}

// retire marks a consumer retired in its metadata.
func (r *runner) retire(ctx context.Context, name, stamp string) error {
	info, err := r.info(ctx, name)
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("events: listener %s: %w", r.li.name, err)
	}
	cfg := info.Config
	cfg.Metadata = userMetadata(cfg.Metadata)
	if cfg.Metadata[metaRetired] != "" && cfg.InactiveThreshold == r.l.retired {
		return nil
	}
	if cfg.Metadata[metaRetired] == "" {
		cfg.Metadata[metaRetired] = stamp
	}
	// Once nothing pulls from it, the server deletes it after the TTL:
	// its floors count only at this takeover (later ones start from the
	// live set's, which are at least as high), and a process of its set
	// that comes back beside the live set waits (recreate).
	cfg.InactiveThreshold = r.l.retired
	if _, err := r.l.js.UpdateConsumer(ctx, r.l.names.EventsStream(), cfg); err != nil {
		return fmt.Errorf("events: listener %s: retire %s: %w", r.li.name, name, err)
	}
	return nil
}

// markKey is the Redis key of a partition consumer's last handled sequence.
//
// It names the listener's definition (model/event, "*" for every event)
// beside the consumer: a listener redefined under its name once its old
// consumers were deleted (as ConflictError advises) is a new listener,
// and the sequences its old definition handled are not its events' (they
// would be acknowledged unhandled). The consumer name gives the partition
// count; skip_if is not part of it (a change applies to the events from
// then on).
func (r *runner) markKey(consumer string) string {
	event := r.li.event
	if event == "" {
		event = "*"
	}
	return r.l.names.RedisKey("events", "seq", consumer, r.created, r.li.model+"/"+event)
}

// mark reads a consumer's last handled sequence (0 without Redis or on
// error: the handover is then at least once).
func (r *runner) mark(ctx context.Context, consumer string) uint64 {
	if r.l.rdb == nil {
		return 0
	}
	v, err := r.l.rdb.Get(ctx, r.markKey(consumer)).Uint64()
	if err != nil && !errors.Is(err, redis.Nil) {
		r.log.Warn("events: read last handled sequence", zap.String("consumer", consumer), telemetry.ErrField(err))
	}
	return v
}

// idleTracker watches other sets for a takeover.
type idleTracker struct {
	since     time.Time
	delivered map[string]uint64
}

func (t *idleTracker) reset() { *t = idleTracker{} }

// check reports whether no process has consumed sets for long enough: no
// pull request waiting on any of their consumers, and nothing delivered,
// for idleWindow (plus the AckWait when an event is unacknowledged: its
// process may still be handling it, heartbeating).
func (t *idleTracker) check(ctx context.Context, r *runner, sets []*consumerSet, now time.Time) (bool, error) {
	snap := map[string]uint64{}
	unacked := false
	var ackWait time.Duration
	for _, s := range sets {
		for j := 0; j < s.n; j++ {
			info, err := r.info(ctx, ConsumerName(r.li.name, j, s.n))
			if errors.Is(err, jetstream.ErrConsumerNotFound) {
				continue
			}
			if err != nil {
				return false, fmt.Errorf("events: listener %s: %w", r.li.name, err)
			}
			if info.NumWaiting > 0 {
				t.reset()
				return false, nil
			}
			unacked = unacked || info.NumAckPending > 0
			ackWait = max(ackWait, info.Config.AckWait)
			snap[info.Name] = info.Delivered.Stream
		}
	}
	if t.delivered == nil || !maps.Equal(snap, t.delivered) {
		t.since, t.delivered = now, snap
		return false, nil
	}
	need := idleWindow
	if unacked {
		need += ackWait
	}
	return now.Sub(t.since) >= need, nil
}

// userMetadata copies md without the server's own "_nats." keys.
func userMetadata(md map[string]string) map[string]string {
	out := make(map[string]string, len(md))
	for k, v := range md {
		if !strings.HasPrefix(k, "_nats.") {
			out[k] = v
		}
	}
	return out
}

// bucketFloors picks the non-zero floors of partition i of n's buckets.
func bucketFloors(floors []uint64, i, n int) map[int]uint64 {
	out := map[int]uint64{}
	for b := i; b < wire.EventBuckets; b += n {
		if floors[b] > 0 {
			out[b] = floors[b]
		}
	}
	return out
}

// lowest is the lowest floor of partition i of n's buckets.
func lowest(floors []uint64, i, n int) uint64 {
	low := floors[i]
	for b := i; b < wire.EventBuckets; b += n {
		low = min(low, floors[b])
	}
	return low
}

// formatFloors writes floors as "<bucket hex>=<seq>,..." in bucket order.
func formatFloors(floors map[int]uint64) string {
	var b strings.Builder
	for i, k := range slices.Sorted(maps.Keys(floors)) {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "%02x=%d", k, floors[k])
	}
	return b.String()
}

// parseFloors reads formatFloors' output (ignoring what does not parse).
func parseFloors(s string) map[int]uint64 {
	out := map[int]uint64{}
	for _, kv := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			continue
		}
		b, err1 := strconv.ParseUint(k, 16, 8)
		f, err2 := strconv.ParseUint(v, 10, 64)
		if err1 == nil && err2 == nil {
			out[int(b)] = f
		}
	}
	return out
}

// subjectBucket is the bucket of an event subject (its last token), -1 if
// it has none.
func subjectBucket(subject string) int {
	i := strings.LastIndexByte(subject, '.')
	if i < 0 || len(subject)-i != 3 {
		return -1
	}
	b, err := strconv.ParseUint(subject[i+1:], 16, 8)
	if err != nil {
		return -1
	}
	return int(b)
}
