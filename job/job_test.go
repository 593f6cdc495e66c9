package job_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/connector-go/connector/job"
)

func TestRetryPatternDelay(t *testing.T) {
	p := job.RetryPattern{1: 10 * time.Second, 5: 20 * time.Second, 10: 30 * time.Second, 15: 5 * time.Minute}
	for attempt, want := range map[int]time.Duration{1: 10 * time.Second, 4: 10 * time.Second, 5: 20 * time.Second,
		9: 20 * time.Second, 10: 30 * time.Second, 14: 30 * time.Second, 15: 5 * time.Minute, 100: 5 * time.Minute} {
		if got := p.Delay(attempt); got != want {
			t.Errorf("Delay(%d) = %s, want %s", attempt, got, want)
		}
	}
	parsed, err := job.ParseRetryPattern("1:10s, 5:20s,10:30s,15:5m")
	if err != nil || parsed.String() != p.String() {
		t.Fatalf("parse = %v, %v", parsed, err)
	}
	for _, bad := range []string{"", "x", "0:1s", "1:soon", "1:-1s"} {
		if _, err := job.ParseRetryPattern(bad); err == nil {
			t.Errorf("ParseRetryPattern(%q) accepted", bad)
		}
	}
}

type importProduct struct {
	ID string `msgpack:"id"`
}

func (importProduct) JobName() string { return "shop.import_product" }
func (importProduct) JobOptions() []job.Option {
	return []job.Option{job.WithChannel("root.shop"), job.WithPriority(20)}
}

func TestApplyOrder(t *testing.T) {
	o := job.Apply(importProduct{}, job.WithPriority(1), job.WithIdentityFunc(func(n string, _ []byte) string { return n }))
	if o.Channel != "root.shop" || *o.Priority != 1 || o.IdentityFunc("a", nil) != "a" {
		t.Fatalf("%+v", o)
	}
	if job.IdentityExact("a", []byte{1}) == job.IdentityExact("a", []byte{2}) {
		t.Fatal("identity exact ignores args")
	}
}

func ExampleRetryPattern() {
	p, _ := job.ParseRetryPattern("1:10s,5:1m")
	fmt.Println(p.Delay(1), p.Delay(4), p.Delay(7))
	// Output: 10s 10s 1m0s
}
