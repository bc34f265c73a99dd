#!/usr/bin/env bash
# Builds every function the way `sam deploy` ships it and checks the artifacts: `sam build` (release,
# arm64 from the template's Architectures, cross-compiled by cargo-lambda with zig, no Docker,
# nothing asked on stdin), then each .aws-sam/build/<Function>/bootstrap must exist, be an AArch64
# ELF, be stripped (profile.release: strip = true) and be at most 6 MiB. Prints every size.
#
# Run last by scripts/test-all.sh (which installs sam and cargo-lambda into .venv-tools); on its
# own: `bash scripts/sam-build-check.sh` after test-all.sh has made the venv once. The build goes to
# its own CARGO_TARGET_DIR (target/sam), so the day-to-day debug target/ is not rebuilt in release.
#
#   BOOTSTRAP_MAX_BYTES   the size limit (default 6291456, 6 MiB: the goal is <= 5.5 MiB, the
#                         bootstraps measured 5.2-5.3 MiB; a jump past 6 MiB is a regression)
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv-tools}
if [ -d "$VENV/bin" ]; then
  PATH="$(cd "$VENV/bin" && pwd):$PATH"
  export PATH
fi
export SAM_CLI_TELEMETRY=0
export CARGO_TARGET_DIR="$PWD/target/sam"
max_bytes=${BOOTSTRAP_MAX_BYTES:-$((6 * 1024 * 1024))}
build_dir=.aws-sam/build
target=aarch64-unknown-linux-gnu

log() { printf '\n== %s\n' "$*"; }

for tool in sam cargo-lambda cargo python; do
  command -v "$tool" >/dev/null || {
    echo "$tool is not on PATH: run scripts/test-all.sh once (it installs the pinned tools into $VENV)" >&2
    exit 1
  }
done
python -c 'import ziglang' 2>/dev/null || {
  echo "the ziglang package is missing from $(command -v python) (cargo-lambda links with it)" >&2
  exit 1
}
log "sam build: $(sam --version), $(cargo-lambda lambda --version), zig $(python -m ziglang version)"

# cargo-lambda would install the Rust target itself; doing it here says so in the log.
if command -v rustup >/dev/null && ! rustup target list --installed | grep -qx "$target"; then
  log "rustup target add $target"
  rustup target add "$target"
fi

# --no-use-container: no Docker (cargo-lambda is on PATH). --no-cached: samconfig.toml explains
# why not. The build dir is emptied by sam first, so a removed function leaves no stale bootstrap.
log "CARGO_TARGET_DIR=target/sam sam build --no-use-container --no-cached --build-dir $build_dir"
sam build --template-file template.yaml --build-dir "$build_dir" --no-use-container --no-cached </dev/null

log "bootstrap sizes (limit $max_bytes bytes)"
python - "$build_dir" "$max_bytes" <<'EOF'
"""Checks the bootstrap of every AWS::Serverless::Function in template.yaml."""
import struct
import sys
from pathlib import Path

from cfnlint.decode import cfn_yaml

build_dir, max_bytes = Path(sys.argv[1]), int(sys.argv[2])
EM_AARCH64, EM_X86_64, SHT_SYMTAB = 183, 62, 2


def elf_facts(data: bytes) -> tuple[str, bool]:
    """(architecture, stripped) of a 64-bit little-endian ELF file."""
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        return "not a 64-bit little-endian ELF", False
    machine = struct.unpack_from("<H", data, 18)[0]
    shoff = struct.unpack_from("<Q", data, 0x28)[0]
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    headers = [struct.unpack_from("<IIQQQQ", data, shoff + i * shentsize) for i in range(shnum)]
    names_at = headers[shstrndx][4] if shnum else 0

    def name(h):
        start = names_at + h[0]
        return data[start : data.index(b"\0", start)].decode()

    symbols = any(h[1] == SHT_SYMTAB or name(h).startswith(".debug_") for h in headers)
    return {EM_AARCH64: "aarch64", EM_X86_64: "x86_64"}.get(machine, f"e_machine {machine}"), not symbols


template = cfn_yaml.load("template.yaml")
functions = sorted(k for k, v in template["Resources"].items() if v.get("Type") == "AWS::Serverless::Function")
if not functions:
    sys.exit("template.yaml has no AWS::Serverless::Function")
problems = []
print(f"{'function':<28} {'bytes':>10} {'MiB':>6}  arch     stripped")
for fn in functions:
    path = build_dir / fn / "bootstrap"
    if not path.is_file():
        print(f"{fn:<28} {'-':>10} {'-':>6}  -        -")
        problems.append(f"{path}: missing")
        continue
    data = path.read_bytes()
    arch, stripped = elf_facts(data)
    size = len(data)
    print(f"{fn:<28} {size:>10} {size / 2**20:>6.2f}  {arch:<8} {'yes' if stripped else 'NO'}")
    if arch != "aarch64":
        problems.append(f"{path}: {arch}, not an arm64 build")
    if not stripped:
        problems.append(f"{path}: not stripped (profile.release should have strip = true)")
    if size > max_bytes:
        problems.append(f"{path}: {size} bytes ({size / 2**20:.2f} MiB) is over the {max_bytes}-byte limit")
if problems:
    print("\nbootstrap check FAILED:", *problems, sep="\n  ", file=sys.stderr)
    sys.exit(1)
print(f"\nall {len(functions)} bootstraps: arm64, stripped, at most {max_bytes} bytes")
EOF
