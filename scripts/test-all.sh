#!/usr/bin/env bash
# Runs every check costream has, exactly as CI does: the template lints (cfn-lint, sam validate),
# formatting, clippy, all cargo tests and the template tests (pytest), with the test tools installed
# into a repo-local venv (.venv-tools, git-ignored) and a moto DynamoDB server started on a free
# loopback port and stopped on exit, even when a step fails.
#
#   bash scripts/test-all.sh            # everything
#   SKIP_LINT=1 bash scripts/test-all.sh  # tests only
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=.venv-tools
PYTHON=${PYTHON:-python3}
# Pinned test tools. aws-sam-cli brings cfn-lint; event-ruler is the EventBridge pattern matcher of
# tests/template (moto's TestEventPattern is a stub). cargo-lambda is only needed for `sam build`,
# which is not part of the checks (docs/deploy.md).
TOOLS=("moto[server]==5.2.5" "aws-sam-cli==1.170.0" "pytest==9.2.0" "event-ruler==0.3.0")

log() { printf '\n== %s\n' "$*"; }

# --- tools -------------------------------------------------------------------------------------
# Reinstall when the pinned list changed (the stamp holds the list last installed).
stamp="$VENV/.costream-tools"
if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "${TOOLS[*]}" ]; then
  log "installing ${TOOLS[*]} into $VENV"
  [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "${TOOLS[@]}"
  printf '%s' "${TOOLS[*]}" >"$stamp"
fi
export PATH="$PWD/$VENV/bin:$PATH"
export SAM_CLI_TELEMETRY=0

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
  log "cfn-lint template.yaml"
  cfn-lint template.yaml
  log "sam validate --lint"
  # Offline; plain `sam validate` would want a region (it ignores AWS_REGION).
  AWS_DEFAULT_REGION=us-east-1 sam validate --lint --template template.yaml
  log "cargo fmt --check"
  cargo fmt --all -- --check
  log "cargo clippy"
  cargo clippy --workspace --all-targets --locked -- -D warnings
fi

log "cargo test --workspace"
cargo test --workspace --locked

log "pytest tests/template"
# Exit code 5 means pytest collected no test: that is a broken suite, not a pass.
rc=0
"$VENV/bin/python" -m pytest -p no:cacheprovider -q tests/template || rc=$?
if [ "$rc" -eq 5 ]; then
  echo "pytest collected no tests in tests/template" >&2
  exit 1
fi
exit "$rc"
