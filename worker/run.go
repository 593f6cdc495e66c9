package worker

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/connector-go/connector/internal/deadletter"
	"github.com/connector-go/connector/internal/graphs"
	"github.com/connector-go/connector/internal/records"
	"github.com/connector-go/connector/internal/telemetry"
	"github.com/connector-go/connector/internal/wire"
	"github.com/connector-go/connector/job"
	"github.com/connector-go/connector/worker/internal/outcome"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"
)

// runItem runs one job, first taking its channel slot when its channel
// chain is limited; without a free slot the job waits in its channel's
// blocked list (keeping its credit and its lease).
func (w *Worker) runItem(ctx context.Context, it *item, credits *credits) {
	if ctx.Err() != nil {
		// Shutting down: a job not started yet goes straight back.
		w.handBack([]*item{it}, 0)
		_ = w.releaseSlot(it)
		credits.give(1)
		return
	}
	// A job with its slot already comes from its channel's blocked list.
	wasBlocked := it.slotHeld.Load()
	if it.ch.limited && !wasBlocked && it.fate.Load() != fateCancelled {
		seq := seqOf(it)
		ok, _, err := w.slots.acquire(ctx, it.ch, it.band, it.token, seq, it.ch.freshPlace(it.band, seq))
		if err != nil || !ok {
			if err != nil && ctx.Err() == nil { // not the shutdown's interruption
				w.log.Warn("channel slot not acquired; waiting", zap.String(fieldChannel, it.ch.ch.Name), telemetry.ErrField(err))
			}
			w.block(ctx, it)
			return
		}
		it.slotHeld.Store(true)
	}
	if !w.cancelledMeanwhile(ctx, it, wasBlocked) && it.fate.CompareAndSwap(fateOpen, fateStarted) {
		w.runStarted(it, credits)
		return
	}
	w.dropCancelled(it)
	w.giveBack(it, credits)
}

// runStarted processes a started job and gives back what it held, also
// when its handler ends the goroutine (runtime.Goexit).
func (w *Worker) runStarted(it *item, credits *credits) {
	w.running.Add(1)
	defer w.giveBack(it, credits)
	defer w.running.Add(-1)
	w.process(it)
}

// giveBack returns what a job that ended held: its channel slot, if it
// had one (announced to the waiting jobs), and its credit.
func (w *Worker) giveBack(it *item, credits *credits) {
	if it.slotHeld.Load() {
		if err := w.releaseSlot(it); err != nil {
			w.log.Warn("channel slot not released; it expires with its lease", telemetry.ErrField(err))
		}
		w.wakeFor(it.ch.capped)
	}
	credits.give(1)
}

// heartbeats sends InProgress for jobs held longer than a sixth of the
// lease, every third of it, so held jobs keep it and dead workers lose it
// within AckWait; it has the channel slots of running jobs renewed too.
func (w *Worker) heartbeats(ctx context.Context, done chan struct{}) {
	defer close(done)
	// The slot renewals (Redis) go to a goroutine of their own: a Redis
	// slow to answer, or out of reach (a read timeout, retried), must not
	// hold up the heartbeats (NATS), or every job of the process would
	// lose its lease meanwhile. The latest list of leases waits for it.
	leases := make(chan []*item, 1)
	renewed := make(chan struct{})
	go func() {
		defer close(renewed)
		w.renewLeases(ctx, leases)
	}()
	defer func() { <-renewed }()
	every := w.cfg.ackWait / 3
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			var leased []*item
			for _, it := range w.inflight.snapshot() {
				if now.Sub(it.received) >= every/2 && !it.settled.Load() {
					if err := it.msg.InProgress(); err != nil {
						w.log.Debug("heartbeat failed", telemetry.ErrField(err))
					}
				}
				if it.slotHeld.Load() {
					leased = append(leased, it)
				}
			}
			if w.slots != nil && len(leased) > 0 {
				select { // a list not taken yet is stale: this one replaces it
				case <-leases:
				default:
				}
				leases <- leased
			}
		}
	}
}

// renewLeases renews the channel slot leases of the lists it receives,
// until ctx ends.
func (w *Worker) renewLeases(ctx context.Context, leases <-chan []*item) {
	for {
		select {
		case <-ctx.Done():
			return
		case leased := <-leases:
			lost, err := w.slots.renew(ctx, leased)
			if err != nil {
				w.log.Warn("channel slot leases not renewed", telemetry.ErrField(err))
			}
			if lost > 0 {
				w.log.Warn("channel slot leases had expired (Redis unreachable for longer than the lease): taken again; "+
					"the channels may run over their capacity until these jobs end", zap.Int("leases", lost))
			}
		}
	}
}

// startedRecords writes the "started" record of the jobs that have run for
// at least one tick and have none yet; jobs done sooner get their outcome's
// record only.
func (w *Worker) startedRecords(ctx context.Context, done chan struct{}) {
	defer close(done)
	const tick = 25 * time.Millisecond
	t := time.NewTicker(tick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			for _, it := range w.inflight.snapshot() {
				if !it.running.Load() || now.Sub(it.received) < tick {
					continue // queued, or just received
				}
				it.runMu.Lock()
				if it.run != nil && !it.startedLogged {
					it.startedLogged = true
					u := w.base(it.run, it.received)
					u.State = job.StateStarted
					w.record(u)
				}
				it.runMu.Unlock()
			}
		}
	}
}

// process runs one admitted job and settles its message.
func (w *Worker) process(it *item) {
	defer w.inflight.del(it)
	msg, meta, env := it.msg, it.meta, it.env
	if meta == nil {
		w.log.Error("message without JetStream metadata; terminating it", telemetry.ErrField(it.bad))
		if it.settle() {
			_ = msg.Term()
		}
		return
	}
	if env == nil {
		w.dead(it, 0, wire.ReasonMalformed, it.bad, "", time.Time{})
		return
	}
	if env.Template {
		// A firing of a periodic schedule: a new job of its own, named by
		// its tick, so that a tick is never run twice.
		tick := strconv.FormatUint(meta.Sequence.Stream, 10)
		if next, err := time.Parse(time.RFC3339Nano, msg.Headers().Get("Nats-Schedule-Next")); err == nil {
			tick = "t" + strconv.FormatInt(next.Unix(), 10)
		}
		env.ID = env.ID + "-" + tick
		env.Template = false
		env.EnqueuedAt = meta.Timestamp.UnixMilli()
		if w.cfg.rdb != nil && meta.NumDelivered == 1 && !w.claimTick(env.ID) {
			if it.settle() {
				_ = msg.Ack()
			}
			w.log.Warn("periodic tick fired twice; second one dropped", w.msgFields(it, 0)...)
			return
		}
	}
	// Deliveries count as attempts, but for the hand-backs (jobs received
	// and given back unrun) and on top of the attempts of earlier messages
	// of the job (retries are new messages).
	attempt := env.Attempt + int(meta.NumDelivered) - it.handbacks
	h := w.handlers[env.Name]
	if h == nil {
		if int(meta.NumDelivered) <= w.cfg.unknownRetries {
			w.log.Warn("unknown job name; handing it back for another worker",
				append(w.msgFields(it, 0), zap.Uint64("delivered", meta.NumDelivered))...)
			w.handBack([]*item{it}, w.cfg.unknownDelay)
			return
		}
		w.dead(it, attempt-1, wire.ReasonUnknownJob,
			fmt.Errorf("%w: %q is not registered on worker %s", job.ErrUnknownJob, env.Name, w.cfg.name), "", time.Time{})
		return
	}
	maxRetries := job.DefaultMaxRetries
	if env.MaxRetries != nil {
		maxRetries = *env.MaxRetries
	}
	channel := env.Channel
	if channel == "" {
		channel = job.DefaultChannel
	}
	if maxRetries > 0 && attempt > maxRetries {
		// Redelivered after its worker died on the last allowed attempt.
		w.dead(it, attempt-1, wire.ReasonMaxRetries,
			fmt.Errorf("%w: attempt %d of %d was lost (worker died or lease expired)", job.ErrMaxRetries, attempt-1, maxRetries), "", time.Time{})
		return
	}
	if env.Identity != "" {
		w.releaseIdentity(env.Identity, env.ID)
		// Once more when the run has settled (deferred: after finish has
		// acked, termed or nakked the message, or dead-lettered it, also
		// on a runtime.Goexit). A producer enqueueing this job again with
		// its id (after an unknown outcome) claims the key, is answered a
		// duplicate, and keeps its claim while the stream still holds
		// this message (dispatcher.settleDuplicateClaim). Released after
		// the settle, a claim made before this release is freed by it; one
		// made after it finds the message gone (a work queue drops it
		// once acked or termed) and is dropped by its producer; a nakked
		// message is pending again, and its next start frees the key.
		// So the settle is confirmed (a request the server answers once
		// it has applied it, for up to settleConfirmWait): sent without
		// an answer, it could still be queued in the server when that
		// producer reads the message back, and the claim would be kept
		// for a job already run, for the key's whole TTL.
		if it.msg == jetstream.Msg(&it.pulled) {
			it.pulled.confirm.Store(true)
		}
		defer w.releaseIdentity(env.Identity, env.ID)
	}

	// The message and the job's log context live in the item: one
	// allocation per job, not three.
	it.m = Message{
		Meta: job.Meta{
			ID: env.ID, Name: env.Name, Attempt: attempt, MaxRetries: maxRetries, Channel: channel,
			Priority: job.DefaultPriority, Description: env.Description, IdentityKey: env.Identity,
			EnqueuedAt: wire.FromMillis(env.EnqueuedAt), Timeout: time.Duration(env.TimeoutMS) * time.Millisecond,
		},
		Args: env.Args, Header: msg.Headers(), StreamSeq: meta.Sequence.Stream, Delivered: int(meta.NumDelivered),
		graph: env.Graph, argsBounded: true,
	}
	m := &it.m
	if env.Priority != nil {
		m.Priority = *env.Priority
	}
	m.RetryPattern = w.cfg.retry
	if len(env.Retry) > 0 {
		m.RetryPattern = make(job.RetryPattern, len(env.Retry))
		for k, v := range env.Retry {
			m.RetryPattern[k] = time.Duration(v) * time.Millisecond
		}
	}

	ctx := w.hardCtx
	var span trace.Span
	if w.tracer != nil {
		// Eight attributes at most (the consumer's five, the message id
		// and these two): past eight the SDK builds a hash table per span
		// when it ends, about a third more CPU per span. The channel is in
		// the consumer group's name (jobs~<channel>~<band>), the logs and
		// the metrics.
		ctx, span = it.spans.Start(ctx, env.ID, telemetry.JobCarrier(env, msg.Headers()),
			attribute.String("connector.job.name", env.Name), attribute.Int("connector.job.attempt", attempt))
		defer span.End()
	} else {
		ctx = telemetry.ExtractFrom(ctx, telemetry.JobCarrier(env, msg.Headers()))
	}
	it.jc = jobCtx{base: w.log, m: m, sc: trace.SpanContextFromContext(ctx)}
	jc := &it.jc
	ctx = context.WithValue(ctx, jobCtxKey{}, jc)

	// Time in the queue: from when the job could run (enqueued, or its ETA
	// or retry time) to now.
	var waited time.Duration
	if ready := max(env.EnqueuedAt, env.ETA); ready > 0 {
		waited = max(0, it.received.Sub(wire.FromMillis(ready)))
	}
	// Labelled by the configured channel the job runs under, not the one
	// its envelope names: that comes from whoever published it, and as a
	// label it could grow the series without bound.
	it.series = w.metrics.Job(env.Name, it.ch.ch.Name)
	it.series.Started(ctx, waited)
	if w.rec != nil {
		it.runMu.Lock()
		it.run = m
		it.runMu.Unlock()
		it.running.Store(true)
	}

	// A handler that calls runtime.Goexit (t.FailNow in a test's handler
	// does) ends this goroutine: the job is finished on the way out, as
	// a panic, and the runner is replaced (Worker.runner).
	goexit := true
	defer func() {
		if goexit {
			w.finish(ctx, it, m, "", outcome.Goexited(), jc, span)
		}
	}()
	// ctx ends with the worker's hard stop only: a timeout is the run's.
	result, herr := outcome.Run(ctx, m.Timeout, h, m)
	goexit = false
	w.finish(ctx, it, m, result, herr, jc, span)
}

// finish settles a job that ran by its outcome.
func (w *Worker) finish(ctx context.Context, it *item, m *Message, result string, herr error, jc *jobCtx, span trace.Span) {
	// From here on the outcome's record (whole) follows any "started" one.
	it.runMu.Lock()
	it.run = nil
	it.runMu.Unlock()
	msg, env, started := it.msg, it.env, it.received
	took := time.Since(started)
	v := outcome.Judge(m.Meta, result, herr)
	switch {
	case v.Kind == outcome.Done || v.Kind == outcome.NothingToDo:
		result = v.Result
		ended := telemetry.OutcomeSucceeded
		if v.Kind == outcome.NothingToDo {
			ended = telemetry.OutcomeNothingToDo
		}
		if env.Graph != "" && w.cfg.rdb != nil {
			if err := w.releaseChildren(ctx, env); err != nil && !w.retryRelease(ctx, it, env, err, jc) {
				// Not acked: the job comes back and the release repeats.
				it.series.Ended(ctx, telemetry.OutcomeHandedBack, took)
				w.handBack([]*item{it}, 5*time.Second)
				return
			}
		}
		if !it.settle() {
			// Its redelivery lives on: so does its hand-back count.
			jc.logger().Warn("job done after it was handed back at shutdown; it may run again")
		} else {
			if err := msg.Ack(); err != nil {
				jc.logger().Warn("ack failed; the job may run again", telemetry.ErrField(err))
			}
			w.forgetHandbacks(it)
		}
		it.series.Ended(ctx, ended, took)
		u := w.base(m, started)
		u.State, u.Result, u.EndedAt, u.ClearError = job.StateDone, result, time.Now(), m.Attempt > 1
		w.record(u)
		if ce := w.log.Check(zap.InfoLevel, "job done"); ce != nil {
			ce.Write(append(jc.fields(), zap.String("result", result), zap.Duration("took", took))...)
		}
		return
	case w.hardCtx.Err() != nil && (errors.Is(herr, context.Canceled) || v.Kind == outcome.Dead):
		// Shutdown grace over: hand it back, unfinished (it ran: counted).
		// A failure once its context was cancelled is the interruption's,
		// whatever error the handler made of it (a gRPC status, an error
		// formatted with %v): never a dead letter.
		if it.settle() {
			_ = msg.Nak()
		}
		jc.logger().Warn("job interrupted by shutdown; handed back", zap.Duration("took", took))
		it.series.Ended(ctx, telemetry.OutcomeInterrupted, took)
		return
	}
	if span != nil {
		telemetry.RecordError(span, herr)
	}
	if v.Kind == outcome.Retry {
		w.retry(ctx, it, m, v, jc, took)
		return
	}
	it.series.Ended(ctx, telemetry.OutcomeDead, took)
	w.dead(it, m.Attempt, v.Reason, v.Cause, v.Stack, started)
}

// retry schedules the next attempt of a job that failed with a retryable
// error: a message schedule that holds no capacity while it waits, or, in
// a sequential channel (which must wait for its head job), the same
// message again after the delay.
func (w *Worker) retry(ctx context.Context, it *item, m *Message, v outcome.Verdict, jc *jobCtx, took time.Duration) {
	herr, delay, next := v.Cause, v.Delay, m.Attempt
	if !v.Counted {
		next = m.Attempt - 1
	}
	it.series.Ended(ctx, telemetry.OutcomeRetried, took)
	u := w.base(m, it.received)
	u.State, u.Error, u.ErrorType, u.ETA, u.EndedAt = job.StateWaiting, herr.Error(), errorType(herr), time.Now().Add(delay), time.Now()
	inPlace := it.ch.ch.Sequential
	var err error
	if !inPlace {
		// The record names the schedule (Cancel tells by it whether the
		// retry fired and was taken).
		u.Seq, err = w.scheduleRetry(ctx, it, next, delay)
	}
	w.record(u)
	if !inPlace {
		switch {
		case errors.Is(err, errHandedBack):
			jc.logger().Warn("job failed after it was handed back at shutdown; its redelivery is its next attempt", telemetry.ErrField(herr))
			return
		case err != nil:
			// Could not schedule: keep the message and retry it in place.
			jc.logger().Warn("retry not scheduled; retrying in place", telemetry.ErrField(err))
			inPlace = true
		}
	}
	if inPlace {
		// The next delivery of this message is the next attempt, unless
		// this one is not to be counted.
		if !v.Counted {
			w.handBack([]*item{it}, delay)
		} else if it.settle() {
			_ = it.msg.NakWithDelay(delay)
		}
		jc.logger().Info("job failed; retrying in place", telemetry.ErrField(herr), zap.Duration("delay", delay), zap.Bool("counted", v.Counted))
		return
	}
	jc.logger().Info("job failed; retry scheduled", telemetry.ErrField(herr), zap.Duration("delay", delay), zap.Bool("counted", v.Counted))
}

// retryRelease retries the release of a done graph job's children, which
// failed with err (Redis or NATS unreachable), until it succeeds (true) or
// the shutdown grace ends or the job was handed back (false). The job stays
// leased meanwhile. Handing it back at once would make its redelivery an
// attempt when Redis, down, cannot count the hand-back: a job done on its
// last attempt would come back past its max retries and be dead-lettered
// as lost, its children never released.
func (w *Worker) retryRelease(ctx context.Context, it *item, env *wire.Envelope, err error, jc *jobCtx) bool {
	jc.logger().Warn("job done but its graph children not released; retrying", telemetry.ErrField(err))
	for delay := 100 * time.Millisecond; sleep(w.hardCtx, &delay); {
		if it.settled.Load() {
			return false
		}
		if err = w.releaseChildren(ctx, env); err == nil {
			jc.logger().Info("graph children released")
			return true
		}
	}
	return false
}

// releaseChildren marks a graph job done and publishes the children whose
// parents are now all done (deduplicated by their job ids).
func (w *Worker) releaseChildren(ctx context.Context, env *wire.Envelope) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	kids, err := graphs.Done(ctx, w.cfg.rdb, w.names, env.Graph, env.ID)
	if err != nil {
		return err
	}
	for _, k := range kids {
		m := nats.NewMsg(k.Subject)
		for h, v := range k.Header {
			m.Header[h] = v
		}
		m.Data = k.Data
		ack, err := w.js.PublishMsg(ctx, m)
		if err != nil {
			return fmt.Errorf("release %s: %w", k.ID, err)
		}
		// Recorded as the dispatcher records a job it enqueues: its
		// priority (Cancel finds the job's band by it), and waiting until
		// its ETA when its message is a schedule.
		u := records.Update{ID: k.ID, Graph: env.Graph}
		kenv, err := wire.DecodeEnvelope(k.Data, 0)
		if err == nil {
			u = envRecord(kenv)
		}
		u.Queued, u.Seq = job.StateEnqueued, ack.Sequence
		if m.Header.Get(wire.HeaderSchedule) != "" {
			u.Queued = job.StateWaiting
			if kenv != nil && kenv.ETA > 0 {
				u.ETA = wire.FromMillis(kenv.ETA)
			}
		}
		w.record(u)
	}
	return nil
}

// errHandedBack: the job's message was handed back (a handler that
// ignored its cancelled context past the shutdown grace) before the run
// could settle it; its redelivery runs it again.
var errHandedBack = errors.New("worker: job handed back before it settled")

// scheduleRetry puts the next attempt in a message schedule and acks the
// current message, so no capacity is held while waiting. A job handed
// back already (a handler that ignored its cancelled context past the
// shutdown grace) lives on in its redelivery: it gets no schedule too
// (errHandedBack). The message stays under heartbeat while the schedule
// is published.
func (w *Worker) scheduleRetry(ctx context.Context, it *item, attempt int, delay time.Duration) (seq uint64, err error) {
	if it.settled.Load() {
		return 0, errHandedBack
	}
	msg, env := it.msg, it.env
	next := *env
	next.Attempt = attempt
	at := time.Now().Add(delay)
	next.ETA = at.UnixMilli()
	data, err := wire.EncodeEnvelope(&next)
	if err != nil {
		return 0, err
	}
	out := nats.NewMsg(w.names.ScheduleSubject(env.ID))
	for k, v := range msg.Headers() {
		if wire.NATSHeader(k) {
			continue
		}
		out.Header[k] = v
	}
	out.Header[wire.HeaderSchedule] = []string{"@at " + at.UTC().Format(time.RFC3339Nano)}
	out.Header[wire.HeaderSchTarget] = []string{msg.Subject()} // same channel and band
	out.Data = data
	ack, err := w.publishSchedule(ctx, it, out)
	if err != nil {
		return 0, err
	}
	if !it.settle() {
		w.log.Warn("retry scheduled as the job was handed back at shutdown; it may run twice", w.msgFields(it, attempt)...)
		return ack.Sequence, nil
	}
	w.forgetHandbacks(it)
	if err := msg.Ack(); err != nil {
		// Scheduled: retrying in place as well would make two of it.
		w.log.Warn("retry scheduled but the message not acked; the job may run once more", append(w.msgFields(it, attempt), telemetry.ErrField(err))...)
	}
	return ack.Sequence, nil
}

// scheduleRetryFor bounds how long a retry's schedule whose publish may
// have been stored is published again (publishSchedule).
const scheduleRetryFor = 2 * time.Minute

// publishSchedule publishes a retry's schedule. A publish that timed out
// may have been stored: retrying the job in place then would run it twice
// (its redelivery, and the schedule when it fires). A job has one schedule
// subject, and a schedule replaces any earlier one on its subject, so the
// publish is repeated instead (the message under heartbeat), backing off to
// 5 s, until it is acknowledged, for scheduleRetryFor at most, or until
// the shutdown grace ends or the job is handed back (errHandedBack). An
// error that says nothing was stored (no stream answered, a refusal) is
// returned at once: the retry in place is safe.
func (w *Worker) publishSchedule(ctx context.Context, it *item, out *nats.Msg) (*jetstream.PubAck, error) {
	until := time.Now().Add(scheduleRetryFor)
	uncertain := false
	for delay := 100 * time.Millisecond; ; {
		pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		ack, err := w.js.PublishMsg(pctx, out)
		cancel()
		if err == nil {
			return ack, nil
		}
		uncertain = uncertain || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout)
		if !uncertain || time.Now().After(until) {
			return nil, err
		}
		w.log.Warn("retry schedule not acknowledged (it may be stored); publishing it again", append(w.msgFields(it, it.env.Attempt), telemetry.ErrField(err))...)
		if !sleep(w.hardCtx, &delay) {
			return nil, err
		}
		if it.settled.Load() {
			return nil, errHandedBack
		}
	}
}

// deadBody stores a job's message in the dead-letter stream on its own, for
// a letter too large to hold it (wire.DeadLetter.BodySeq): its data and
// headers as they are, but NATS's own (Nats-*: its message id, schedule
// headers), so that it is no larger than it was.
//
// Its message id is the letter's (msgID) with ".body": when the letter then
// fails to be stored and the job dies again (its redelivery), the message
// is not stored twice, the first copy named by no letter. It goes without
// the id only if the id would take it over max_payload.
func (w *Worker) deadBody(it *item, msgID string) (uint64, error) {
	key := "seq-" + strconv.FormatUint(it.meta.Sequence.Stream, 10)
	if it.env != nil {
		key = it.env.ID
	}
	out := deadletter.Republish(w.names.DeadBodySubject(key), &wire.DeadLetter{Headers: it.msg.Headers(), Data: it.msg.Data()})
	id := msgID + ".body"
	if int64(out.Size()+len(wire.HeaderMsgID)+len(id)+4) <= w.js.Conn().MaxPayload() {
		out.Header[wire.HeaderMsgID] = []string{id}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ack, err := w.js.PublishMsg(ctx, out)
	if err != nil {
		return 0, err
	}
	return ack.Sequence, nil
}

// dead copies the message to the dead-letter stream with why it died, and
// only then removes it from the jobs stream. If the copy fails the message
// stays and comes back later: nothing is dropped.
func (w *Worker) dead(it *item, attempts int, reason string, cause error, stack string, started time.Time) {
	msg, meta, env := it.msg, it.meta, it.env
	dl := wire.DeadLetter{
		V: 1, Reason: reason, Error: cause.Error(), ErrorType: errorType(cause), Stack: stack,
		Attempts: attempts, Subject: msg.Subject(), StreamSeq: meta.Sequence.Stream, DiedAt: time.Now().UnixMilli(),
		Worker: w.cfg.name, Headers: msg.Headers(), Data: msg.Data(),
	}
	subject := w.names.DeadMalformedSubject(meta.Sequence.Stream)
	msgID := "dead.seq." + strconv.FormatUint(meta.Sequence.Stream, 10)
	if env != nil {
		dl.JobID, dl.JobName, dl.Channel, dl.EnqueuedAt = env.ID, env.Name, env.Channel, env.EnqueuedAt
		subject = w.names.DeadJobSubject(env.ID)
		msgID = "dead." + env.ID + "." + strconv.FormatUint(meta.Sequence.Stream, 10)
	}
	log := w.log.With(w.msgFields(it, attempts)...)
	publish := func() error {
		data, err := wire.Marshal(&dl)
		if err != nil {
			return err
		}
		out := nats.NewMsg(subject)
		out.Header[wire.HeaderMsgID] = []string{msgID}
		out.Header[wire.HeaderDeadWhy] = []string{reason}
		if env != nil {
			out.Header[wire.HeaderJobID] = []string{env.ID}
			out.Header[wire.HeaderJobName] = []string{env.Name}
		}
		out.Data = data
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, err = w.js.PublishMsg(ctx, out)
		return err
	}
	err := publish()
	if errors.Is(err, nats.ErrMaxPayload) {
		// The message plus why it died is over the server's max_payload:
		// the message goes on its own (it fitted as a job, it fits again),
		// and the letter names it.
		if dl.BodySeq, err = w.deadBody(it, msgID); err == nil {
			dl.Headers, dl.Data = nil, nil
			err = publish()
		}
	}
	if err != nil {
		log.Error("dead letter not stored; the job stays queued and comes back", telemetry.ErrField(err))
		// Handed back, not counted: its next delivery is this attempt
		// again and dies of the same reason. Counted, a job dead on its
		// last attempt would come back past its max retries and read as
		// lost ("max_retries", its own error gone).
		if !it.settled.Load() {
			w.handBack([]*item{it}, 5*time.Second)
		}
		return
	}
	if !it.settle() {
		log.Warn("dead-lettered after it was handed back at shutdown; a duplicate letter may follow")
	} else {
		if err := msg.TermWithReason(reason); err != nil {
			log.Warn("term failed after dead-lettering; a duplicate letter may follow", telemetry.ErrField(err))
		}
		w.forgetHandbacks(it)
	}
	if env != nil {
		if env.Identity != "" && started.IsZero() {
			// Never started: this is its release. A run's is done as the
			// run settles (process).
			w.releaseIdentity(env.Identity, env.ID)
		}
		u := envRecord(env)
		u.State, u.Attempts, u.Error, u.ErrorType, u.Stack = job.StateDead, attempts, cause.Error(), errorType(cause), stack
		u.StartedAt, u.EndedAt, u.Worker = started, time.Now(), w.cfg.name
		w.record(u)
		if started.IsZero() { // never ran: Started did not count it
			// A name no handler has is the publisher's word: as a label
			// it would grow the series without bound.
			name := env.Name
			if w.handlers[name] == nil {
				name = ""
			}
			w.metrics.JobRejected(context.Background(), name, it.ch.ch.Name, telemetry.OutcomeDead)
		}
	} else {
		w.metrics.JobRejected(context.Background(), "", "", telemetry.OutcomeDead)
	}
	log.Error("job dead-lettered", zap.String("reason", reason), telemetry.ErrField(cause))
}

// base is what every record update of a run carries, so that any single
// write holds the whole picture.
func (w *Worker) base(m *Message, started time.Time) records.Update {
	// Priority and MaxRetries point into m, which outlives the flush.
	return records.Update{ID: m.ID, Name: m.Name, Channel: m.Channel, Priority: &m.Priority, Attempts: m.Attempt,
		MaxRetries: &m.MaxRetries, Description: m.Description, Worker: w.cfg.name, StartedAt: started,
		EnqueuedAt: m.EnqueuedAt, Identity: m.IdentityKey, Graph: m.graph}
}

// envRecord is the workers' side of a record from what the envelope says
// (every update carries its whole side).
func envRecord(env *wire.Envelope) records.Update {
	channel := env.Channel
	if channel == "" {
		channel = job.DefaultChannel
	}
	return records.Update{ID: env.ID, Name: env.Name, Channel: channel, Priority: env.Priority, MaxRetries: env.MaxRetries,
		Description: env.Description, Identity: env.Identity, Graph: env.Graph, Attempts: env.Attempt,
		EnqueuedAt: wire.FromMillis(env.EnqueuedAt)}
}

func (w *Worker) record(u records.Update) {
	if w.rec != nil {
		w.rec.Record(&u)
	}
}

func (w *Worker) recordTTL() time.Duration {
	if w.cfg.recordTTL > 0 {
		return w.cfg.recordTTL
	}
	return records.DefaultTTL
}

// claimTick records that a periodic tick's job exists (false if it did).
func (w *Worker) claimTick(id string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ok, err := w.cfg.rdb.SetNX(ctx, w.names.RedisKey("tick", id), "1", 24*time.Hour).Result()
	return ok || err != nil // without Redis, run it rather than lose it
}

var releaseIdentityScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`)

// releaseIdentity frees a job's identity key once it starts (or dies, or
// is cancelled), and again once its run settles, so a new job with the
// same key may be enqueued. Only jobs with an identity key call it.
func (w *Worker) releaseIdentity(key, id string) {
	if w.cfg.rdb == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := releaseIdentityScript.Run(ctx, w.cfg.rdb, []string{w.names.RedisKey("identity", key)}, id).Err(); err != nil {
		w.log.Warn("identity key not released", zap.String("identity_key", key), telemetry.ErrField(err))
	}
}

// errorType names the type of the error that caused a failure, looking
// through the wrappers the runtime and fmt add.
func errorType(err error) string {
	for err != nil {
		switch e := err.(type) {
		case *job.RetryableError:
			err = e.Err
			continue
		case *outcome.PanicError:
			return "panic"
		case interface{ Unwrap() []error }:
			errs := e.Unwrap()
			if len(errs) == 0 {
				break
			}
			err = errs[len(errs)-1]
			continue
		case interface{ Unwrap() error }:
			if t := fmt.Sprintf("%T", err); t == "*fmt.wrapError" {
				err = e.Unwrap()
				continue
			}
		}
		break
	}
	return fmt.Sprintf("%T", err)
}
