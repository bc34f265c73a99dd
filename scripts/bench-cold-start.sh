#!/usr/bin/env bash
# Cold-start benchmark (issue 14, item 4): every Lambda function of functions/* started fresh
# under a local Lambda Runtime API emulator (bench/coldstart/emulator.py) against moto (DynamoDB,
# Secrets Manager) and the repository's signature-checking simulated Live API, side by side with
# the same stream-published handler written in Python on the official SDKs (boto3,
# alibabacloud-live20161101) under awslambdaric. Prints, per function, the medians of init time,
# first-invoke time and peak RSS, the requests made, and the Rust/Python ratios.
#
#   bash scripts/bench-cold-start.sh                 # 11 measured cold starts per row
#   RUNS=25 bash scripts/bench-cold-start.sh         # more
#   BENCH_REV=HEAD bash scripts/bench-cold-start.sh  # build a commit (git archive), not the tree
#   SKIP_BUILD=1 bash scripts/bench-cold-start.sh    # reuse the binaries already built
#
# Host build (x86_64 or whatever this machine is), release profile of the workspace, into
# CARGO_TARGET_DIR (default target/bench); the measured binaries are copied to
# $CARGO_TARGET_DIR/coldstart/bin, every process's output goes to .../coldstart/logs and every
# measurement to .../coldstart/results.json. The pinned Python tools (bench/coldstart/
# requirements.txt) go into bench/coldstart/.venv (git-ignored; the first run needs PyPI).
# Everything it starts (moto, the simulator, the functions) is stopped on exit, failure included.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BENCH=$ROOT/bench/coldstart
VENV=${VENV:-$BENCH/.venv}
PYTHON=${PYTHON:-python3}
RUNS=${RUNS:-11}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target/bench}
OUT=$CARGO_TARGET_DIR/coldstart
FUNCTIONS=(stream-published stream-unpublished cdn-ingest room-status room-host room-settings repair)

log() { printf '\n== %s\n' "$*" >&2; }

pids=()
src_tmp=""
cleanup() {
  local i
  # Last started first: the driver (and the function it runs) before the fakes it uses.
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    kill "${pids[i]}" 2>/dev/null || true
    wait "${pids[i]}" 2>/dev/null || true
  done
  if [ -n "$src_tmp" ]; then rm -rf "$src_tmp"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mkdir -p "$OUT"
rm -rf "$OUT/logs"

# --- Python tools (pinned) -----------------------------------------------------------------------
if [ ! -x "$VENV/bin/python" ]; then
  log "creating $VENV"
  "$PYTHON" -m venv "$VENV"
fi
stamp="$VENV/.requirements"
if ! cmp -s "$BENCH/requirements.txt" "$stamp"; then
  log "installing $BENCH/requirements.txt into $VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check -r "$BENCH/requirements.txt"
  cp "$BENCH/requirements.txt" "$stamp"
fi
# Byte-code caches, as a deployment package built by pip has them (this machine may set
# PYTHONDONTWRITEBYTECODE; Lambda loads .pyc files shipped in the package).
env -u PYTHONDONTWRITEBYTECODE "$VENV/bin/python" -m compileall -q "$VENV/lib" "$BENCH/python" >/dev/null || true

# --- builds --------------------------------------------------------------------------------------
SRC=$ROOT
if [ -n "${BENCH_REV:-}" ]; then
  src_tmp=$CARGO_TARGET_DIR/src-$(git rev-parse --short "$BENCH_REV")
  rm -rf "$src_tmp" && mkdir -p "$src_tmp"
  log "building $BENCH_REV (git archive into $src_tmp)"
  git archive "$BENCH_REV" | tar -x -C "$src_tmp"
  SRC=$src_tmp
fi
BIN=$OUT/bin # the binaries measured, copied here (another build may replace target/*/release)
if [ -z "${SKIP_BUILD:-}" ]; then
  mkdir -p "$BIN"
  patched=""
  [ "$SRC" = "$ROOT" ] || patched=$SRC # already a copy of its own
  for f in "${FUNCTIONS[@]}"; do
    log "cargo build --release -p $f (CARGO_TARGET_DIR=$CARGO_TARGET_DIR)"
    if ! (cd "$SRC" && cargo build --release --locked -p "$f" 2>&1 | tee "$OUT/build-$f.log" >&2; exit "${PIPESTATUS[0]}"); then
      # For older revisions (e.g. BENCH_REV=b65cb39): before the functions declared
      # #![recursion_limit = "256"], the stream functions' async main overflowed rustc's query
      # depth in a release build ("queries overflow the depth limit"). Build such a function from
      # a copy of the sources with that attribute added (it changes no code, only the compiler's
      # limit); the tree itself is never edited.
      grep -q 'queries overflow the depth limit' "$OUT/build-$f.log" || exit 1
      if [ -z "$patched" ]; then
        patched=$OUT/src-patched
        mkdir -p "$patched"
        # Tracked and untracked, not ignored, files, with their mtimes (so reruns reuse builds).
        (cd "$SRC" && git ls-files -z --cached --others --exclude-standard |
          tar --null --ignore-failed-read -T - -cf - 2>/dev/null) | tar -x -C "$patched"
      fi
      main_rs=$patched/functions/$f/src/main.rs
      grep -q 'recursion_limit' "$main_rs" || sed -i '1i #![recursion_limit = "256"]' "$main_rs"
      log "WARNING: $f does not build as is (see $OUT/build-$f.log); building it from $patched with #![recursion_limit = \"256\"] added"
      (cd "$patched" && cargo build --release --locked -p "$f")
    fi
    cp "$CARGO_TARGET_DIR/release/$f" "$BIN/$f"
  done
  # The simulated Live API as a server: a crate of its own (not a workspace member), built with
  # the workspace's lock file so it uses the same dependency versions.
  log "cargo build --release live-sim"
  sim_dir=$OUT/live-sim-src
  rm -rf "$sim_dir" && mkdir -p "$sim_dir/src"
  cp "$BENCH/live-sim/src/main.rs" "$sim_dir/src/"
  sed "s#\.\./\.\./\.\./shared/#$SRC/shared/#" "$BENCH/live-sim/Cargo.toml" >"$sim_dir/Cargo.toml"
  cp "$SRC/Cargo.lock" "$sim_dir/Cargo.lock"
  (cd "$sim_dir" && cargo build --release --offline)
  cp "$CARGO_TARGET_DIR/release/live-sim" "$BIN/live-sim"
fi
for f in "${FUNCTIONS[@]}" live-sim; do
  [ -x "$BIN/$f" ] || { echo "missing $BIN/$f (run without SKIP_BUILD)" >&2; exit 1; }
done

# --- moto (DynamoDB + Secrets Manager) and the simulated Live API on free loopback ports ---------
free_port() { "$VENV/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'; }
wait_port() {
  local i
  for i in $(seq 1 200); do
    "$VENV/bin/python" -c "import socket; socket.create_connection(('127.0.0.1', $1), 0.2)" 2>/dev/null && return 0
    kill -0 "$2" 2>/dev/null || return 1
    sleep 0.1
  done
  return 1
}
moto_port=$(free_port)
moto_log=$OUT/moto_server.log
log "moto_server on 127.0.0.1:$moto_port (log: $moto_log)"
# The repository's wrapper (one request at a time: DynamoDB's conditional-write atomicity).
"$VENV/bin/python" "$SRC/scripts/moto_server_atomic.py" -H 127.0.0.1 -p "$moto_port" >"$moto_log" 2>&1 &
pids+=($!)
wait_port "$moto_port" "${pids[-1]}" || { echo "moto_server did not start:" >&2; cat "$moto_log" >&2; exit 1; }

sim_out=$OUT/live-sim.out
log "simulated Live API (log: $sim_out)"
# The same throwaway AccessKey as the secret bench.py creates.
ALIBABA_CLOUD_ACCESS_KEY_ID=bench-key-id ALIBABA_CLOUD_ACCESS_KEY_SECRET=bench-key-secret \
  "$BIN/live-sim" 127.0.0.1:0 >"$sim_out" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do
  live_url=$(head -n 1 "$sim_out" 2>/dev/null || true)
  case "$live_url" in http://*/) break ;; esac
  kill -0 "${pids[-1]}" 2>/dev/null || { echo "live-sim did not start:" >&2; cat "$sim_out" >&2; exit 1; }
  sleep 0.1
done
case "$live_url" in http://*/) ;; *) echo "live-sim printed no address" >&2; exit 1 ;; esac

# --- the run -------------------------------------------------------------------------------------
log "binaries ($(uname -m), release profile): $(for f in "${FUNCTIONS[@]}"; do stat -c '%n %s' "$BIN/$f"; done | awk '{n=split($1, p, "/"); printf "%s%s %.1f MB", (NR>1 ? ", " : ""), p[n], $2/1e6}')"
log "python: $("$VENV/bin/python" --version 2>&1), $(grep -E '^(boto3|alibabacloud-live20161101|awslambdaric)==' "$BENCH/requirements.txt" | tr '\n' ' ')"
log "cold starts: $RUNS measured rounds (+1 warm-up), logs in $OUT/logs"
# In the background and waited for, so that a signal reaches the traps at once (bench.py kills
# the function process it has running when it gets SIGTERM).
(cd "$BENCH" && exec "$VENV/bin/python" bench.py \
  --moto "http://127.0.0.1:$moto_port" --moto-log "$moto_log" --live "$live_url" \
  --bin-dir "$BIN" --python "$VENV/bin/python" --runs "$RUNS" \
  --logs "$OUT/logs" --json "$OUT/results.json" --template "$SRC/template.yaml") &
pids+=($!)
wait "${pids[-1]}"
