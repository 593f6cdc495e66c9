package dispatcher

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"

	"github.com/connector-go/connector/internal/deadletter"
	"github.com/connector-go/connector/internal/records"
	"github.com/connector-go/connector/internal/telemetry"
	"github.com/connector-go/connector/internal/wire"
	"github.com/connector-go/connector/job"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
)

func zapKey(k string) zap.Field  { return zap.String("identity_key", k) }
func zapErr(err error) zap.Field { return telemetry.ErrField(err) }

// checkID answers job.ErrNotFound for an id no job can have (job ids
// name NATS subjects and Redis keys: a wildcard such as "*" or ">" must
// not reach them).
func checkID(id string) error {
	if err := wire.ValidID(id); err != nil {
		return fmt.Errorf("dispatcher: %w: %w", job.ErrNotFound, err)
	}
	return nil
}

// Job returns the record of a job. The record of a job enqueued a moment
// ago by another process may still be on its way (records are written in
// batches, every 20 ms): for a dispatcher-made id less than a second old,
// Job waits for it until then, before it answers job.ErrNotFound (at once
// for an id no job can have).
func (d *Dispatcher) Job(ctx context.Context, id string) (job.Record, error) {
	if d.rec == nil {
		return job.Record{}, ErrNoRedis
	}
	if err := checkID(id); err != nil {
		return job.Record{}, err
	}
	if err := d.rec.Flush(ctx); err != nil {
		return job.Record{}, err
	}
	return d.rec.Get(ctx, id)
}

// DeadLetter is one entry of the dead-letter stream.
type DeadLetter struct {
	// Seq is the entry's sequence in the dead-letter stream, Subject its
	// subject there (<prefix>.dead.jobs.<id>); the embedded letter's
	// Subject is the job's own.
	Seq     uint64 `json:"seq"`
	Subject string `json:"dead_subject"`
	wire.DeadLetter
}

// stream looks up one of the deployment's streams. Its error names the
// stream: one not found usually means a prefix other than the workers',
// or streams not provisioned yet.
func (d *Dispatcher) stream(ctx context.Context, name string) (jetstream.Stream, error) {
	s, err := d.js.Stream(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", name, err)
	}
	return s, nil
}

// DeadLetters lists up to limit dead letters of jobs (0: all), oldest
// first.
func (d *Dispatcher) DeadLetters(ctx context.Context, limit int) ([]DeadLetter, error) {
	entries, err := deadletter.List(ctx, d.js, d.names.DeadStream(), deadJobFilters(d.names), limit)
	if err != nil {
		return nil, fmt.Errorf("dispatcher: %w", err)
	}
	out := make([]DeadLetter, len(entries))
	for i, e := range entries {
		out[i] = DeadLetter{Seq: e.Seq, Subject: e.Subject, DeadLetter: e.Letter}
	}
	return out, nil
}

// Requeue puts a dead job back in the jobs stream with its attempts reset.
// It returns job.ErrNotFound when the job has no dead letter, or when id
// is no job id (a subject wildcard is not taken for one).
func (d *Dispatcher) Requeue(ctx context.Context, id string) error {
	if err := checkID(id); err != nil {
		return err
	}
	s, err := d.stream(ctx, d.names.DeadStream())
	if err != nil {
		return fmt.Errorf("dispatcher: requeue: %w", err)
	}
	raw, err := s.GetLastMsgForSubject(ctx, d.names.DeadJobSubject(id))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return fmt.Errorf("%w: no dead letter for job %s", job.ErrNotFound, id)
	}
	if err != nil {
		return fmt.Errorf("dispatcher: requeue %s: %w", id, err)
	}
	if err := d.requeue(ctx, s, raw.Sequence, raw.Data); err != nil {
		return err
	}
	// An older letter of the job (a duplicate a worker left, or one a
	// requeue could not delete) goes too: requeued later, it would run the
	// job again.
	if _, err := s.GetLastMsgForSubject(ctx, d.names.DeadJobSubject(id)); err == nil {
		// (only those older than the one requeued: a newer one is of the
		// requeued job dying again)
		if err := d.dropLetters(ctx, s, id, raw.Sequence); err != nil {
			return fmt.Errorf("dispatcher: requeued %s but could not remove its older dead letters: %w", id, err)
		}
	}
	return nil
}

// dropLetters deletes the dead letters of job id below a sequence (and
// the messages they keep apart).
func (d *Dispatcher) dropLetters(ctx context.Context, s jetstream.Stream, id string, below uint64) error {
	letters, err := deadletter.List(ctx, d.js, d.names.DeadStream(), []string{d.names.DeadJobSubject(id)}, 0)
	if err != nil {
		return err
	}
	for _, l := range letters {
		if l.Seq >= below {
			break
		}
		if err := deleteLetter(ctx, s, l.Seq, &l.Letter); err != nil {
			return err
		}
	}
	return nil
}

// RequeueSeq requeues the dead letter at a dead-letter stream sequence;
// job.ErrNotFound when no message is there (requeued or cancelled
// already).
func (d *Dispatcher) RequeueSeq(ctx context.Context, seq uint64) error {
	s, err := d.stream(ctx, d.names.DeadStream())
	if err != nil {
		return fmt.Errorf("dispatcher: requeue: %w", err)
	}
	raw, err := s.GetMsg(ctx, seq)
	if isNoMessage(err) {
		// Requeued or cancelled already (or never there).
		return fmt.Errorf("%w: no dead letter at seq %d", job.ErrNotFound, seq)
	}
	if err != nil {
		return fmt.Errorf("dispatcher: requeue seq %d: %w", seq, err)
	}
	return d.requeue(ctx, s, seq, raw.Data)
}

func (d *Dispatcher) requeue(ctx context.Context, s jetstream.Stream, seq uint64, data []byte) error {
	var dl wire.DeadLetter
	if err := wire.Unmarshal(data, &dl); err != nil {
		return fmt.Errorf("dispatcher: requeue seq %d: unreadable dead letter: %w", seq, err)
	}
	if err := deadletter.Body(ctx, s, &dl); err != nil {
		return fmt.Errorf("dispatcher: requeue seq %d: %w", seq, err)
	}
	env, err := wire.DecodeEnvelope(dl.Data, 0)
	if err != nil {
		return fmt.Errorf("dispatcher: requeue seq %d: the dead message is not a valid envelope (reason %s), fix the producer: %w", seq, dl.Reason, err)
	}
	env.Attempt = 0
	if env.Template && dl.JobID != "" && wire.ValidID(dl.JobID) == nil {
		// A firing of a periodic schedule, as fired: the schedule's
		// envelope. The job that died is the firing's own (named by its
		// tick): that job is requeued, not a new firing.
		env.ID, env.Template = dl.JobID, false
		if dl.EnqueuedAt != 0 {
			env.EnqueuedAt = dl.EnqueuedAt
		}
	}
	body, err := wire.EncodeEnvelope(env)
	if err != nil {
		return err
	}
	channel := env.Channel
	if channel == "" {
		channel = job.DefaultChannel
	}
	msg := deadletter.Republish(d.subject(channel, env.Priority), &dl)
	msg.Header[wire.HeaderMsgID] = []string{env.ID + ".r" + strconv.FormatUint(seq, 10)}
	msg.Data = body
	if d.rdb != nil {
		// Requeueing is the operator's word over an earlier cancel.
		if err := d.rdb.ZRem(ctx, d.names.CancelsKey(), env.ID).Err(); err != nil {
			return fmt.Errorf("dispatcher: requeue %s: %w", env.ID, err)
		}
	}
	// The record says "enqueued" before the job is back, so that a worker
	// that runs it at once has the last word on it.
	if d.rec != nil {
		err := d.rec.Set(ctx, records.Update{ID: env.ID, State: job.StateEnqueued, Name: env.Name,
			Channel: channel, ClearError: true, ResetAttempts: true})
		if err != nil {
			d.log.Warn("requeue: record not updated", zap.String("job_id", env.ID), telemetry.ErrField(err))
		}
	}
	ack, err := d.js.PublishMsg(ctx, msg)
	if err != nil {
		if d.rec != nil {
			_ = d.rec.Set(context.WithoutCancel(ctx), records.Update{ID: env.ID, State: job.StateDead,
				Error: dl.Error, ErrorType: dl.ErrorType, Stack: dl.Stack, Attempts: dl.Attempts})
		}
		return fmt.Errorf("dispatcher: requeue %s: %w", env.ID, err)
	}
	if d.rec != nil {
		// The new message's sequence, on the producer's side (Cancel uses it).
		d.rec.Record(&records.Update{ID: env.ID, Queued: job.StateEnqueued, Name: env.Name, Channel: channel,
			Priority: env.Priority, MaxRetries: env.MaxRetries, Description: env.Description, Identity: env.Identity,
			Graph: env.Graph, EnqueuedAt: wire.FromMillis(env.EnqueuedAt), Seq: ack.Sequence})
	}
	// The job is safely back; now remove its letter. A failure here leaves
	// a letter whose re-requeue is deduplicated within the window.
	if err := deleteLetter(ctx, s, seq, &dl); err != nil {
		return fmt.Errorf("dispatcher: requeued %s but could not remove its dead letter: %w", env.ID, err)
	}
	return nil
}

// deleteLetter removes the letter at seq, and its message kept apart if
// it has one (the letter first: a message left behind alone is listed
// nowhere and ends with the stream's MaxAge).
func deleteLetter(ctx context.Context, s jetstream.Stream, seq uint64, dl *wire.DeadLetter) error {
	if err := s.DeleteMsg(ctx, seq); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
		return err
	}
	if dl.BodySeq > 0 {
		if err := s.DeleteMsg(ctx, dl.BodySeq); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
			return err
		}
	}
	return nil
}

// RequeueAll requeues every dead job that is a valid envelope and that
// every filter keeps (JobNamed: the jobs of one name, once its handler is
// fixed); it returns how many were requeued and the first error met (it
// keeps going).
func (d *Dispatcher) RequeueAll(ctx context.Context, filters ...func(DeadLetter) bool) (int, error) {
	letters, err := d.DeadLetters(ctx, 0)
	if err != nil {
		return 0, err
	}
	// A job with several letters (a duplicate a worker left, or one a
	// requeue could not delete) is requeued once, from its last letter;
	// the others go with it.
	last := map[string]int{} // job id -> index of its last letter
	for i, l := range letters {
		if l.JobID != "" {
			last[l.JobID] = i
		}
	}
	older := map[string][]DeadLetter{}
	for i, l := range letters {
		if l.JobID != "" && last[l.JobID] != i {
			older[l.JobID] = append(older[l.JobID], l)
		}
	}
	var s jetstream.Stream
	n := 0
	var first error
next:
	for i, l := range letters {
		if l.Reason == wire.ReasonMalformed || l.JobID != "" && last[l.JobID] != i {
			continue
		}
		for _, keep := range filters {
			if !keep(l) {
				continue next
			}
		}
		if err := d.RequeueSeq(ctx, l.Seq); err != nil {
			if errors.Is(err, job.ErrNotFound) {
				// Its letter went since the listing: another requeue
				// or a cancel of the job took it (and its older ones).
				continue
			}
			if first == nil {
				first = err
			}
			continue
		}
		n++
		for _, o := range older[l.JobID] {
			if s == nil {
				if s, err = d.stream(ctx, d.names.DeadStream()); err != nil {
					return n, fmt.Errorf("dispatcher: requeue: %w", err)
				}
			}
			if err := deleteLetter(ctx, s, o.Seq, &o.DeadLetter); err != nil && first == nil {
				first = fmt.Errorf("dispatcher: requeued %s but could not remove an older dead letter: %w", l.JobID, err)
			}
		}
	}
	return n, first
}

// JobNamed keeps the dead letters of jobs named one of names (RequeueAll).
func JobNamed(names ...string) func(DeadLetter) bool {
	return func(l DeadLetter) bool { return slices.Contains(names, l.JobName) }
}

// Queue is one queue of the jobs stream: the jobs of one priority band of
// a channel, or of every band of a sequential channel, as a durable
// consumer of the workers serves them.
type Queue struct {
	// Consumer is the durable consumer ("jobs~root~shop~1"); empty for jobs
	// of a channel no worker has a consumer for yet (they wait for one).
	Consumer string `json:"consumer,omitempty"`
	Channel  string `json:"channel"`
	// Band is the priority band, 0 (first) to 2; -1 for every band of a
	// sequential channel.
	Band int `json:"band"`
	// Waiting jobs are queued and not taken by a worker yet.
	Waiting uint64 `json:"waiting"`
	// Taken jobs are taken by a worker and not settled: running, waiting
	// for a channel slot, or held by a worker that died (they come back
	// when its lease runs out).
	Taken int `json:"taken"`
	// Redelivered counts the taken jobs taken more than once (a lease ran
	// out, or a worker handed them back).
	Redelivered int `json:"redelivered"`
	// Pulls is the number of pull requests workers have open on the queue:
	// 0 while jobs wait means no worker serves it now.
	Pulls int `json:"pulls"`
}

// Stats is a snapshot of the jobs queue (each figure read on its own, not
// atomically: under load they may disagree by the jobs that moved between
// two reads).
type Stats struct {
	Queues []Queue `json:"queues"`
	// Delayed jobs wait in the jobs stream for their ETA or a retry delay
	// (message schedules), periodic schedules included.
	Delayed uint64 `json:"delayed"`
	// Dead is the number of job dead letters (DeadLetters lists them).
	Dead uint64 `json:"dead"`
}

// Stats reads the state of the jobs queue from JetStream: per queue, the
// jobs waiting and taken; the delayed jobs; the dead letters. It needs no
// Redis. The figures are JetStream's, a moment behind: a consumer counts a
// job shortly after its enqueue has returned, so a job enqueued just now
// may not be waiting yet.
func (d *Dispatcher) Stats(ctx context.Context) (Stats, error) {
	var st Stats
	s, err := d.stream(ctx, d.names.JobsStream())
	if err != nil {
		return st, fmt.Errorf("dispatcher: stats: %w", err)
	}
	// Messages per jobs subject (a few per channel): the rest of the stream
	// is schedules.
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(d.names.JobsWildcard()))
	if err != nil {
		return st, fmt.Errorf("dispatcher: stats: %w", err)
	}
	queued := uint64(0)
	for _, n := range info.State.Subjects {
		queued += n
	}
	st.Delayed = info.State.Msgs - min(queued, info.State.Msgs)
	served := map[string]bool{}
	lister := s.ListConsumers(ctx)
	for ci := range lister.Info() {
		channel, band, ok := d.names.ParseJobsConsumer(ci.Name)
		if !ok {
			continue // not a workers' queue
		}
		for subj := range info.State.Subjects {
			if filterMatches(ci.Config, subj) {
				served[subj] = true
			}
		}
		st.Queues = append(st.Queues, Queue{Consumer: ci.Name, Channel: channel, Band: band, Waiting: ci.NumPending,
			Taken: ci.NumAckPending, Redelivered: ci.NumRedelivered, Pulls: ci.NumWaiting})
	}
	if err := lister.Err(); err != nil {
		return st, fmt.Errorf("dispatcher: stats: %w", err)
	}
	for subj, n := range info.State.Subjects {
		if served[subj] {
			continue
		}
		if channel, band, ok := d.names.ParseJobsSubject(subj); ok {
			st.Queues = append(st.Queues, Queue{Channel: channel, Band: band, Waiting: n})
		}
	}
	slices.SortFunc(st.Queues, func(a, b Queue) int {
		return cmp.Or(cmp.Compare(a.Channel, b.Channel), cmp.Compare(a.Band, b.Band), cmp.Compare(a.Consumer, b.Consumer))
	})
	if st.Dead, err = d.deadCount(ctx); err != nil {
		return st, err
	}
	return st, nil
}

// deadCount counts the job dead letters: the pending count of a
// short-lived consumer filtered on them (the server counts, nothing is
// read).
func (d *Dispatcher) deadCount(ctx context.Context) (uint64, error) {
	n, err := deadletter.Count(ctx, d.js, d.names.DeadStream(), deadJobFilters(d.names))
	if err != nil {
		return 0, fmt.Errorf("dispatcher: stats: %w", err)
	}
	return n, nil
}

// deadJobFilters are the subjects of job dead letters (event listeners
// keep theirs under <prefix>.dead.events).
func deadJobFilters(n wire.Names) []string {
	return []string{n.DeadJobsWildcard(), n.Prefix + ".dead.malformed.>"}
}

// filterMatches reports whether a consumer's filter takes subject.
func filterMatches(cc jetstream.ConsumerConfig, subject string) bool {
	if cc.FilterSubject != "" && subjectMatches(cc.FilterSubject, subject) {
		return true
	}
	for _, f := range cc.FilterSubjects {
		if subjectMatches(f, subject) {
			return true
		}
	}
	return false
}
