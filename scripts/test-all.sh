#!/usr/bin/env bash
# Runs every check costream has, exactly as CI does: the template lints (cfn-lint, sam validate),
# formatting, clippy, all cargo tests, the template tests (pytest) and last a release `sam build`
# whose bootstraps are checked (scripts/sam-build-check.sh). The test tools are installed into a
# repo-local venv (.venv-tools, git-ignored) and a moto DynamoDB server is started on a free
# loopback port and stopped on exit, even when a step fails.
#
#   bash scripts/test-all.sh                      # everything
#   SKIP_LINT=1 bash scripts/test-all.sh          # no cfn-lint, sam validate, fmt, clippy, cargo deny
#   SKIP_SAM_BUILD=1 bash scripts/test-all.sh     # no sam build (~10 min); ignored when CI=true
#   PYTHON=python3.13 bash scripts/test-all.sh    # the venv's interpreter: CPython 3.10 to 3.13
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv-tools}
PYTHON=${PYTHON:-python3}
# Pinned test tools. aws-sam-cli brings cfn-lint. cargo-lambda is what `sam build` runs for
# `BuildMethod: rust-cargolambda`; it cross-compiles to arm64 with zig from the ziglang wheel
# (`python3 -m ziglang`), pinned to the zig cargo-lambda 1.9.2 is tested with (its CI: 0.14.0)
# instead of whatever is newest. tomli is tomllib for Python 3.10.
# event-ruler is the real EventBridge pattern matcher of tests/template/test_routing.py (moto's
# TestEventPattern is a stub). 0.3.0 has wheels only for CPython 3.10/3.11 on manylinux x86_64 and
# macOS arm64, and no sdist, so its marker installs it exactly there; elsewhere the routing test
# runs its Python fallback (tests/template/eventbridge_fallback.py) and says so.
TOOLS=(
  "moto[server]==5.2.5"
  "aws-sam-cli==1.170.0"
  "pytest==9.2.0"
  "cargo-lambda==1.9.2"
  "ziglang==0.14.0"
  'tomli==2.2.1; python_version < "3.11"'
  'event-ruler==0.3.0; python_version >= "3.10" and python_version < "3.12" and ((sys_platform == "linux" and platform_machine == "x86_64") or (sys_platform == "darwin" and platform_machine == "arm64"))'
)

log() { printf '\n== %s\n' "$*"; }

# The supply-chain checker (see the checks below).
CARGO_DENY_VERSION=0.20.2

# --- tools -------------------------------------------------------------------------------------
py_version() { "$1" -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])'; }
want=$(py_version "$PYTHON") || { echo "no Python at PYTHON=$PYTHON" >&2; exit 1; }
case "$want" in
  3.1[0-3].*) ;;
  [0-2].* | 3.[0-9].*) echo "$PYTHON is Python $want; the tools need 3.10 to 3.13" >&2; exit 1 ;;
  *) echo "warning: $PYTHON is Python $want; the tools are checked on 3.10 to 3.13" >&2 ;;
esac
# A venv built by another interpreter version is rebuilt; otherwise the pinned tools are
# (re)installed when their list changed (the stamp holds the list last installed).
have=$(py_version "$VENV/bin/python" 2>/dev/null || true)
if [ "$have" != "$want" ]; then
  if [ -e "$VENV" ] && [ ! -f "$VENV/pyvenv.cfg" ]; then
    echo "$VENV exists and is not a venv: not replacing it" >&2
    exit 1
  fi
  log "creating $VENV with $PYTHON (Python $want${have:+, replacing Python $have})"
  "$PYTHON" -m venv --clear "$VENV"
fi
stamp="$VENV/.costream-tools"
if [ "$(cat "$stamp" 2>/dev/null)" != "${TOOLS[*]}" ]; then
  log "installing into $VENV (Python $want):$(printf '\n  %s' "${TOOLS[@]}")"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "${TOOLS[@]}"
  printf '%s' "${TOOLS[*]}" >"$stamp"
fi
VENV=$(cd "$VENV" && pwd)
export PATH="$VENV/bin:$PATH"
export SAM_CLI_TELEMETRY=0

# --- Chromium for the live view's browser test (cli/tests/view.rs) -----------------------------
# The test fails without it (it never skips): install Debian's chromium when CHROMIUM (default
# /usr/bin/chromium) does not run, as root or through sudo; apt-get update only if that fails.
export CHROMIUM=${CHROMIUM:-/usr/bin/chromium}
if [ ! -x "$CHROMIUM" ]; then
  log "installing chromium (none at CHROMIUM=$CHROMIUM; the live view test needs it)"
  as_root=""
  if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null; then
    as_root=sudo
  fi
  if ! command -v apt-get >/dev/null || { [ "$(id -u)" -ne 0 ] && [ -z "$as_root" ]; }; then
    echo "cannot install Chromium (needs apt-get, and root or sudo): install it and set CHROMIUM" >&2
    exit 1
  fi
  apt_install() {
    $as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      chromium fonts-liberation
  }
  apt_install || { $as_root apt-get update && apt_install; } || {
    echo "apt-get could not install chromium: install it and set CHROMIUM" >&2
    exit 1
  }
  if [ ! -x "$CHROMIUM" ]; then
    echo "chromium installed, but CHROMIUM=$CHROMIUM is not executable: set CHROMIUM" >&2
    exit 1
  fi
fi
echo "chromium: $("$CHROMIUM" --version 2>/dev/null || echo "$CHROMIUM")"

# --- moto DynamoDB on a free loopback port -----------------------------------------------------
port=$("$VENV/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')
mkdir -p target
moto_log=target/moto_server.log
log "starting moto_server on 127.0.0.1:$port (log: $moto_log)"
# Through a wrapper that handles one request at a time: moto's threaded server lets two
# conditional writes on the same version both succeed (see the script).
"$VENV/bin/python" scripts/moto_server_atomic.py -H 127.0.0.1 -p "$port" >"$moto_log" 2>&1 &
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
  # Supply chain: licences, bans and sources of every dependency (deny.toml). cargo-deny is
  # pinned and built into the tools venv once (about 2 minutes); advisories need the RustSec
  # database over the network, so they are not part of this offline check.
  deny_root="$VENV/cargo-deny-$CARGO_DENY_VERSION"
  if [ ! -x "$deny_root/bin/cargo-deny" ]; then
    log "installing cargo-deny $CARGO_DENY_VERSION into $deny_root"
    cargo install --quiet --locked --root "$deny_root" "cargo-deny@$CARGO_DENY_VERSION"
  fi
  log "cargo deny check bans licenses sources"
  "$deny_root/bin/cargo-deny" check bans licenses sources
fi

log "crate boundaries"
# The core's purity is its manifest: serde and thiserror are its only normal dependencies.
core_deps=$(cargo tree --locked -p costream-core -e normal --depth 1 --prefix none | tail -n +2 | awk '{print $1}' | sort -u | tr '\n' ' ')
if [ "$core_deps" != "serde thiserror " ]; then
  echo "costream-core must depend on serde and thiserror only, found: $core_deps" >&2
  exit 1
fi
# No Lambda function carries the web framework or the simulated Live API.
for manifest in functions/*/Cargo.toml; do
  fn=$(basename "$(dirname "$manifest")")
  leaked=$(cargo tree --locked -p "$fn" -e normal --prefix none | awk '{print $1}' | grep -xE 'axum|costream-sim' | sort -u | tr '\n' ' ' || true)
  if [ -n "$leaked" ]; then
    echo "function $fn depends on $leaked" >&2
    exit 1
  fi
  echo "$fn: no axum, no costream-sim"
done

log "cargo test --workspace"
cargo test --workspace --locked

# The deterministic simulation beyond the fast slice `cargo test` ran: COSTREAM_SIM_SEEDS seeds
# (default 10,000) from a fresh, printed base seed; a failure prints its replay line.
log "deterministic simulation: ${COSTREAM_SIM_SEEDS:=10000} seeds"
# --workspace keeps the feature resolution of the run above, so nothing is rebuilt.
COSTREAM_SIM_SEEDS=$COSTREAM_SIM_SEEDS cargo test --workspace --locked --test dst -- bulk --nocapture

log "pytest tests/template"
# Which EventBridge matcher the routing test runs (event-ruler, or only the Python fallback where
# event-ruler has no wheel): said here and again in pytest's last lines.
"$VENV/bin/python" -c 'import sys; sys.path.insert(0, "tests/template"); import matchers; print(matchers.describe())'
# Exit code 5 means pytest collected no test: that is a broken suite, not a pass.
rc=0
"$VENV/bin/python" -m pytest -p no:cacheprovider -q -rs tests/template || rc=$?
if [ "$rc" -eq 5 ]; then
  echo "pytest collected no tests in tests/template" >&2
  exit 1
fi
[ "$rc" -eq 0 ] || exit "$rc"

# --- release build ------------------------------------------------------------------------------
# The artifacts `sam deploy` ships: arm64, cross-compiled without Docker, each bootstrap checked.
# Last, because it is the slowest step (minutes on a cold target/sam). CI never skips it.
ci=false
case "${CI:-}" in true | TRUE | True | 1) ci=true ;; esac
if [ "${SKIP_SAM_BUILD:-0}" != 0 ] && [ "$ci" = false ]; then
  log "sam build: SKIPPED (SKIP_SAM_BUILD=$SKIP_SAM_BUILD)"
else
  [ "${SKIP_SAM_BUILD:-0}" = 0 ] || echo "CI=$CI: ignoring SKIP_SAM_BUILD=$SKIP_SAM_BUILD, CI always builds"
  cleanup # moto is not needed any more
  VENV="$VENV" bash scripts/sam-build-check.sh
fi
