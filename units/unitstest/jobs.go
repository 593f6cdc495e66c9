package unitstest

import (
	"context"
	"fmt"
	"reflect"
	"slices"
	"sync"
	"time"

	"github.com/connector-go/connector/internal/envelope"
	"github.com/connector-go/connector/internal/wire"
	"github.com/connector-go/connector/job"
	"github.com/connector-go/connector/units"
)

// Enqueued is one job captured by a Trap.
type Enqueued struct {
	ID      string
	Args    job.Args
	Options job.Options

	identity string   // the identity key, given or computed
	run      job.Args // Args as a worker's handler gets them (decoded)
}

// decoded returns args as a worker's handler gets them: encoded to the
// wire format, as a dispatcher sends them, and decoded into their type
// (fields that do not travel are lost, numbers in maps of any come back as
// msgpack decodes them). An error is a dispatcher's refusal of the job:
// arguments that do not encode, or options it refuses (see refused).
func decoded(args job.Args, o job.Options) (job.Args, error) {
	raw, err := wire.Marshal(args)
	if err != nil {
		return nil, fmt.Errorf("unitstest: encode %s args: %w", args.JobName(), err)
	}
	if err := refused(args.JobName(), raw, o); err != nil {
		return nil, err
	}
	p := reflect.New(reflect.TypeOf(args))
	if err := wire.Unmarshal(raw, p.Interface()); err != nil {
		return nil, fmt.Errorf("unitstest: %w: %s: %v", job.ErrBadArgs, args.JobName(), err)
	}
	return p.Elem().Interface().(job.Args), nil
}

// refused checks the job name, with its encoded arguments raw and options
// o, as a dispatcher checks a job before it enqueues it: a valid id and
// channel, no negative max retries, timeout or retry delays, none of the
// dispatcher's own headers, an envelope within the size limit.
func refused(name string, raw []byte, o job.Options) error {
	var env wire.Envelope
	if err := envelope.Fill(&env, name, raw, &o, time.Now().UnixMilli()); err != nil {
		return fmt.Errorf("unitstest: a dispatcher refuses job %s: %w", name, err)
	}
	if _, err := envelope.Encode(&env, wire.DefaultMaxEnvelope); err != nil {
		return fmt.Errorf("unitstest: a dispatcher refuses job %s: %w", name, err)
	}
	return nil
}

// Trap is a job.Enqueuer that captures jobs instead of sending them (the
// seed's trap_jobs). An enqueue whose identity key (job.WithIdentityKey,
// or computed by job.WithIdentityExact or WithIdentityFunc) or whose
// caller-chosen id (job.WithID) matches a captured job returns that job's
// id and captures nothing, as the real queue does; a chosen id enqueued
// before, even if its job ran since (Perform), is dropped too, as
// JetStream drops it within its dedup window (until Reset). A job a dispatcher
// refuses (arguments that do not encode, an invalid id or channel,
// negative max retries or retry delays, a header of the dispatcher's own)
// is refused with an error and not captured.
type Trap struct {
	mu   sync.Mutex
	seq  int
	jobs []Enqueued
	// chosen are the caller-chosen ids enqueued (until Reset): JetStream
	// drops a repeat for its dedup window, after the job ran too.
	chosen map[string]bool
}

// NewTrap returns an empty trap.
func NewTrap() *Trap { return &Trap{} }

// Enqueue implements job.Enqueuer.
func (t *Trap) Enqueue(_ context.Context, args job.Args, opts ...job.Option) (string, error) {
	if args == nil {
		return "", fmt.Errorf("unitstest: nil job args")
	}
	o := job.Apply(args, opts...)
	run, err := decoded(args, o)
	if err != nil {
		return "", err
	}
	// The dispatcher's identity: the key given, else the function's of
	// the encoded arguments (in canonical form, as the dispatcher's).
	identity := o.IdentityKey
	if identity == "" && o.IdentityFunc != nil {
		raw, err := wire.MarshalArgs(args)
		if err != nil {
			return "", fmt.Errorf("unitstest: encode %s args: %w", args.JobName(), err)
		}
		identity = o.IdentityFunc(args.JobName(), raw)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, j := range t.jobs {
		// A chosen id enqueued again is dropped by JetStream's dedup.
		if (identity != "" && j.identity == identity) || (o.ID != "" && j.ID == o.ID) {
			return j.ID, nil
		}
	}
	if o.ID != "" && t.chosen[o.ID] {
		// Its job ran (Perform): JetStream still drops the repeat.
		return o.ID, nil
	}
	if o.ID != "" {
		if t.chosen == nil {
			t.chosen = map[string]bool{}
		}
		t.chosen[o.ID] = true
	}
	t.seq++
	id := o.ID
	if id == "" {
		id = fmt.Sprintf("trap-%d", t.seq)
	}
	t.jobs = append(t.jobs, Enqueued{ID: id, Args: args, Options: o, identity: identity, run: run})
	return id, nil
}

// Jobs returns the captured jobs in enqueue order.
func (t *Trap) Jobs() []Enqueued {
	t.mu.Lock()
	defer t.mu.Unlock()
	return slices.Clone(t.jobs)
}

// Named returns the captured jobs named name.
func (t *Trap) Named(name string) []Enqueued {
	var out []Enqueued
	for _, j := range t.Jobs() {
		if j.Args.JobName() == name {
			out = append(out, j)
		}
	}
	return out
}

// Reset forgets the captured jobs, and the chosen ids enqueued (as if
// JetStream's dedup window had passed).
func (t *Trap) Reset() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.jobs = nil
	t.chosen = nil
}

// ArgsOf returns the arguments of the captured jobs of type T.
func ArgsOf[T job.Args](t *Trap) []T {
	var out []T
	for _, j := range t.Jobs() {
		if a, ok := j.Args.(T); ok {
			out = append(out, a)
		}
	}
	return out
}

// Perform runs the captured jobs with run, in order, and removes them (the
// seed's perform_enqueued_jobs). Each gets its arguments as a worker's
// handler does: as encoded when enqueued, decoded into their type. Jobs enqueued meanwhile run too. It stops at
// the first error that is not a job.NothingToDo.
func (t *Trap) Perform(ctx context.Context, run func(ctx context.Context, args job.Args) (string, error)) error {
	for {
		t.mu.Lock()
		if len(t.jobs) == 0 {
			t.mu.Unlock()
			return nil
		}
		j := t.jobs[0]
		t.jobs = t.jobs[1:]
		t.mu.Unlock()
		if _, err := run(ctx, j.run); err != nil && !units.IsNothingToDo(err) {
			return fmt.Errorf("job %s (%s): %w", j.ID, j.Args.JobName(), err)
		}
	}
}

// Result is one job run by an Inline runner.
type Result struct {
	ID     string
	Args   job.Args
	Result string
	Err    error
}

// Inline is a job.Enqueuer that runs each job synchronously when it is
// enqueued (the seed's "run jobs inline" switch): the synchronizer jobs with
// the registry, other jobs with the handlers given to Handle. Enqueue
// returns the job's error, except a job.NothingToDo which is success.
type Inline struct {
	registry *units.Registry
	env      units.Env

	mu       sync.Mutex
	seq      int
	handlers map[string]func(ctx context.Context, args job.Args) (string, error)
	results  []Result
}

// NewInline returns an inline runner for r; its Env is env with Jobs set to
// the runner itself, so follow-up jobs run inline too.
func NewInline(r *units.Registry, env units.Env) *Inline {
	in := &Inline{registry: r, handlers: map[string]func(context.Context, job.Args) (string, error){}}
	env.Jobs = in
	in.env = env
	return in
}

// Env returns the environment jobs run with (Jobs is the runner).
func (in *Inline) Env() units.Env { return in.env }

// Handle runs jobs named name with fn.
func (in *Inline) Handle(name string, fn func(ctx context.Context, args job.Args) (string, error)) {
	in.mu.Lock()
	defer in.mu.Unlock()
	in.handlers[name] = fn
}

// Run runs args now, as a worker would: with the arguments encoded to the
// wire format and decoded into their type.
func (in *Inline) Run(ctx context.Context, args job.Args) (string, error) {
	run, err := decoded(args, job.Apply(args))
	if err != nil {
		return "", err
	}
	return in.run(ctx, run)
}

func (in *Inline) run(ctx context.Context, args job.Args) (string, error) {
	in.mu.Lock()
	fn := in.handlers[args.JobName()]
	in.mu.Unlock()
	if fn != nil {
		return fn(ctx, args)
	}
	return in.registry.RunJob(ctx, in.env, args)
}

// Enqueue implements job.Enqueuer by running the job now. A job a
// dispatcher refuses (see Trap) is refused with an error, and nothing
// runs.
func (in *Inline) Enqueue(ctx context.Context, args job.Args, opts ...job.Option) (string, error) {
	if args == nil {
		return "", fmt.Errorf("unitstest: nil job args")
	}
	o := job.Apply(args, opts...)
	run, err := decoded(args, o)
	if err != nil {
		return "", err
	}
	in.mu.Lock()
	in.seq++
	id := o.ID
	if id == "" {
		id = fmt.Sprintf("inline-%d", in.seq)
	}
	in.mu.Unlock()
	res, err := in.run(ctx, run)
	in.mu.Lock()
	in.results = append(in.results, Result{ID: id, Args: args, Result: res, Err: err})
	in.mu.Unlock()
	if err != nil && !units.IsNothingToDo(err) {
		return id, err
	}
	return id, nil
}

// Results returns the jobs enqueued and run so far, in order (jobs given
// to Run are not recorded).
func (in *Inline) Results() []Result {
	in.mu.Lock()
	defer in.mu.Unlock()
	return slices.Clone(in.results)
}
