#!/usr/bin/env bash
# Bursts of concurrent callbacks into one room on DynamoDB (docs/benchmarks.md, "bursts").
#
# Starts moto (through scripts/moto_server_atomic.py: one request at a time, so conditional
# writes are atomic as DynamoDB's) on a free 127.0.0.1 port, and runs the `bench_burst`
# scenario of tests/it/burst.rs in a release build: for each burst size, RUNS rooms in which the
# host goes live, the co-hosts join and publish at once (one callback each, spread over three
# containers with their own process copies), then all leave at once. Prints one line per size:
# give-ups, writes left to the repair loop, time-to-right after the last answer (p50/p99/max),
# the time to answer a burst, and conflicts, appends and DynamoDB requests per callback.
#
# Knobs (environment):
#   SIZES=20,50,100   burst sizes
#   RUNS=10           rooms per size (two bursts each: join, leave)
#   VENV=.venv-tools  where moto is (scripts/test-all.sh installs it there)
set -euo pipefail
cd "$(dirname "$0")/.."

SIZES=${SIZES:-20,50,100}
RUNS=${RUNS:-10}
VENV=${VENV:-.venv-tools}
if ! "$VENV/bin/python" -c 'import moto' 2>/dev/null; then
  echo "no moto in $VENV: run scripts/test-all.sh once (it installs the tools), or set VENV" >&2
  exit 1
fi

echo "building the integration tests (release) ..." >&2
cargo test --release --locked -p integration-tests --test it --no-run --quiet 2>/dev/null ||
  cargo test --release --locked -p integration-tests --test it --no-run

port=$("$VENV/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')
moto_log=$(mktemp -t costream-bench-moto.XXXXXX)
"$VENV/bin/python" scripts/moto_server_atomic.py -H 127.0.0.1 -p "$port" >"$moto_log" 2>&1 &
moto_pid=$!
cleanup() {
  kill "$moto_pid" 2>/dev/null || true
  wait "$moto_pid" 2>/dev/null || true
  rm -f "$moto_log"
}
trap cleanup EXIT INT TERM
for _ in $(seq 1 100); do
  if "$VENV/bin/python" -c "import socket; socket.create_connection(('127.0.0.1', $port), 0.2)" 2>/dev/null; then
    break
  fi
  sleep 0.1
done

cpu_model=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo 2>/dev/null || true)
echo "=== bursts into one room on moto ($(nproc) cores, ${cpu_model:-unknown CPU}; $RUNS rooms per size) ==="
AWS_ENDPOINT_URL_DYNAMODB="http://127.0.0.1:$port" \
  AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_REGION=us-east-1 \
  AWS_EC2_METADATA_DISABLED=true \
  COSTREAM_BURST_SIZES="$SIZES" COSTREAM_BURST_RUNS="$RUNS" \
  cargo test --release --locked -q -p integration-tests --test it burst::bench_burst -- \
  --ignored --exact --nocapture 2>&1 | grep -v -e '^running ' -e '^test result' -e '^$' -e '^test burst::bench_burst' -e '^\.$'
