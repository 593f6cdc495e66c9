package service

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/connector-go/connector/worker"
)

// Bad flags exit with 2 (the flag package has said why), -h with 0; any
// other error with 1, printed with the passwords of its URLs redacted.
func TestExitCodes(t *testing.T) {
	noEnv := func(string) string { return "" }
	run := func(args ...string) error {
		return Run(context.Background(), args, noEnv, worker.NewRegistry())
	}
	for _, c := range []struct {
		args []string
		code int
	}{
		{[]string{"--no-such-flag"}, 2},
		{[]string{"stray-argument"}, 2},
		{[]string{"--log-level", "loud"}, 2},
		{[]string{"-h"}, 0},
	} {
		var out bytes.Buffer
		err := run(c.args...)
		if got := exitCode(err, &out, "myconnector"); got != c.code {
			t.Errorf("%v: exit %d (%v), want %d", c.args, got, err, c.code)
		}
	}
	if !errors.Is(run("-h"), flag.ErrHelp) {
		t.Error("-h: want flag.ErrHelp")
	}

	var out bytes.Buffer
	err := fmt.Errorf("connect: redis redis://app:s3cret@redis.internal:6379/0: %w", io.ErrUnexpectedEOF)
	if got := exitCode(err, &out, "myconnector"); got != 1 {
		t.Fatalf("exit %d, want 1", got)
	}
	if s := out.String(); strings.Contains(s, "s3cret") || !strings.HasPrefix(s, "myconnector: connect: redis") {
		t.Fatalf("stderr %q: want the error, without the password", s)
	}
}
