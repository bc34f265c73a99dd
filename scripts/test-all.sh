#!/usr/bin/env bash
# Runs every check costream has, exactly as CI does: formatting, clippy, and all tests, with the
# test tools installed into a repo-local venv (.venv-tools, git-ignored) and a moto DynamoDB server
# started on a free loopback port and stopped on exit, even when a step fails.
#
#   bash scripts/test-all.sh            # everything
#   SKIP_LINT=1 bash scripts/test-all.sh  # tests only
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=.venv-tools
MOTO_VERSION=5.2.5
PYTHON=${PYTHON:-python3}

log() { printf '\n== %s\n' "$*"; }

# --- tools -------------------------------------------------------------------------------------
if [ ! -x "$VENV/bin/moto_server" ]; then
  log "installing moto[server]==$MOTO_VERSION into $VENV"
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "moto[server]==$MOTO_VERSION"
fi
export PATH="$PWD/$VENV/bin:$PATH"

# --- moto DynamoDB on a free loopback port -----------------------------------------------------
port=$("$VENV/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')
mkdir -p target
moto_log=target/moto_server.log
log "starting moto_server on 127.0.0.1:$port (log: $moto_log)"
"$VENV/bin/moto_server" -H 127.0.0.1 -p "$port" >"$moto_log" 2>&1 &
moto_pid=$!
cleanup() { kill "$moto_pid" 2>/dev/null || true; wait "$moto_pid" 2>/dev/null || true; }
trap cleanup EXIT INT TERM
for _ in $(seq 1 100); do
  if "$VENV/bin/python" -c "import socket,sys; socket.create_connection(('127.0.0.1', $port), 0.2)" 2>/dev/null; then
    break
  fi
  sleep 0.1
done
kill -0 "$moto_pid" || { echo "moto_server failed to start:"; cat "$moto_log"; exit 1; }

export AWS_ENDPOINT_URL_DYNAMODB="http://127.0.0.1:$port"
export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_REGION=us-east-1
export AWS_EC2_METADATA_DISABLED=true

# --- checks ------------------------------------------------------------------------------------
if [ -z "${SKIP_LINT:-}" ]; then
  log "cargo fmt --check"
  cargo fmt --all -- --check
  log "cargo clippy"
  cargo clippy --workspace --all-targets --locked -- -D warnings
fi

log "cargo test --workspace"
cargo test --workspace --locked
