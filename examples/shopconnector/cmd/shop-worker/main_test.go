package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/connector-go/connector/dispatcher"
	"github.com/connector-go/connector/events"
	"github.com/connector-go/connector/examples/catalog"
	"github.com/connector-go/connector/examples/shop"
	"github.com/connector-go/connector/examples/shopconnector"
	"github.com/connector-go/connector/internal/testenv"
	"github.com/connector-go/connector/job"
	"github.com/connector-go/connector/service"
	"github.com/connector-go/connector/units"
	"github.com/connector-go/connector/worker"
	"github.com/nats-io/nats.go/jetstream"
)

// The example connector's own process (service.Run with its setup) runs
// its jobs (an import from the shop into the catalog) and its export
// listeners (a catalog change reaches the shop).
func TestShopWorker(t *testing.T) {
	t.Setenv("OTEL_TRACES_EXPORTER", "none")
	srv := testenv.StartNATS(t)
	rdb, prefix := testenv.Redis(t)
	js, err := jetstream.New(srv.Connect(t))
	if err != nil {
		t.Fatal(err)
	}
	shopSrv := httptest.NewServer(shop.NewServer(shop.WithSampleData()))
	t.Cleanup(shopSrv.Close)
	pub, err := events.NewPublisher(js, events.WithPrefix(prefix))
	if err != nil {
		t.Fatal(err)
	}
	cat := catalog.New(catalog.WithPublisher(pub))
	catSrv := httptest.NewServer(cat)
	t.Cleanup(catSrv.Close)

	env := map[string]string{"SHOP_URL": shopSrv.URL, "CATALOG_URL": catSrv.URL, "SHOP_ID": "shop-t"}
	getenv := func(k string) string { return env[k] }
	reg := worker.NewRegistry()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- service.Run(ctx, []string{"--nats", srv.URL, "--redis", testenv.RedisURL(t), "--prefix", prefix,
			"--http", "", "--log-level", "error", "--channels", "root:4,root.shop:2"}, getenv, reg, setup(reg, getenv))
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("shop-worker: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Error("shop-worker did not stop")
		}
	})

	d, err := dispatcher.New(js, dispatcher.WithPrefix(prefix), dispatcher.WithRedis(rdb))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Close(context.Background()) })
	if _, err := d.Enqueue(ctx, units.ImportRecord{BackendID: "shop-t", Model: "product", ExternalID: "1"},
		job.WithChannel(shopconnector.Channel)); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 20*time.Second, func() bool { return len(cat.Records(catalog.Product)) == 1 }, "product 1 imported")
	local := cat.Records(catalog.Product)[0]["id"].(string)

	req, _ := http.NewRequest("PATCH", catSrv.URL+"/products/"+local, bytes.NewReader([]byte(`{"name":"Espresso cup XL"}`)))
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("PATCH the catalog: %s", resp.Status)
	}
	testenv.Eventually(t, 20*time.Second, func() bool {
		resp, err := http.Get(shopSrv.URL + "/v1/products/1")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		var p map[string]any
		return json.NewDecoder(resp.Body).Decode(&p) == nil && p["name"] == "Espresso cup XL"
	}, "the catalog's change exported to the shop")
}

// Without the shop's URLs the process does not start.
func TestShopWorkerNeedsItsURLs(t *testing.T) {
	t.Setenv("OTEL_TRACES_EXPORTER", "none")
	srv := testenv.StartNATS(t)
	_, prefix := testenv.Redis(t)
	reg := worker.NewRegistry()
	noEnv := func(string) string { return "" }
	err := service.Run(context.Background(), []string{"--nats", srv.URL, "--redis", testenv.RedisURL(t), "--prefix", prefix,
		"--http", "", "--log-level", "error"}, noEnv, reg, setup(reg, noEnv))
	if err == nil || !strings.Contains(err.Error(), "SHOP_URL and CATALOG_URL are required") {
		t.Fatalf("Run: %v, want the missing URLs", err)
	}
}
