package shopconnector_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/connector-go/connector/internal/testenv"
)

// `connector dev` runs the whole example on its embedded defaults: it
// prints the shop's and the catalog's URLs and the commands to try, the
// periodic batch imports bring the shop's records into the catalog, a
// change in the catalog reaches the shop through the export listeners, a
// change in the shop comes back at the next import, and SIGINT stops it
// cleanly. The binary is the real cmd/connector, run as a user would.
func TestConnectorDevRunsTheExample(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs cmd/connector")
	}
	bin := testenv.GoBuild(t, "./cmd/connector")
	var stdout, stderr testenv.Buffer
	cmd := exec.Command(bin, "dev", "--nats-port", "0", "--http", "127.0.0.1:0",
		"--shop-addr", "127.0.0.1:0", "--catalog-addr", "127.0.0.1:0",
		"--import-every", "@every 1s", "--every", "1h", "--log-level", "warn")
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.Env = append(os.Environ(), "OTEL_TRACES_EXPORTER=none")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			_ = cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("connector dev stdout:\n%s\nstderr:\n%s", stdout.String(), stderr.String())
		}
	})

	reShop := regexp.MustCompile(`(?m)^\s+shop\s+(http://\S+)/v1/products`)
	reCatalog := regexp.MustCompile(`(?m)^\s+catalog\s+(http://\S+)/products`)
	var shopURL, catURL string
	testenv.Eventually(t, 60*time.Second, func() bool {
		select {
		case err := <-exited:
			stopped = true
			t.Fatalf("connector dev exited early: %v", err)
		default:
		}
		out := stdout.String()
		if m := reShop.FindStringSubmatch(out); m != nil {
			shopURL = m[1]
		}
		if m := reCatalog.FindStringSubmatch(out); m != nil {
			catURL = m[1]
		}
		return shopURL != "" && catURL != ""
	}, "connector dev prints the shop and catalog URLs")
	out := stdout.String()
	for _, want := range []string{
		"curl -X PATCH " + shopURL + "/v1/products/1",
		"curl -X PATCH " + catURL + "/products/1",
		"curl -X POST " + shopURL + "/admin/faults",
		"jobs dead --nats nats://127.0.0.1:",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("connector dev does not print %q", want)
		}
	}

	// The periodic batch imports bring the sample shop into the catalog.
	products := func() []map[string]any {
		var list struct {
			Items []map[string]any `json:"items"`
		}
		getJSON(t, catURL+"/products", &list)
		return list.Items
	}
	testenv.Eventually(t, 30*time.Second, func() bool {
		var customers, orders struct {
			Items []map[string]any `json:"items"`
		}
		getJSON(t, catURL+"/customers", &customers)
		getJSON(t, catURL+"/orders", &orders)
		return len(products()) == 3 && len(customers.Items) == 2 && len(orders.Items) == 1
	}, "3 products, 2 customers and 1 order imported into the catalog")

	// A change in the catalog reaches the shop (export listener, export job).
	var p1 map[string]any
	for _, p := range products() {
		if p["name"] == "Espresso cup" {
			p1 = p
		}
	}
	if p1 == nil {
		t.Fatalf("no Espresso cup among %v", products())
	}
	call(t, "PATCH", catURL+"/products/"+fmt.Sprint(p1["id"]), map[string]any{"name": "Espresso cup XL"}, nil)
	testenv.Eventually(t, 20*time.Second, func() bool {
		var shopP map[string]any
		getJSON(t, shopURL+"/v1/products/1", &shopP)
		return shopP["name"] == "Espresso cup XL"
	}, "the catalog's rename exported to the shop")

	// A change in the shop comes back at the next import, once.
	call(t, "PATCH", shopURL+"/v1/products/2", map[string]any{"price": 7.5}, nil)
	testenv.Eventually(t, 20*time.Second, func() bool {
		for _, p := range products() {
			if p["name"] == "Coffee beans 1 kg" && p["price"] == 7.5 {
				return true
			}
		}
		return false
	}, "the shop's price change imported into the catalog")
	if n := len(products()); n != 3 {
		t.Fatalf("catalog has %d products, want 3 (no duplicate)", n)
	}

	// Two faults in the shop (docs/example.md): the export that meets them
	// is retried, and gets there; the retries' records are written (the
	// embedded store runs the records' scripts too).
	call(t, "POST", shopURL+"/admin/faults", map[string]any{"status": 503, "count": 2}, nil)
	call(t, "PATCH", catURL+"/products/"+fmt.Sprint(p1["id"]), map[string]any{"name": "Espresso cup XXL"}, nil)
	testenv.Eventually(t, 30*time.Second, func() bool {
		var left struct {
			Count int `json:"count"`
		}
		getJSON(t, shopURL+"/admin/faults", &left)
		return left.Count == 0
	}, "the faults taken by the connector's requests")
	testenv.Eventually(t, 60*time.Second, func() bool {
		var shopP map[string]any
		getJSON(t, shopURL+"/v1/products/1", &shopP)
		return shopP["name"] == "Espresso cup XXL"
	}, "the rename exported to the shop past its two 503s")

	// Ctrl-C: a clean stop.
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		stopped = true
		if err != nil {
			t.Fatalf("connector dev after SIGINT: %v", err)
		}
	case <-time.After(45 * time.Second):
		t.Fatal("connector dev did not stop within 45s of SIGINT")
	}
	for _, warn := range []string{"flush failed", "not flushed"} {
		if strings.Contains(stderr.String(), warn) {
			t.Errorf("connector dev logged %q: its job records were not written", warn)
		}
	}
}

func getJSON(t *testing.T, url string, out any) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", url, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
}
