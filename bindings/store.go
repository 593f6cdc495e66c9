package bindings

import (
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Store holds bindings, locks and idempotency records in one Redis (a
// single server, a Sentinel setup or a Cluster: any redis.UniversalClient).
// It is safe for concurrent use.
type Store struct {
	rdb        redis.UniversalClient
	prefix     string // escaped
	retryDelay time.Duration
}

// Option configures a Store.
type Option func(*Store)

// WithLockRetryDelay sets the delay a job waits before running again when
// [Store.Lock] finds the resource held elsewhere (default 1s, as the seed's
// advisory_lock_or_retry). d <= 0 lets the job's retry pattern decide.
func WithLockRetryDelay(d time.Duration) Option {
	return func(s *Store) { s.retryDelay = d }
}

// New returns a Store over rdb. Every key it reads or writes starts with
// "{" + prefix + ":", so several deployments (or tests) can share a Redis.
// The Store does not own rdb: close it yourself.
func New(rdb redis.UniversalClient, prefix string, opts ...Option) *Store {
	s := &Store{rdb: rdb, prefix: escape(prefix), retryDelay: time.Second}
	for _, o := range opts {
		o(s)
	}
	return s
}

// Binder returns the binder of one backend instance and one model. It is
// cheap: it only computes key names. A binding of one (backend, model)
// never answers for another.
func (s *Store) Binder(backendID, model string) *Binder {
	tag := "{" + s.prefix + ":bind:" + escape(backendID) + ":" + escape(model) + "}"
	return &Binder{
		s:       s,
		backend: backendID,
		model:   model,
		fwd:     tag + ":e2l",
		rev:     tag + ":l2e",
		sync:    tag + ":sync",
	}
}

func (s *Store) lockKeys(resource string) (holder, fence string) {
	tag := "{" + s.prefix + ":lock:" + escape(resource) + "}"
	return tag + ":holder", tag + ":fence"
}

func (s *Store) doneKey(key string) string {
	return "{" + s.prefix + ":done:" + escape(key) + "}"
}

// escape percent-encodes the characters that structure a key ('%', ':',
// '{', '}') so that names cannot collide ("a:b"+"c" vs "a"+"b:c") or break
// the hash tag.
func escape(s string) string {
	if !strings.ContainsAny(s, "%:{}") {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) + 8)
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '%':
			b.WriteString("%25")
		case ':':
			b.WriteString("%3A")
		case '{':
			b.WriteString("%7B")
		case '}':
			b.WriteString("%7D")
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}
