package main

import (
	"errors"
	"flag"
	"strings"
	"testing"
)

// `connector streams` is a command group as `jobs` and `events` are: with
// no command it prints its usage and is a usage error (status 2), with -h
// it prints its usage and succeeds, as "connector <command> -h" promises;
// an unknown command is an error naming it.
func TestStreamsUsage(t *testing.T) {
	none := func(string) string { return "" }
	_, stderr, err := runCmd(t, none, "streams")
	if !errors.Is(err, errNoCommand) || !strings.Contains(stderr, "connector streams provision") {
		t.Errorf("connector streams: %v, stderr %q; want errNoCommand and the usage", err, stderr)
	}
	for _, h := range []string{"-h", "--help", "help"} {
		_, stderr, err := runCmd(t, none, "streams", h)
		if !errors.Is(err, flag.ErrHelp) || !strings.Contains(stderr, "connector streams provision") {
			t.Errorf("connector streams %s: %v, stderr %q; want flag.ErrHelp and the usage", h, err, stderr)
		}
	}
	_, stderr, err = runCmd(t, none, "streams", "create")
	if err == nil || !strings.Contains(err.Error(), `"create"`) || !strings.Contains(stderr, "connector streams provision") {
		t.Errorf("connector streams create: %v, stderr %q; want an error naming it and the usage", err, stderr)
	}
}
