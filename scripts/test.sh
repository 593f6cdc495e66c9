#!/usr/bin/env bash
# The project's test command (`make test` runs it): format check, vet, and
# the tests with the race detector, against real Redis when it answers.
#
#   CONNECTOR_TEST_REDIS_URL      Redis for tests (default redis://127.0.0.1:6379/0)
#   CONNECTOR_TEST_REQUIRE_REDIS  1: fail instead of using the embedded store
#   FUZZTIME                      per fuzz target (default 200000x executions; 0 skips fuzzing)
#   CI                            set (not "false"): fail when -race is impossible
set -euo pipefail
cd "$(dirname "$0")/.."

# The race detector needs cgo and a C compiler. Without one the tests run
# without -race, except in CI (CI set and not "false"), which must not lose
# it silently: there this fails at once.
race="-race"
if ! CGO_ENABLED=1 go env CC >/dev/null 2>&1 || ! command -v "$(CGO_ENABLED=1 go env CC)" >/dev/null 2>&1; then
	if [ -n "${CI:-}" ] && [ "${CI}" != false ]; then
		echo "== no C compiler ($(go env CC 2>/dev/null)): CI needs the race detector (install gcc)" >&2; exit 1
	fi
	echo "== no C compiler: running without -race"; race=""
fi

echo "== gofmt"
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go' -not -path './vendor/*'))
if [ -n "$unformatted" ]; then
	echo "gofmt: these files need formatting:"; echo "$unformatted"; exit 1
fi

echo "== go vet"
go vet ./...

url="${CONNECTOR_TEST_REDIS_URL:-redis://127.0.0.1:6379/0}"
hostport="${url#*://}"; hostport="${hostport#*@}"; hostport="${hostport%%/*}"
host="${hostport%%:*}"; port="${hostport##*:}"
if (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null; then
	echo "== Redis: real server at $hostport"
else
	if [ "${CONNECTOR_TEST_REQUIRE_REDIS:-}" = "1" ]; then
		echo "no Redis at $hostport and CONNECTOR_TEST_REQUIRE_REDIS=1"; exit 1
	fi
	echo "== Redis: none at $hostport; tests fall back to the embedded store (miniredis)"
fi

echo "== go test $race ./..."
go test $race -count=1 -timeout 20m ./...

# A count, not a duration: with a duration, Go 1.26's fuzz coordinator can
# report "context deadline exceeded" as a failure at the deadline, with no
# failing input (golang/go#75804, fixed in Go 1.27); a count has no
# deadline to race. 200,000 runs take 5-10 s here.
fuzztime="${FUZZTIME:-200000x}"
if [ "$fuzztime" != "0" ]; then
	echo "== fuzz ($fuzztime per target)"
	for target in $(go test -list '^Fuzz' ./internal/wire | grep '^Fuzz' || true); do
		go test -run '^$' -fuzz "^${target}\$" -fuzztime "$fuzztime" ./internal/wire
	done
fi
echo "== all checks passed"
