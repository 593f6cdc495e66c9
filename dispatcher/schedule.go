package dispatcher

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/connector-go/connector/internal/graphs"
	"github.com/connector-go/connector/internal/records"
	"github.com/connector-go/connector/internal/wire"
	"github.com/connector-go/connector/job"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"
)

// periodicID is the id of the envelope of the periodic schedule name.
func periodicID(name string) string { return "periodic-" + name }

// Schedule registers (or updates) a periodic job under a name: spec is
// "@every 10m", "@hourly", "@daily" or a 6-field cron expression
// ("0 */15 * * * *": seconds first). The schedule lives in the jobs stream as
// a JetStream message schedule, so the server fires it once per tick for the
// whole fleet, whether zero or fifty workers run, and ticks while workers are
// down still produce their job. Each firing is a new job with id
// "periodic-<name>-t<unix time of the tick>", with the extra headers of
// opts (job.WithHeader). Calling Schedule again with the same arguments
// and options is a no-op; with others, it replaces the schedule. Safe to
// call from every worker at start-up. A name is 1-98 letters, digits, '_'
// or '-' (job.ErrInvalid otherwise), so that its firings' ids are job ids.
func (d *Dispatcher) Schedule(ctx context.Context, name, spec string, args job.Args, opts ...job.Option) error {
	if err := wire.ValidID(name); err != nil {
		return fmt.Errorf("dispatcher: %w: schedule name: %w", job.ErrInvalid, err)
	}
	id := periodicID(name)
	if len(id) > wire.MaxTemplateID {
		// Its firings' ids ("<id>-t<tick>") would be no valid job ids.
		return fmt.Errorf("dispatcher: %w: schedule name %q longer than %d bytes", job.ErrInvalid, name, wire.MaxTemplateID-len(periodicID("")))
	}
	o := job.Apply(args, opts...)
	o.ID = id
	o.ETA, o.Delay, o.IdentityKey, o.IdentityFunc = time.Time{}, 0, "", nil
	// In canonical form, as the envelope's retry pattern: the same
	// registration encodes to the same bytes (compared below).
	raw, err := wire.MarshalArgs(args)
	if err != nil {
		return fmt.Errorf("dispatcher: encode %s args: %w", args.JobName(), err)
	}
	p, err := d.prepareRaw(ctx, args.JobName(), raw, o)
	if err != nil {
		return err
	}
	defer d.endSpan(p, nil)
	p.env.Template = true
	p.env.EnqueuedAt = 0
	// Each firing starts a trace of its own (and the same registration
	// encodes the same, see below).
	p.env.Trace = nil
	data, err := wire.EncodeEnvelope(p.env)
	if err != nil {
		return err
	}
	subject := d.names.PeriodicSubject(name)
	msg := nats.NewMsg(subject)
	msg.Data = data
	// The extra headers (job.WithHeader) go on the schedule message, whose
	// headers the server copies into each firing; the schedule's own win.
	for k, v := range o.Headers {
		msg.Header[k] = []string{v}
	}
	msg.Header[wire.HeaderSchedule] = []string{spec}
	msg.Header[wire.HeaderSchTarget] = []string{d.subject(p.env.Channel, p.env.Priority)}
	msg.Header[wire.HeaderJobName] = []string{p.env.Name}

	s, err := d.stream(ctx, d.names.JobsStream())
	if err != nil {
		return fmt.Errorf("dispatcher: schedule %s: %w", name, err)
	}
	cur, err := s.GetLastMsgForSubject(ctx, subject)
	last := uint64(0)
	switch {
	case err == nil:
		if string(cur.Data) == string(data) && sameHeaders(cur.Header, msg.Header) {
			return nil // already registered as asked
		}
		// Replaced by the publish below: the server rolls a schedule's
		// subject up to its last message. A publish the server refuses
		// (a bad spec) leaves the registered schedule as it was.
		last = cur.Sequence
	case errors.Is(err, jetstream.ErrMsgNotFound):
	default:
		return fmt.Errorf("dispatcher: schedule %s: %w", name, err)
	}
	// Only one of several concurrent registrations wins (the subject must
	// be as read: expected last sequence); the others find it taken and
	// stop there.
	_, err = d.js.PublishMsg(ctx, msg, jetstream.WithExpectLastSequencePerSubject(last))
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence {
		return nil
	}
	if err != nil {
		return fmt.Errorf("dispatcher: schedule %s (%q; cron and @every need nats-server >= 2.14): %w", name, spec, err)
	}
	return nil
}

// sameHeaders reports whether a registered schedule's headers are the
// ones a registration would write: each with the same values, and no
// other but the "Nats-" headers the publish and the server add
// (Nats-Expected-Last-Subject-Sequence, Nats-Rollup).
func sameHeaders(registered, want nats.Header) bool {
	for k, v := range want {
		if !slices.Equal(registered[k], v) {
			return false
		}
	}
	for k := range registered {
		if _, ok := want[k]; !ok && !wire.NATSHeader(k) {
			return false
		}
	}
	return true
}

// Unschedule removes a periodic schedule; jobs it already fired stay
// queued. A name that is no job id (letters, digits, '_' or '-') is an
// error; a name no schedule has removes nothing and is no error.
func (d *Dispatcher) Unschedule(ctx context.Context, name string) error {
	if err := wire.ValidID(name); err != nil {
		return fmt.Errorf("dispatcher: schedule name: %w", err)
	}
	s, err := d.stream(ctx, d.names.JobsStream())
	if err != nil {
		return fmt.Errorf("dispatcher: unschedule %s: %w", name, err)
	}
	if err := s.Purge(ctx, jetstream.WithPurgeSubject(d.names.PeriodicSubject(name))); err != nil {
		return fmt.Errorf("dispatcher: unschedule %s: %w", name, err)
	}
	return nil
}

// Cancel cancels a job that has not started: a job waiting for its ETA or
// its retry delay, or one queued and not yet taken by a worker. A cancelled
// job never starts; its identity key is freed. A job a worker has taken
// but not started (it waits there for a channel slot, or behind busy
// runners) is dropped by that worker: Cancel waits for its record to say
// so (up to 3 s) and returns nil. It returns job.ErrStarted when the job
// has started: that run goes on, but the job is not retried after it; or
// when its worker did not answer in time (it still drops the job if it
// has not started it: its record then says cancelled). It returns
// job.ErrNotFound when the job is unknown, or id is no job id; a job
// another process enqueued a moment ago is found, as by Job. Cancel needs
// the job records: without WithRedis it returns ErrNoRedis.
func (d *Dispatcher) Cancel(ctx context.Context, id string) error {
	if d.rec == nil {
		return ErrNoRedis
	}
	if err := checkID(id); err != nil {
		return err
	}
	if err := d.rec.Flush(ctx); err != nil {
		return err
	}
	rec, err := d.rec.Get(ctx, id)
	if errors.Is(err, job.ErrNotFound) {
		// A job whose record is gone while it waits for its ETA (written
		// before records were kept past the ETA, or lost with Redis's
		// data): its schedule still names it.
		if found, err := d.cancelUnrecorded(ctx, id); found || err != nil {
			return err
		}
	}
	if err != nil {
		return err
	}
	switch rec.State {
	case job.StateCancelled:
		return nil
	case job.StateStarted, job.StateDone, job.StateFailed:
		return fmt.Errorf("%w: job %s is %s", job.ErrStarted, id, rec.State)
	case job.StateDead:
		// A dead job is cancelled for good (its letter goes), and so are
		// the graph children that waited for it. The tombstone too: a
		// copy of its message may be queued still (a worker's Term after
		// the letter failed, a requeue racing this), and must not run.
		if err := d.tombstone(ctx, id); err != nil {
			return err
		}
		if err := d.rec.Set(ctx, records.Update{ID: id, State: job.StateCancelled}); err != nil {
			return err
		}
		if s, err := d.stream(ctx, d.names.DeadStream()); err == nil {
			if m, err := s.GetLastMsgForSubject(ctx, d.names.DeadJobSubject(id)); err == nil {
				// Every letter of it: one left behind (a duplicate a
				// worker left) would be requeued by RequeueAll.
				if err := d.dropLetters(ctx, s, id, m.Sequence+1); err != nil {
					var dl wire.DeadLetter
					_ = wire.Unmarshal(m.Data, &dl) // unreadable: the letter goes alone
					_ = deleteLetter(ctx, s, m.Sequence, &dl)
				}
			}
		}
		return d.cancelDescendants(ctx, rec)
	}
	// The tombstone first: workers check every job they receive against it
	// before queueing it, so a schedule that fires in the meantime, or a
	// worker that fetches the job before it is deleted below, drops it.
	if err := d.tombstone(ctx, id); err != nil {
		return err
	}
	if rec.State == job.StatePending {
		// A graph job waiting for its parents: marked so that none
		// releases it. If the last one did already, a moment ago (its
		// worker's record of the release may still be on its way), the job
		// may be queued, or taken: it is cancelled as a queued job is, once
		// its record says where it is.
		released, err := graphs.CancelPending(ctx, d.rdb, d.names, rec.Graph, id)
		if err != nil {
			return fmt.Errorf("dispatcher: cancel %s: %w", id, err)
		}
		if released {
			var known bool
			if rec, known, err = d.moved(ctx, rec); known {
				return err
			}
		}
		if rec.State == job.StatePending {
			// Never released, or its release not recorded yet: the
			// tombstone drops its message if it comes.
			if err := d.rec.Set(ctx, records.Update{ID: id, State: job.StateCancelled}); err != nil {
				return err
			}
			return d.cancelDescendants(ctx, rec)
		}
	}
	s, err := d.stream(ctx, d.names.JobsStream())
	if err != nil {
		return fmt.Errorf("dispatcher: cancel %s: %w", id, err)
	}
	if rec.State == job.StateWaiting {
		// Its schedule still there, with the tombstone set: a firing from
		// now on is dropped by the worker that receives it, and the purge
		// below ends it. Gone: it fired (the server stores the job and
		// purges the schedule at once), and the job is in the jobs stream,
		// perhaps taken by a worker that admitted it before the tombstone.
		if _, err := s.GetLastMsgForSubject(ctx, d.names.ScheduleSubject(id)); err != nil {
			if !isNoMessage(err) {
				return fmt.Errorf("dispatcher: cancel %s: %w", id, err)
			}
			var known bool
			if rec, known, err = d.moved(ctx, rec); known {
				return err
			}
			if rec.State == job.StateWaiting {
				// A job retrying in place (a sequential channel's) has no
				// schedule: its message, at rec.Seq, is delivered again
				// after its delay, and dropped then. Otherwise rec.Seq is
				// the schedule's, and the job's message is above it: not
				// taken if its band's consumer has not delivered past the
				// schedule; else it may have been (a worker that has not
				// admitted it yet drops it).
				taken, err := d.firedAndDelivered(ctx, s, rec)
				if err != nil {
					return fmt.Errorf("dispatcher: cancel %s: %w", id, err)
				}
				if taken {
					return d.taken(ctx, rec, "its ETA or retry delay is over and a worker may have taken it")
				}
			}
		}
	}
	// Where the job's message is: its jobs subject (whose consumer tells
	// whether it was taken), or its schedule (a graph job released with an
	// ETA, recorded as enqueued), purged below. The record's channel and
	// priority may not name its band (a released graph job's record has no
	// priority).
	subject, scheduled := d.subject(rec.Channel, &rec.Priority), false
	if rec.State == job.StateEnqueued && rec.Seq > 0 {
		m, err := s.GetMsg(ctx, rec.Seq)
		switch {
		case err == nil && m.Subject == d.names.ScheduleSubject(id):
			scheduled = true
		case err == nil:
			if _, _, ok := d.names.ParseJobsSubject(m.Subject); ok {
				subject = m.Subject
			}
		case !isNoMessage(err):
			return fmt.Errorf("dispatcher: cancel %s: %w", id, err)
		}
	}
	// A waiting job: its schedule goes, so it never fires.
	if err := s.Purge(ctx, jetstream.WithPurgeSubject(d.names.ScheduleSubject(id))); err != nil {
		return fmt.Errorf("dispatcher: cancel %s: %w", id, err)
	}
	if rec.State == job.StateEnqueued && rec.Seq > 0 && !scheduled {
		// Taken by a worker already? The consumer delivers in stream order:
		// a sequence beyond what it delivered was never seen. A taken job's
		// message stays (its worker settles it); an untaken one goes.
		cons, err := d.consumerOf(ctx, s, subject)
		if err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
			return fmt.Errorf("dispatcher: cancel %s: %w", id, err)
		}
		if err == nil {
			info, err := cons.Info(ctx)
			if err != nil {
				return fmt.Errorf("dispatcher: cancel %s: %w", id, err)
			}
			if info.Delivered.Stream >= rec.Seq {
				return d.taken(ctx, rec, "was taken by a worker")
			}
		}
		if err := s.DeleteMsg(ctx, rec.Seq); err != nil && !isNoMessage(err) {
			return fmt.Errorf("dispatcher: cancel %s: %w", id, err)
		}
	}
	if err := d.rec.Set(ctx, records.Update{ID: id, State: job.StateCancelled}); err != nil {
		return err
	}
	if ident := d.identityOf(ctx, id); ident != "" {
		d.releaseIdentity(ctx, ident, id)
	}
	return d.cancelDescendants(ctx, rec)
}

// tombstone adds id to the cancelled jobs, and drops the tombstones older
// than cancelsKept.
func (d *Dispatcher) tombstone(ctx context.Context, id string) error {
	now := time.Now()
	pipe := d.rdb.TxPipeline()
	pipe.ZAdd(ctx, d.names.CancelsKey(), redis.Z{Score: float64(now.UnixMilli()), Member: id})
	pipe.ZRemRangeByScore(ctx, d.names.CancelsKey(), "-inf", strconv.FormatInt(now.Add(-cancelsKept).UnixMilli(), 10))
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("dispatcher: cancel %s: %w", id, err)
	}
	return nil
}

// cancelUnrecorded cancels a job without a record that waits for its ETA
// (its record expired before it): found reports that its schedule was
// there. Tombstone first, as Cancel does: a firing meanwhile is dropped.
func (d *Dispatcher) cancelUnrecorded(ctx context.Context, id string) (found bool, err error) {
	s, err := d.stream(ctx, d.names.JobsStream())
	if err != nil {
		return false, fmt.Errorf("dispatcher: cancel %s: %w", id, err)
	}
	m, err := s.GetLastMsgForSubject(ctx, d.names.ScheduleSubject(id))
	if isNoMessage(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("dispatcher: cancel %s: %w", id, err)
	}
	if err := d.tombstone(ctx, id); err != nil {
		return true, err
	}
	if err := s.Purge(ctx, jetstream.WithPurgeSubject(d.names.ScheduleSubject(id))); err != nil {
		return true, fmt.Errorf("dispatcher: cancel %s: %w", id, err)
	}
	u := records.Update{ID: id, State: job.StateCancelled}
	env, derr := wire.DecodeEnvelope(m.Data, 0)
	if derr == nil {
		u.Name, u.Channel, u.Identity, u.Graph = env.Name, env.Channel, env.Identity, env.Graph
	}
	if err := d.rec.Set(ctx, u); err != nil {
		return true, err
	}
	if derr != nil {
		return true, nil
	}
	if env.Identity != "" {
		d.releaseIdentity(ctx, env.Identity, id)
	}
	return true, d.cancelDescendants(ctx, job.Record{ID: id, Graph: env.Graph})
}

// firedAndDelivered tells, for a waiting job whose schedule is gone,
// whether its message may have been delivered to a worker: not when it is
// the message at rec.Seq, still on a jobs subject (retrying in place), nor
// when its band's consumer has not delivered past rec.Seq (its schedule's
// sequence; no consumer: nothing was delivered).
func (d *Dispatcher) firedAndDelivered(ctx context.Context, s jetstream.Stream, rec job.Record) (bool, error) {
	if rec.Seq == 0 {
		return true, nil // unknown: it may have been
	}
	m, err := s.GetMsg(ctx, rec.Seq)
	switch {
	case err == nil:
		if _, _, ok := d.names.ParseJobsSubject(m.Subject); ok {
			return false, nil
		}
	case !isNoMessage(err):
		return false, err
	}
	cons, err := d.consumerOf(ctx, s, d.subject(rec.Channel, &rec.Priority))
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return false, err
	}
	return info.Delivered.Stream >= rec.Seq, nil
}

// takenWait bounds how long Cancel waits for the record of a job a worker
// took: a worker checks the jobs it holds unstarted against the
// tombstones four times a second.
const takenWait = 3 * time.Second

// taken answers Cancel for a job a worker may hold, once the tombstone is
// set: the worker drops the job if it has not started it, and records it
// cancelled. Cancel waits for the record (up to takenWait): cancelled, it
// answers nil; anything else (started, or no answer in time), it answers
// job.ErrStarted, saying why.
func (d *Dispatcher) taken(ctx context.Context, rec job.Record, why string) error {
	rec, err := d.recordMoved(ctx, rec, takenWait)
	switch {
	case err != nil:
		return err
	case rec.State == job.StateCancelled:
		return nil
	case rec.State == job.StateEnqueued || rec.State == job.StateWaiting:
		return fmt.Errorf("%w: job %s %s (if it has not started, the worker drops it: its record will say cancelled)", job.ErrStarted, rec.ID, why)
	}
	return fmt.Errorf("%w: job %s is %s", job.ErrStarted, rec.ID, rec.State)
}

// moved waits for a job's record to leave the state it has (recordMoved);
// known reports that the record answers Cancel then: with job.ErrStarted
// for a job that started, nil for one a worker dropped (cancelled).
func (d *Dispatcher) moved(ctx context.Context, rec job.Record) (_ job.Record, known bool, err error) {
	if rec, err = d.recordMoved(ctx, rec, time.Second); err != nil {
		return rec, true, err
	}
	switch rec.State {
	case job.StateStarted, job.StateDone, job.StateFailed, job.StateDead:
		return rec, true, fmt.Errorf("%w: job %s is %s", job.ErrStarted, rec.ID, rec.State)
	case job.StateCancelled:
		return rec, true, nil
	}
	return rec, false, nil
}

// recordMoved waits (up to wait) for a job's record to leave the state it
// has (a worker records in batches, 20 ms apart): the record of a graph
// job whose last parent released it, of a job whose schedule fired and
// that a worker took, of a job a worker holds. It returns the record as it
// is then.
func (d *Dispatcher) recordMoved(ctx context.Context, rec job.Record, wait time.Duration) (job.Record, error) {
	deadline, was := time.Now().Add(wait), rec.State
	for rec.State == was && time.Now().Before(deadline) {
		t := time.NewTimer(20 * time.Millisecond)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return rec, ctx.Err()
		}
		r, err := d.rec.Get(ctx, rec.ID)
		if err != nil {
			return rec, err
		}
		rec = r
	}
	return rec, nil
}

// cancelsKept is how long a cancel tombstone is kept.
const cancelsKept = 7 * 24 * time.Hour

// isNoMessage: the message is gone already (acked, deleted, purged).
func isNoMessage(err error) bool {
	var apiErr *jetstream.APIError
	return errors.Is(err, jetstream.ErrMsgNotFound) ||
		errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeMessageNotFound || apiErr.ErrorCode == jsErrMsgDeleteFailed)
}

// jsErrMsgDeleteFailed: "message deletion unsuccessful", what a delete of
// a sequence already removed answers.
const jsErrMsgDeleteFailed = 10057

// cancelDescendants cancels the graph jobs that wait (directly or not) for
// rec's job.
func (d *Dispatcher) cancelDescendants(ctx context.Context, rec job.Record) error {
	if rec.Graph == "" {
		return nil
	}
	ids, err := graphs.CancelDescendants(ctx, d.rdb, d.names, rec.Graph, rec.ID)
	if err != nil {
		return err
	}
	for _, kid := range ids {
		if err := d.rec.Set(ctx, records.Update{ID: kid, State: job.StateCancelled}); err != nil {
			return err
		}
	}
	return nil
}

// consumerOf finds the jobs consumer whose filters cover subject.
func (d *Dispatcher) consumerOf(ctx context.Context, s jetstream.Stream, subject string) (jetstream.Consumer, error) {
	lister := s.ListConsumers(ctx)
	for info := range lister.Info() {
		if filterMatches(info.Config, subject) {
			return s.Consumer(ctx, info.Name)
		}
	}
	if err := lister.Err(); err != nil {
		return nil, err
	}
	return nil, jetstream.ErrConsumerNotFound
}

// subjectMatches reports whether a subject matches a filter with * and >.
func subjectMatches(filter, subject string) bool {
	f, s := strings.Split(filter, "."), strings.Split(subject, ".")
	for i, tok := range f {
		if tok == ">" {
			return len(s) > i
		}
		if i >= len(s) || (tok != "*" && tok != s[i]) {
			return false
		}
	}
	return len(f) == len(s)
}
