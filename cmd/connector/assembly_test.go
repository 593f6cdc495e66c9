package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/connector-go/connector/events"
	"github.com/connector-go/connector/examples/catalog"
	"github.com/connector-go/connector/examples/shop"
	"github.com/connector-go/connector/internal/testenv"
	"github.com/connector-go/connector/internal/wire"
	"github.com/nats-io/nats.go/jetstream"
)

// scrape returns the text of a /metrics endpoint ("" when it does not answer).
func scrape(url string) string {
	resp, err := http.Get(url)
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// exampleSystems serves the example shop (with its sample data) and a
// catalog publishing its events on the NATS of js under prefix.
func exampleSystems(t *testing.T, js jetstream.JetStream, prefix string) (shopURL, catalogURL string) {
	t.Helper()
	s := httptest.NewServer(shop.NewServer(shop.WithSampleData()))
	t.Cleanup(s.Close)
	pub, err := events.NewPublisher(js, events.WithPrefix(prefix))
	if err != nil {
		t.Fatal(err)
	}
	c := httptest.NewServer(catalog.New(catalog.WithPublisher(pub)))
	t.Cleanup(c.Close)
	return s.URL, c.URL
}

// consoleSpans decodes the span lines the "console" traces exporter wrote.
func consoleSpans(out string) []string {
	var names []string
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var s struct {
			Name    string `json:"name"`
			TraceID string `json:"trace_id"`
		}
		if json.Unmarshal(sc.Bytes(), &s) == nil && s.Name != "" && s.TraceID != "" {
			names = append(names, s.Name)
		}
	}
	return names
}

// `connector worker` running the example connector (SHOP_URL and
// CATALOG_URL set, as in Compose and Kubernetes) uses the process's
// telemetry everywhere: its /metrics shows the export listeners'
// connector_events_handled_total, and the synchronizers' binder, adapter
// and local calls are traced. The process is the real command (this test
// binary running main), with traces on the "console" exporter (stdout).
func TestWorkerAssemblyTelemetry(t *testing.T) {
	if testing.Short() {
		t.Skip("runs connector worker as a process")
	}
	srv, _, js := testenv.JetStream(t)
	_, prefix := testenv.Redis(t)
	shopURL, catalogURL := exampleSystems(t, js, prefix)
	httpAddr := testenv.FreeAddr(t)
	env := map[string]string{
		"CONNECTOR_TEST_RUN_MAIN": "worker",
		"CONNECTOR_NATS_URL":      srv.URL, "CONNECTOR_REDIS_URL": testenv.RedisURL(t), "CONNECTOR_PREFIX": prefix,
		"CONNECTOR_HTTP_ADDR": httpAddr, "CONNECTOR_CHANNELS": "root:4,root.shop:2",
		"CONNECTOR_LOG_LEVEL": "warn", "CONNECTOR_LOG_FORMAT": "console", "CONNECTOR_SHUTDOWN_GRACE": "5s",
		"OTEL_TRACES_EXPORTER": "console", "OTEL_BSP_SCHEDULE_DELAY": "100", "OTEL_EXPORTER_OTLP_ENDPOINT": "",
		"SHOP_URL": shopURL, "CATALOG_URL": catalogURL, "SHOP_ID": "shop-t", "SHOP_IMPORT_SCHEDULE": "@every 1s",
	}
	cmd := exec.Command(os.Args[0])
	cmd.Env = os.Environ()
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	var stdout, stderr testenv.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
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
			t.Logf("connector worker stderr:\n%s", stderr.String())
		}
	})
	alive := func() {
		select {
		case err := <-exited:
			stopped = true
			t.Fatalf("connector worker exited early: %v", err)
		default:
		}
	}

	// The batch imports create catalog records; the catalog's events come
	// back to the export listeners, which skip them (their origin is the
	// shop's import) and count them.
	handled := regexp.MustCompile(`(?m)^connector_events_handled_total\{[^}]*event_listener="shop_export_shop-t_product"[^}]*\} [1-9]`)
	testenv.Eventually(t, 60*time.Second, func() bool {
		alive()
		return handled.MatchString(scrape("http://" + httpAddr + "/metrics"))
	}, "connector_events_handled_total of the export listeners on %s/metrics", httpAddr)

	want := []string{"binder.to_internal shop/product", "binder.bind shop/product", "adapter.read shop/product",
		"adapter.search shop/product", "local.create product", "import shop/product"}
	testenv.Eventually(t, 30*time.Second, func() bool {
		alive()
		names := consoleSpans(stdout.String())
		for _, w := range want {
			if !strings.Contains(strings.Join(names, "\n")+"\n", w+"\n") {
				return false
			}
		}
		return true
	}, "spans %v among %v", want, consoleSpans(stdout.String()))

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		stopped = true
		if err != nil {
			t.Fatalf("connector worker after SIGTERM: %v", err)
		}
	case <-time.After(45 * time.Second):
		t.Fatal("connector worker did not stop within 45s of SIGTERM")
	}
}

// With --register-schedules=false (CONNECTOR_REGISTER_SCHEDULES=false, the
// least-privilege deployments) `connector worker` does not try to register
// the example's periodic imports; by default it does.
func TestWorkerRegisterSchedules(t *testing.T) {
	srv, _, js := testenv.JetStream(t)
	for _, tc := range []struct {
		name, env string
		args      []string
		want      int
	}{
		{"default", "", nil, len([]string{"product", "customer", "order"})},
		{"env false", "false", nil, 0},
		{"flag false over env", "true", []string{"--register-schedules=false"}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, prefix := testenv.Redis(t)
			names := wire.MustNames(prefix)
			shopURL, catalogURL := exampleSystems(t, js, prefix)
			env := map[string]string{
				"CONNECTOR_NATS_URL": srv.URL, "CONNECTOR_REDIS_URL": testenv.RedisURL(t), "CONNECTOR_PREFIX": prefix,
				"CONNECTOR_LOG_LEVEL": "error", "CONNECTOR_SHUTDOWN_GRACE": "5s", "CONNECTOR_REGISTER_SCHEDULES": tc.env,
				"SHOP_URL": shopURL, "CATALOG_URL": catalogURL, "SHOP_IMPORT_SCHEDULE": "@every 1h",
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			var stderr testenv.Buffer
			go func() {
				done <- run(ctx, append([]string{"worker", "--http="}, tc.args...), io.Discard, &stderr, func(k string) string { return env[k] })
			}()
			defer func() {
				cancel()
				select {
				case err := <-done:
					if err != nil {
						t.Errorf("connector worker: %v\n%s", err, stderr.String())
					}
				case <-time.After(45 * time.Second):
					t.Error("connector worker did not stop")
				}
			}()
			// The listeners start after the schedules are (or are not)
			// registered: once their guard consumer exists, that step is over.
			testenv.Eventually(t, 30*time.Second, func() bool {
				select {
				case err := <-done:
					done <- err
					t.Fatalf("connector worker returned early: %v\n%s", err, stderr.String())
				default:
				}
				c, cancel := context.WithTimeout(ctx, 2*time.Second)
				defer cancel()
				_, err := js.Consumer(c, names.EventsStream(), events.GuardConsumer)
				return err == nil
			}, "the listeners running")
			s, err := js.Stream(ctx, names.JobsStream())
			if err != nil {
				t.Fatal(err)
			}
			info, err := s.Info(ctx, jetstream.WithSubjectFilter(prefix+".sched.periodic.>"))
			if err != nil {
				t.Fatal(err)
			}
			if got := len(info.State.Subjects); got != tc.want {
				t.Errorf("%d periodic schedules registered (%v), want %d", got, info.State.Subjects, tc.want)
			}
		})
	}
}

// `connector dev` falls back to a free port when its --http address is
// busy, prints the address it really serves, and its /metrics shows the
// example connector's listeners (connector_events_handled_total).
func TestDevHTTPFallbackAndEventMetrics(t *testing.T) {
	if testing.Short() {
		t.Skip("runs connector dev")
	}
	t.Setenv("OTEL_TRACES_EXPORTER", "none")
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	var stdout, stderr testenv.Buffer
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"dev", "--nats-port", "0", "--http", busy.Addr().String(),
			"--shop-addr", "127.0.0.1:0", "--catalog-addr", "127.0.0.1:0",
			"--import-every", "@every 1s", "--every", "1h", "--log-level", "error"},
			&stdout, &stderr, func(string) string { return "" })
	}()
	defer func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("connector dev: %v", err)
			}
		case <-time.After(45 * time.Second):
			t.Error("connector dev did not stop")
		}
	}()
	alive := func() {
		select {
		case err := <-done:
			done <- err
			t.Fatalf("connector dev returned early: %v\nstdout:\n%s\nstderr:\n%s", err, stdout.String(), stderr.String())
		default:
		}
	}
	re := regexp.MustCompile(`health/metrics\s+http://(\S+)/readyz\s+http://(\S+)/metrics`)
	var addr string
	testenv.Eventually(t, 60*time.Second, func() bool {
		alive()
		if m := re.FindStringSubmatch(stdout.String()); m != nil {
			addr = m[1]
			if m[2] != m[1] {
				t.Fatalf("readyz at %s, metrics at %s", m[1], m[2])
			}
		}
		return addr != ""
	}, "connector dev prints its health/metrics address")
	if addr == busy.Addr().String() {
		t.Fatalf("connector dev prints the busy address %s", addr)
	}
	testenv.Eventually(t, 30*time.Second, func() bool {
		alive()
		resp, err := http.Get("http://" + addr + "/livez")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}, "/livez answers on the printed address %s", addr)
	handled := regexp.MustCompile(`(?m)^connector_events_handled_total\{[^}]*event_listener="shop_export_shop-v1_product"[^}]*\} [1-9]`)
	testenv.Eventually(t, 60*time.Second, func() bool {
		alive()
		return handled.MatchString(scrape("http://" + addr + "/metrics"))
	}, "connector_events_handled_total on http://%s/metrics", addr)
	// The listeners are among /readyz's checks.
	testenv.Eventually(t, 30*time.Second, func() bool {
		alive()
		return strings.Contains(scrape("http://"+addr+"/readyz"), `"events":"ok"`)
	}, "/readyz of connector dev checks its listeners (events ok)")
}

// `connector worker -h` documents retention and schedule registration,
// with their environment variables.
func TestWorkerHelpDocumentsNewSettings(t *testing.T) {
	_, stderr, err := runCmd(t, func(string) string { return "" }, "worker", "-h")
	if !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("err = %v, want flag.ErrHelp", err)
	}
	for _, want := range []string{"-record-ttl", "CONNECTOR_RECORD_TTL", "168h", "-register-schedules", "CONNECTOR_REGISTER_SCHEDULES"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("connector worker -h does not mention %q:\n%s", want, stderr)
		}
	}
}
