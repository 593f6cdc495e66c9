#!/usr/bin/env bash
# Validates docker-compose.yml the way Docker Compose reads it:
# `docker compose config -q` (Compose v2 plugin) or `docker-compose config -q`
# (Debian package docker-compose). No Docker engine is needed.
#
# If neither is present, it tries `apt-get install -y docker-compose` (as
# root, on Debian/Ubuntu). If that is impossible it prints SKIP and exits 0,
# or fails when COMPOSE_CHECK_REQUIRE=1 or CI is set (CI must not skip the
# check silently); an invalid compose file exits non-zero.
#
# Missing secret files are generated first (deploy/compose/gen-secrets.sh,
# git-ignored), so that a Compose version that checks them finds them.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

compose=()
find_compose() {
	if docker compose version >/dev/null 2>&1; then
		compose=(docker compose)
	elif command -v docker-compose >/dev/null 2>&1; then
		compose=(docker-compose)
	else
		return 1
	fi
}

if ! find_compose; then
	if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
		echo "compose-check: installing docker-compose (apt-get)" >&2
		log=$(mktemp)
		export DEBIAN_FRONTEND=noninteractive
		if ! apt-get install -y docker-compose >"$log" 2>&1; then
			apt-get update >>"$log" 2>&1 || true
			apt-get install -y docker-compose >>"$log" 2>&1 || tail -n 5 "$log" >&2
		fi
		rm -f "$log"
	fi
	if ! find_compose; then
		if [ "${COMPOSE_CHECK_REQUIRE:-}" = 1 ] || { [ -n "${CI:-}" ] && [ "${CI}" != false ]; }; then
			echo "FAIL: compose-check: neither 'docker compose' nor 'docker-compose' is available and it could not be installed (required in CI)" >&2
			exit 1
		fi
		echo "SKIP: compose-check: neither 'docker compose' nor 'docker-compose' is available and it could not be installed"
		exit 0
	fi
fi

deploy/compose/gen-secrets.sh >/dev/null

echo "compose-check: ${compose[*]} config -q ($("${compose[@]}" version --short 2>/dev/null || echo '?'))"
if ! "${compose[@]}" -f docker-compose.yml config -q; then
	echo "FAIL: compose-check: docker-compose.yml is invalid" >&2
	exit 1
fi
echo "compose-check: docker-compose.yml OK"
