package bindings_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/connector-go/connector/bindings"
	"github.com/connector-go/connector/job"
)

// An import job of a connector: lock the external record, skip it if a
// redelivery already did the work, bind it to the local record it created,
// and record the completion.
func Example() {
	url := os.Getenv("CONNECTOR_TEST_REDIS_URL")
	if url == "" {
		url = "redis://127.0.0.1:6379/0"
	}
	opt, err := redis.ParseURL(url)
	if err != nil {
		fmt.Println(err)
		return
	}
	rdb := redis.NewClient(opt)
	defer rdb.Close()
	ctx := context.Background()
	prefix := fmt.Sprint("example", time.Now().UnixNano()) // namespaces every key
	defer func() {                                         // tidy up: an example should leave nothing behind
		keys, _ := rdb.Keys(ctx, "{"+prefix+":*").Result()
		rdb.Del(ctx, keys...)
	}()
	store := bindings.New(rdb, prefix)
	products := store.Binder("shop-eu", "product")

	importProduct := func(externalID string) error {
		// Held elsewhere: a job.RetryNoCount, the job runs again later.
		release, err := store.Acquire(ctx, "shop-eu/product/"+externalID, time.Minute)
		if err != nil {
			return err
		}
		defer release(context.WithoutCancel(ctx))

		key := "shop-eu.import_product:" + externalID
		if _, done, err := store.Completed(ctx, key); err != nil || done {
			return err
		}
		localID, found, err := products.ToInternal(ctx, externalID)
		if err != nil {
			return err
		}
		if !found {
			localID = "P-" + externalID // create the local record here
		}
		if err := products.Bind(ctx, externalID, localID, time.Now()); err != nil {
			return err
		}
		return store.MarkCompleted(ctx, key, localID, 24*time.Hour)
	}

	for _, id := range []string{"1001", "1002", "1001"} { // 1001 is redelivered
		if err := importProduct(id); err != nil {
			fmt.Println("import:", err)
		}
	}

	local, _, _ := products.ToInternal(ctx, "1001")
	fmt.Println("1001 ->", local)
	ext, _, _ := products.ToExternal(ctx, "P-1002")
	fmt.Println("P-1002 ->", ext)
	all, _ := products.ToInternalMany(ctx, []string{"1001", "1002", "1003"})
	fmt.Println(len(all), "of 3 bound")

	err = products.Bind(ctx, "1003", "P-1001", time.Now())
	fmt.Println(errors.Is(err, bindings.ErrConflict))
	fmt.Println(err)
	// Output:
	// 1001 -> P-1001
	// P-1002 -> 1002
	// 2 of 3 bound
	// true
	// bindings: cannot bind shop-eu/product external "1003" to local "P-1001": local "P-1001" is already bound to external "1001"
}

// exampleStore connects to the Redis the tests use and returns a Store
// under a fresh prefix, and a function that deletes the prefix's keys.
func exampleStore() (*bindings.Store, func()) {
	url := os.Getenv("CONNECTOR_TEST_REDIS_URL")
	if url == "" {
		url = "redis://127.0.0.1:6379/0"
	}
	opt, err := redis.ParseURL(url)
	if err != nil {
		panic(err)
	}
	rdb := redis.NewClient(opt)
	prefix := fmt.Sprint("example", time.Now().UnixNano())
	return bindings.New(rdb, prefix), func() {
		ctx := context.Background()
		keys, _ := rdb.Keys(ctx, "{"+prefix+":*").Result()
		if len(keys) > 0 {
			rdb.Del(ctx, keys...)
		}
		_ = rdb.Close()
	}
}

// Binding is one-to-one: the same pair again only refreshes the sync date;
// a pair that would give a record a second partner is refused, naming what
// holds it, and changes nothing.
func ExampleBinder_Bind() {
	store, cleanup := exampleStore()
	defer cleanup()
	ctx := context.Background()
	orders := store.Binder("shop-eu", "order")

	monday := time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)
	tuesday := monday.Add(24 * time.Hour)
	_ = orders.Bind(ctx, "SO-1", "ORD-7", monday)
	_ = orders.Bind(ctx, "SO-1", "ORD-7", tuesday) // idempotent: refreshes the date
	synced, _, _ := orders.SyncDate(ctx, "SO-1")
	fmt.Println("SO-1 last synced", synced.Weekday())

	// A second import that did not see the first one created ORD-8.
	err := orders.Bind(ctx, "SO-1", "ORD-8", tuesday)
	var conflict *bindings.ConflictError
	if errors.As(err, &conflict) {
		// Reuse the record bound first; delete the duplicate ORD-8.
		fmt.Println("keep", conflict.BoundLocalID)
	}
	local, _, _ := orders.ToInternal(ctx, "SO-1")
	fmt.Println("SO-1 ->", local)
	// Output:
	// SO-1 last synced Tuesday
	// keep ORD-7
	// SO-1 -> ORD-7
}

// A batch lookup answers many ids in one round trip; unbound ids are absent
// from the map.
func ExampleBinder_ToInternalMany() {
	store, cleanup := exampleStore()
	defer cleanup()
	ctx := context.Background()
	products := store.Binder("shop-eu", "product")
	for i := 1; i <= 3; i++ {
		_ = products.Bind(ctx, fmt.Sprint("ext-", i), fmt.Sprint("P", i), time.Now())
	}

	page := []string{"ext-1", "ext-2", "ext-3", "ext-4"} // e.g. one page of the shop's API
	local, err := products.ToInternalMany(ctx, page)
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, ext := range page {
		if id, ok := local[ext]; ok {
			fmt.Println(ext, "->", id)
		} else {
			fmt.Println(ext, "is new: import it")
		}
	}
	// Output:
	// ext-1 -> P1
	// ext-2 -> P2
	// ext-3 -> P3
	// ext-4 is new: import it
}

// A lock held elsewhere is an error that makes the job run again later
// without counting the attempt. Each lease carries a fencing token that
// grows, so a writer that remembers the highest token it accepted turns
// away a holder whose lease ran out while it was paused.
func ExampleStore_Lock() {
	store, cleanup := exampleStore()
	defer cleanup()
	ctx := context.Background()

	first, err := store.Lock(ctx, "shop-eu/product/42", time.Minute)
	if err != nil {
		fmt.Println(err)
		return
	}
	_, err = store.Lock(ctx, "shop-eu/product/42", time.Minute)
	r, _ := job.AsRetryable(err)
	fmt.Println("held elsewhere:", errors.Is(err, bindings.ErrLocked), "counted:", !r.NoCount)

	_ = first.Release(ctx)
	second, _ := store.Lock(ctx, "shop-eu/product/42", time.Minute)
	defer second.Release(ctx)

	// A fenced writer: accepts a write only with a token at least as high as
	// any it has seen.
	var highest int64
	write := func(token int64) error {
		if token < highest {
			return fmt.Errorf("stale holder (token %d < %d)", token, highest)
		}
		highest = token
		return nil
	}
	fmt.Println(write(second.Token()))
	fmt.Println(write(first.Token())) // the first holder, back from a pause
	// Output:
	// held elsewhere: true counted: false
	// <nil>
	// stale holder (token 1 < 2)
}

// A redelivered job asks whether its unit of work already completed, and
// skips it; the first completion's result stays.
func ExampleStore_MarkCompleted() {
	store, cleanup := exampleStore()
	defer cleanup()
	ctx := context.Background()

	run := func(key string) string {
		if result, done, err := store.Completed(ctx, key); err != nil || done {
			return "skipped, already " + result
		}
		// ... do the work, then:
		_ = store.MarkCompleted(ctx, key, "exported as INV-9", 24*time.Hour)
		return "did the work"
	}
	fmt.Println(run("shop-eu.export_invoice:9"))
	fmt.Println(run("shop-eu.export_invoice:9")) // redelivered
	// Output:
	// did the work
	// skipped, already exported as INV-9
}
