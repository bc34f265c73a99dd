#!/usr/bin/env bash
# `costream serve` under load (docs/benchmarks.md, "serve under load").
#
# Builds `costream` and the load generator `costream-load` (release), starts
# `costream serve --store memory --mpu sim` (its defaults) on a free 127.0.0.1 port with the
# local default configuration, replays ROOMS rooms' ARTC callbacks over CONNECTIONS keep-alive
# connections, and prints one summary: callbacks/s, client-side latency percentiles, serve's CPU
# time and peak RSS (VmHWM). The run fails if any callback got a non-2xx answer or a transport
# error, or if any room did not end where its script says (checked through GET /_sim/tasks).
#
# Knobs (environment):
#   ROOMS=2000 CYCLES=5 HOST_LEAVES_EVERY=4   the workload (1 + 7 x CYCLES callbacks a room)
#   CONNECTIONS=64 LOAD_THREADS=1             the load generator's connections and threads
#   SERVE_LOG=warn                            serve's RUST_LOG (try `info`: one line per MPU call)
#   CARGO_TARGET_DIR                          where to build (default: target)
#   SKIP_BUILD=1                              use the binaries already built
#   COSTREAM_BIN=path                         measure another costream build (e.g. opt-level 3)
set -euo pipefail
cd "$(dirname "$0")/.."

ROOMS=${ROOMS:-2000}
CYCLES=${CYCLES:-5}
HOST_LEAVES_EVERY=${HOST_LEAVES_EVERY:-4}
CONNECTIONS=${CONNECTIONS:-64}
LOAD_THREADS=${LOAD_THREADS:-1}
SERVE_LOG=${SERVE_LOG:-warn}
target_dir=${CARGO_TARGET_DIR:-target}

if [[ ${SKIP_BUILD:-0} != 1 ]]; then
  echo "building costream and costream-load (profile serve: release at opt-level 3) in $target_dir ..." >&2
  cargo build --profile serve --locked --quiet \
    -p costream-cli --bin costream \
    -p costream-bench --bin costream-load
fi
costream=${COSTREAM_BIN:-$target_dir/serve/costream}
load=$target_dir/serve/costream-load
[[ -x $costream && -x $load ]] || { echo "missing $costream or $load (build them first)" >&2; exit 1; }

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
serve_log=$(mktemp -t costream-bench-serve.XXXXXX)
serve_pid=""
cleanup() {
  if [[ -n $serve_pid ]] && kill -0 "$serve_pid" 2>/dev/null; then
    kill "$serve_pid" 2>/dev/null || true
    wait "$serve_pid" 2>/dev/null || true
  fi
  rm -f "$serve_log"
}
trap cleanup EXIT INT TERM

# A clean environment: only the local defaults, plus a start cap above the run's Starts (the
# default, 120 a minute, would refuse most rooms' first task).
env -i PATH="$PATH" HOME="${HOME:-/tmp}" \
  RUST_LOG="$SERVE_LOG" \
  COSTREAM_MAX_STARTS_PER_MINUTE=100000 \
  "$costream" serve --listen "127.0.0.1:$port" >"$serve_log" 2>&1 &
serve_pid=$!

for _ in $(seq 1 200); do
  if curl -fsS -o /dev/null "http://127.0.0.1:$port/_sim/tasks" 2>/dev/null; then break; fi
  if ! kill -0 "$serve_pid" 2>/dev/null; then
    echo "costream serve exited:" >&2; cat "$serve_log" >&2; exit 1
  fi
  sleep 0.1
done

status_kb() { awk -v k="$1:" '$1 == k { print $2 }' "/proc/$serve_pid/status"; }
# utime + stime of serve, in clock ticks (fields 14 and 15, counted after the command name).
cpu_ticks() { sed 's/.*) //' "/proc/$serve_pid/stat" | awk '{ print $12 + $13 }'; }
clk_tck=$(getconf CLK_TCK)

rss_idle=$(status_kb VmRSS)
ticks_before=$(cpu_ticks)
start_ns=$(date +%s%N)
load_status=0
load_out=$("$load" --addr "127.0.0.1:$port" --rooms "$ROOMS" --cycles "$CYCLES" \
  --host-leaves-every "$HOST_LEAVES_EVERY" --connections "$CONNECTIONS" \
  --threads "$LOAD_THREADS" --clk-tck "$clk_tck" 2>&1) || load_status=$?
end_ns=$(date +%s%N)
ticks_after=$(cpu_ticks)
rss_peak=$(status_kb VmHWM)
rss_after=$(status_kb VmRSS)
log_lines=$(wc -l <"$serve_log")

wall_s=$(awk -v a="$start_ns" -v b="$end_ns" 'BEGIN { printf "%.2f", (b - a) / 1e9 }')
serve_cpu_s=$(awk -v t=$((ticks_after - ticks_before)) -v hz="$clk_tck" 'BEGIN { printf "%.2f", t / hz }')
serve_cpu_pct=$(awk -v c="$serve_cpu_s" -v w="$wall_s" 'BEGIN { printf "%.0f", (w > 0 ? 100 * c / w : 0) }')
cpu_model=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)

cat <<EOF
=== costream serve under load ===
machine:           $(nproc) cores (${cpu_model:-unknown CPU}), load average $(cut -d' ' -f1-3 /proc/loadavg) at the end
serve:             --store memory --mpu sim, RUST_LOG=$SERVE_LOG, $(du -h "$costream" | cut -f1) binary
$load_out
serve cpu:         ${serve_cpu_s} s over ${wall_s} s (load + check), ${serve_cpu_pct}% of one core
serve memory:      VmRSS ${rss_idle} kB idle, VmHWM ${rss_peak} kB peak, VmRSS ${rss_after} kB after
serve log:         ${log_lines} lines
EOF
if [[ $load_status -ne 0 ]]; then
  echo "FAILED (costream-load exited $load_status); serve's log, last 20 lines:" >&2
  tail -n 20 "$serve_log" >&2
  exit "$load_status"
fi
