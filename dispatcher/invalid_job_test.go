package dispatcher_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/connector-go/connector/job"
)

type invalidProbe struct {
	Data string `msgpack:"data"`
}

func (invalidProbe) JobName() string { return "test.invalid_probe" }

// A job refused before anything is sent is job.ErrInvalid, a sentinel
// users can check (the reasons are in the message). Before, the errors
// wrapped only sentinels of an internal package.
func TestInvalidJobsAreErrInvalid(t *testing.T) {
	e := newGenv(t)
	ctx := context.Background()
	for name, opts := range map[string][]job.Option{
		"bad channel":      {job.WithChannel("root..x")},
		"bad id":           {job.WithID("has space")},
		"dispatcher's own": {job.WithHeader("Nats-Msg-Id", "x")},
		"line break":       {job.WithHeader("X-Note", "a\r\nNats-Msg-Id: y")},
		"negative retries": {job.WithMaxRetries(-1)},
	} {
		if _, err := e.d.Enqueue(ctx, invalidProbe{}, opts...); !errors.Is(err, job.ErrInvalid) {
			t.Errorf("%s: %v, want job.ErrInvalid", name, err)
		}
	}
	if _, err := e.d.Enqueue(ctx, invalidProbe{Data: strings.Repeat("x", 2<<20)}); !errors.Is(err, job.ErrInvalid) {
		t.Errorf("too large: %v, want job.ErrInvalid", err)
	}
}
