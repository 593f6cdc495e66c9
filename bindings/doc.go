// Package bindings keeps the links between external records and local
// records in Redis, plus the record locks and idempotency records that
// connector jobs use around them.
//
// # Bindings
//
// A binding links one external record (backend instance, model, external
// id) to one local record (local id) and remembers when it was last synced.
// It is the heart of every connector: a wrong or duplicated binding
// duplicates records in a customer's shop or ERP. A [Binder] serves one
// backend instance and one model:
//
//	b := store.Binder("shop-eu", "product")
//	localID, found, err := b.ToInternal(ctx, "ext-42")
//	...
//	err = b.Bind(ctx, "ext-42", "P00017", time.Now())
//
// Redis itself enforces that one external id maps to at most one local id
// and one local id to at most one external id, per backend and model: [Binder.Bind]
// runs one Lua script that checks both directions and writes both, so it is
// exact under any concurrency, across processes. Binding the same pair again
// is idempotent and refreshes the sync date; binding a conflicting pair
// returns a [*ConflictError] (errors.Is(err, [ErrConflict])) naming both sides
// and changes nothing.
//
// Lookups have batch forms ([Binder.ToInternalMany], [Binder.ToExternalMany],
// [Binder.SyncDateMany]) that answer thousands of ids in one round trip: a
// single lookup is bound by the network (tens of thousands per second), a
// batch of 1,000 by Redis (millions of ids per second). Use them whenever a
// job handles a page of records.
//
// Keys are namespaced by the Store's prefix, the backend instance and the
// model, and every key one script touches carries the same Redis Cluster
// hash tag, so the package runs unchanged on a single Redis, Sentinel or a
// Cluster.
//
// # Locks
//
// [Store.Lock] takes a lease on a resource name (the seed's
// advisory_lock_or_retry): a random token proves the holder, release and
// extend are compare-and-delete / compare-and-extend scripts, the lease
// expires after its TTL if the holder dies, and every successful lock returns
// a fencing token that strictly increases per resource. When the resource is
// held elsewhere the error is a job.RetryNoCount: the job runs again later
// and the attempt does not count.
//
// A Redis lock is an efficiency lock, not a correctness guarantee: a paused
// process can outlive its lease, and a failover can lose a lock because
// replication is asynchronous. Effects stay safe because binding is atomic
// and idempotent, conflicts are refused by Redis, completed work is recorded
// with [Store.MarkCompleted], and writers that can compare the fencing token
// ([Lock.Token]) reject stale holders. See docs/bindings.md.
//
// # Idempotency
//
// [Store.MarkCompleted] records that a unit of work identified by a key has
// completed, with its result, so that a redelivered job can ask
// [Store.Completed] and skip work already done.
//
// # Errors
//
// Errors are values, never panics. When Redis cannot be reached (connection
// refused or reset, timeouts, a failover in progress: LOADING, READONLY,
// MASTERDOWN, ...) methods return an error that is both errors.Is(err,
// [ErrUnavailable]) and a job.RetryableError: returned from a handler, the
// job retries later (the attempt counts) and nothing is lost, since every
// write here is safe to repeat (a Lock whose reply was lost only makes the
// job wait for that lease to run out). A conflict ([ErrConflict]), a misuse
// ([ErrInvalid]) or a server reply that retrying cannot fix (WRONGTYPE) is
// permanent; a cancelled context stays the context's error.
//
// # Metrics
//
// [WithMeterProvider] times every Redis operation of a Store in the
// OpenTelemetry histogram connector.store.op.duration{store.op,
// store.outcome}; see docs/bindings.md.
//
// The key layout is documented for operators and other-language clients in
// docs/bindings.md.
package bindings
