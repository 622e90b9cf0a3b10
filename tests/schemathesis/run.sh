#!/usr/bin/env bash
# A bounded schemathesis run against the real daemon: `depositd dev` (SQLite and a local anvil)
# with a fresh API key, every operation of GET /openapi.json fuzzed with a fixed seed and a
# bounded number of examples. Any finding fails the run. Installs schemathesis (pinned, from PyPI)
# into a virtualenv of its own. Used by .ci/run; run it by hand from the repository root.
set -euo pipefail
cd "$(dirname "$0")/../.."

SCHEMATHESIS_VERSION=4.32.5
EXAMPLES="${SCHEMATHESIS_EXAMPLES:-100}"
SEED="${SCHEMATHESIS_SEED:-17}"
target="${CARGO_TARGET_DIR:-target}"
venv="$target/schemathesis-venv"

if ! "$venv/bin/schemathesis" --version 2>/dev/null | grep -q "$SCHEMATHESIS_VERSION"; then
  echo "--- installing schemathesis $SCHEMATHESIS_VERSION into $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
fi

cargo build --quiet --bin depositd
bin="$target/debug/depositd"

data="$(mktemp -d)"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
api_port="$(free_port)"
anvil_port="$(free_port)"
# The run sends thousands of requests with one key and many without one: lift the per-key and
# failed-authentication limits so that they answer what is asked, not 429.
DEPOSITD__API__RATE_LIMIT_PER_SECOND=1000000 DEPOSITD__API__RATE_LIMIT_BURST=1000000 \
DEPOSITD__API__AUTH_FAILURES_PER_MINUTE=1000000 DEPOSITD__INVOICES__CUSTOMER_RATE_LIMIT_PER_MINUTE=1000000 \
  "$bin" dev --data-dir "$data" --api-port "$api_port" --anvil-port "$anvil_port" >"$data/daemon.log" 2>&1 &
daemon=$!
cleanup() {
  kill -TERM "$daemon" 2>/dev/null || true
  wait "$daemon" 2>/dev/null || true
  rm -rf "$data"
}
trap cleanup EXIT

for _ in $(seq 120); do
  [ -s "$data/dev.json" ] && curl -fs "http://127.0.0.1:$api_port/healthz" >/dev/null 2>&1 && break
  kill -0 "$daemon" 2>/dev/null || { cat "$data/daemon.log" >&2; echo "schemathesis: the daemon exited" >&2; exit 1; }
  sleep 1
done
# The dev key holds the merchant scopes only; the fuzzing key holds every scope, so the key
# management and operator operations are fuzzed beyond their 403 too.
key="$("$bin" --config "$data/depositd.toml" api-key create --merchant "Demo Shop" --name schemathesis \
  --scope invoices:read,invoices:write,payouts:read,payouts:write,webhooks:read,webhooks:write,ledger:read,operator,api_keys:read,api_keys:write \
  2>>"$data/daemon.log")"

echo "--- schemathesis $SCHEMATHESIS_VERSION: $EXAMPLES examples per operation, seed $SEED"
SCHEMATHESIS_HOOKS=tests/schemathesis/hooks.py "$venv/bin/schemathesis" --config-file tests/schemathesis/schemathesis.toml run "http://127.0.0.1:$api_port/openapi.json" \
  --header "x-api-key: $key" \
  --max-examples "$EXAMPLES" --seed "$SEED" --workers 2 --generation-database none \
  --phases examples,coverage,fuzzing \
  --checks all \
  --no-color "$@"
