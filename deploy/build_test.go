package deploy_test

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// mainPackages lists the main packages that patterns name (go list, run at
// the module root).
func mainPackages(t *testing.T, patterns ...string) []string {
	t.Helper()
	args := append([]string{"list", "-f", `{{if eq .Name "main"}}{{.ImportPath}}{{end}}`}, patterns...)
	cmd := exec.Command("go", args...)
	cmd.Dir = ".."
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go %s: %v", strings.Join(args, " "), err)
	}
	var mains []string
	for _, l := range strings.Fields(string(out)) {
		if !slices.Contains(mains, l) {
			mains = append(mains, l)
		}
	}
	slices.Sort(mains)
	return mains
}

// `make build` builds every command of the module (connector, shop,
// catalog, shop-schedule, and any added later), not only some: the main
// packages its go build names are all the module's main packages outside
// internal/ directories (test helper processes).
func TestMakefileBuildsEveryCommand(t *testing.T) {
	raw, err := os.ReadFile("../Makefile")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^build:.*\n\t(.*go build .*)$`).FindStringSubmatch(string(raw))
	if m == nil {
		t.Fatal("Makefile: no build target running go build")
	}
	var patterns []string
	for _, f := range strings.Fields(m[1]) {
		if strings.HasPrefix(f, "./") && f != "./bin/" {
			patterns = append(patterns, f)
		}
	}
	if !strings.Contains(m[1], "-o bin/") {
		t.Errorf("build recipe %q: want the binaries in bin/ (-o bin/)", m[1])
	}
	built := mainPackages(t, patterns...)
	var want []string
	for _, p := range mainPackages(t, "./...") {
		if !strings.Contains(p, "/internal/") {
			want = append(want, p)
		}
	}
	if len(want) < 4 {
		t.Fatalf("only %d main packages found: %v", len(want), want)
	}
	for _, p := range want {
		if !slices.Contains(built, p) {
			t.Errorf("make build does not build %s (it builds %v)", p, built)
		}
	}
}

// In CI (CI set), scripts/test.sh fails at once when the race detector is
// impossible (no C compiler) instead of running the tests without -race.
func TestTestScriptNeedsRaceInCI(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "../scripts/test.sh")
	cmd.Env = append(os.Environ(), "CI=true", "CC=/nonexistent/cc", "FUZZTIME=0")
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if ctx.Err() != nil || !errors.As(err, &exit) || exit.ExitCode() == 0 {
		t.Fatalf("scripts/test.sh with CI=true and no C compiler: %v, want a failure\n%s", err, out)
	}
	if !strings.Contains(string(out), "C compiler") {
		t.Errorf("the failure does not say why:\n%s", out)
	}
	if strings.Contains(string(out), "== go test") || strings.Contains(string(out), "== go vet") {
		t.Errorf("scripts/test.sh went on without the race detector:\n%s", out)
	}
}

// .ci/run never lets the compose check skip (COMPOSE_CHECK_REQUIRE=1
// exported before it runs), runs the tests in CI mode, and installs a C
// compiler (for -race) when there is none, as it does for redis-server.
func TestCIRunRequiresEverything(t *testing.T) {
	raw, err := os.ReadFile("../.ci/run")
	if err != nil {
		t.Fatal(err)
	}
	s := string(raw)
	at := func(re string) int {
		t.Helper()
		loc := regexp.MustCompile(`(?m)` + re).FindStringIndex(s)
		if loc == nil {
			t.Errorf(".ci/run: no line matching %q", re)
			return -1
		}
		return loc[0]
	}
	require := at(`^export COMPOSE_CHECK_REQUIRE=1$`)
	ci := at(`^export CI=`)
	gcc := at(`^\s*apt-get .*install .*\bgcc\b`)
	check := at(`^deploy/compose-check\.sh`)
	test := at(`^make test`)
	if require > check || ci > test || gcc > test {
		t.Errorf(".ci/run: COMPOSE_CHECK_REQUIRE (%d) must come before the compose check (%d), CI (%d) and the gcc install (%d) before make test (%d)",
			require, check, ci, gcc, test)
	}
	if out, err := exec.Command("bash", "-n", "../.ci/run").CombinedOutput(); err != nil {
		t.Errorf(".ci/run: %v\n%s", err, out)
	}
}
