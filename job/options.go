package job

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Defaults applied when an enqueue names no value.
const (
	DefaultChannel    = "root"
	DefaultPriority   = 10
	DefaultMaxRetries = 5
)

// RetryPattern maps an attempt number to the delay before the next attempt:
// from try N on, wait D. {1: 10s, 5: 20s, 10: 30s, 15: 5m} waits 10 s after
// tries 1-4, 20 s after tries 5-9, and so on.
type RetryPattern map[int]time.Duration

// DefaultRetryPattern is used when neither the job nor the worker gives one.
var DefaultRetryPattern = RetryPattern{1: 10 * time.Second, 5: time.Minute, 10: 10 * time.Minute}

// Delay returns the wait after the given attempt (1-based).
func (p RetryPattern) Delay(attempt int) time.Duration {
	best, found := 0, false
	var d time.Duration
	for n, dd := range p {
		if n <= attempt && (!found || n > best) {
			best, d, found = n, dd, true
		}
	}
	if !found {
		// Before the first step of the pattern: use its smallest step.
		for n, dd := range p {
			if !found || n < best {
				best, d, found = n, dd, true
			}
		}
	}
	return d
}

// String renders the pattern in the syntax ParseRetryPattern reads.
func (p RetryPattern) String() string {
	keys := make([]int, 0, len(p))
	for k := range p {
		keys = append(keys, k)
	}
	sort.Ints(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%d:%s", k, p[k])
	}
	return strings.Join(parts, ",")
}

// ParseRetryPattern reads "1:10s,5:20s,10:30s,15:5m".
func ParseRetryPattern(s string) (RetryPattern, error) {
	p := RetryPattern{}
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		k, v, ok := strings.Cut(part, ":")
		if !ok {
			return nil, fmt.Errorf("retry pattern %q: want try:duration", part)
		}
		n, err := strconv.Atoi(strings.TrimSpace(k))
		if err != nil || n < 1 {
			return nil, fmt.Errorf("retry pattern %q: try must be a positive integer", part)
		}
		d, err := time.ParseDuration(strings.TrimSpace(v))
		if err != nil || d < 0 {
			return nil, fmt.Errorf("retry pattern %q: bad duration", part)
		}
		p[n] = d
	}
	if len(p) == 0 {
		return nil, fmt.Errorf("retry pattern %q is empty", s)
	}
	return p, nil
}

// Options are the enqueue options of one job. Build them with the With*
// functions; the zero value means "use the defaults".
type Options struct {
	ID           string
	Description  string
	MaxRetries   *int
	RetryPattern RetryPattern
	Channel      string
	Priority     *int
	ETA          time.Time
	Delay        time.Duration
	Timeout      time.Duration
	IdentityKey  string
	// IdentityFunc computes the identity key from the job's name and
	// encoded arguments; see IdentityExact.
	IdentityFunc func(name string, args []byte) string
	// Headers are extra NATS headers carried with the job.
	Headers map[string]string
}

// Option sets one enqueue option.
type Option func(*Options)

// ArgsWithOptions lets a job type give its own default options (applied
// before the options passed to Enqueue).
type ArgsWithOptions interface {
	Args
	JobOptions() []Option
}

// WithID sets the job id (must be unique; subject-safe characters only).
func WithID(id string) Option { return func(o *Options) { o.ID = id } }

// WithDescription sets a human description.
func WithDescription(s string) Option { return func(o *Options) { o.Description = s } }

// WithMaxRetries sets the maximum number of attempts; 0 retries forever.
func WithMaxRetries(n int) Option { return func(o *Options) { o.MaxRetries = &n } }

// WithRetryPattern sets the retry delays.
func WithRetryPattern(p RetryPattern) Option { return func(o *Options) { o.RetryPattern = p } }

// WithChannel sets the channel, e.g. "root.magento.orders".
func WithChannel(c string) Option { return func(o *Options) { o.Channel = c } }

// WithPriority sets the priority: lower runs first (default 10).
func WithPriority(p int) Option { return func(o *Options) { o.Priority = &p } }

// WithETA makes the job wait until t.
func WithETA(t time.Time) Option { return func(o *Options) { o.ETA = t } }

// WithDelay makes the job wait d from now.
func WithDelay(d time.Duration) Option { return func(o *Options) { o.Delay = d } }

// WithTimeout bounds one run of the job, in whole milliseconds (rounded
// up); d <= 0: no bound.
func WithTimeout(d time.Duration) Option { return func(o *Options) { o.Timeout = d } }

// WithIdentityKey deduplicates: while a job with this key is pending, a new
// enqueue returns the existing job's id.
func WithIdentityKey(k string) Option { return func(o *Options) { o.IdentityKey = k } }

// WithIdentityFunc computes the identity key from the job's name and its
// msgpack-encoded arguments.
func WithIdentityFunc(f func(name string, args []byte) string) Option {
	return func(o *Options) { o.IdentityFunc = f }
}

// WithIdentityExact uses IdentityExact as the identity key.
func WithIdentityExact() Option { return func(o *Options) { o.IdentityFunc = IdentityExact } }

// WithHeader adds a NATS header to the job message. The name must be
// printable ASCII without ':' or spaces, and not one of the dispatcher's
// (Nats-Msg-Id, Nats-Schedule*); the value must hold no line break.
// Enqueue refuses others with ErrInvalid before anything is sent.
func WithHeader(k, v string) Option {
	return func(o *Options) {
		if o.Headers == nil {
			o.Headers = map[string]string{}
		}
		o.Headers[k] = v
	}
}

// Apply builds Options from args' own defaults and opts.
func Apply(args Args, opts ...Option) Options {
	var o Options
	if a, ok := args.(ArgsWithOptions); ok {
		for _, f := range a.JobOptions() {
			f(&o)
		}
	}
	for _, f := range opts {
		f(&o)
	}
	return o
}
