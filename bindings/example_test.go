package bindings_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/connector-go/connector/bindings"
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
