package units

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Record is one record of a system, as field name -> value.
type Record = map[string]any

// Query selects records in Adapter.Search. Filters are equality filters on
// fields (an adapter may give some keys its own meaning, e.g. "updated_after",
// and must document it). Limit 0 means no limit; results are in a stable order
// so that Offset pages through them. A Search may answer fewer than Limit ids
// (an API's own page cap) before the end: callers page on from Offset plus
// the ids received, and an empty answer is the end.
type Query struct {
	Filters map[string]any
	Offset  int
	Limit   int
}

// Adapter is the CRUD interface towards one model of one system: the seed's
// BackendAdapter. The local side is reached through the same interface, which
// makes import (backend -> local) and export (local -> backend) symmetric.
//
// Contract (checked by the units/adaptertest conformance kit):
//   - Read, Write and Delete of an id the system does not have return an error
//     matching ErrMissing (build it with Missing).
//   - Network-ish failures (timeouts, connection refused, 5xx, rate limits)
//     return an error marked retryable with job.Retry / job.RetryAfter, so the
//     job runs again later; anything else fails the job for good.
//   - Create returns the new record's id; Read(id, nil) returns every field;
//     Read(id, fields) returns at least those fields.
type Adapter interface {
	Search(ctx context.Context, q Query) (ids []string, err error)
	Read(ctx context.Context, id string, fields []string) (Record, error)
	Create(ctx context.Context, rec Record) (id string, err error)
	Write(ctx context.Context, id string, rec Record) error
	Delete(ctx context.Context, id string) error
}

// ReturningWriter is an Adapter whose writes return the record as the
// system stored it, as most REST APIs answer a POST or a PATCH (the SQL
// RETURNING clause). Implement it when the answer comes for free.
//
// An Exporter with UpdatedAt uses it: the binding's sync date becomes the
// update stamp of the export's own write, in the backend's clock, instead
// of the time of the bind. A change someone else makes in the backend
// right after the export's write is then newer than the sync date: the
// next export imports it first instead of overwriting it, and its own
// import is not "already up to date". (With plain Write, that change is
// older than the bind's time, and taken as synced.) The sync date never
// goes back to the stamp, though, below a later one an import bound
// meanwhile; and a stamp not after the one read before the write is not
// taken (the answer lacks the stamp the system set): the time of the bind
// is then. With a stamp of coarse precision (seconds), a change made in
// the same second as the write still reads as synced.
//
// The returned record must be what a Read finds right after, with the
// fields the system sets itself. An adapter that wraps another (retries,
// rate limits) must implement ReturningWriter too, or the Exporter falls
// back to the time of the bind. The conformance kit (units/adaptertest)
// checks both methods of an adapter that implements it: CreateReturning's
// id reads back, and each returned record is a copy of the record a Read
// finds right after.
type ReturningWriter interface {
	// CreateReturning creates a record and returns its id and the record
	// as stored (every field, with those the system sets itself).
	CreateReturning(ctx context.Context, rec Record) (id string, stored Record, err error)
	// WriteReturning changes the fields of rec and returns the record as
	// stored. Errors as Write's.
	WriteReturning(ctx context.Context, id string, rec Record) (stored Record, err error)
}

// AdapterFactory builds the Adapter of a backend instance for the work's
// model, typically from w.Backend.Settings. Register it under AdapterUsage.
type AdapterFactory func(w *Work) (Adapter, error)

// ErrMissing: the record does not exist in the system (the seed's
// IDMissingInBackend). Adapters return a *MissingError, which matches it.
var ErrMissing = errors.New("units: record missing")

// MissingError says which record is missing.
type MissingError struct {
	Model, ID string
}

func (e *MissingError) Error() string {
	return fmt.Sprintf("units: record %q of %q missing", e.ID, e.Model)
}

// Is makes errors.Is(err, ErrMissing) true.
func (e *MissingError) Is(target error) bool { return target == ErrMissing }

// Missing returns the error an adapter returns for an id it does not have.
func Missing(model, id string) error { return &MissingError{Model: model, ID: id} }

// Binder links external ids of one backend instance and model to local ids,
// with the date of the last synchronization. *bindings.Binder implements it
// over Redis; unitstest has an in-memory one.
type Binder interface {
	ToInternal(ctx context.Context, externalID string) (localID string, found bool, err error)
	ToExternal(ctx context.Context, localID string) (externalID string, found bool, err error)
	Bind(ctx context.Context, externalID, localID string, syncedAt time.Time) error
	Unbind(ctx context.Context, externalID string) error
	SyncDate(ctx context.Context, externalID string) (t time.Time, found bool, err error)
}

// BinderFactory builds the binder of the work's backend instance and model.
// Register one under BinderUsage to override Env.Binders.
type BinderFactory func(w *Work) (Binder, error)

// Locker takes short exclusive locks on resources ("import/shop-1/product/42").
// A lock held elsewhere returns an error the job runtime retries without
// counting the attempt (job.RetryNoCount); synchronizers just return it.
// *bindings.Store implements it over Redis.
type Locker interface {
	Acquire(ctx context.Context, resource string, ttl time.Duration) (release func(context.Context) error, err error)
}

type originKey struct{}

// WithOrigin marks the writes made with ctx as coming from the backend
// instance backendID. Importers write local records with it, and a local
// system puts OriginFrom(ctx) into the change events it publishes, so that an
// export listener for that same backend skips the event instead of echoing the
// record back.
func WithOrigin(ctx context.Context, backendID string) context.Context {
	return context.WithValue(ctx, originKey{}, backendID)
}

// OriginFrom returns the backend instance a write comes from ("" for a write
// made by a user or another process).
func OriginFrom(ctx context.Context) string {
	s, _ := ctx.Value(originKey{}).(string)
	return s
}
