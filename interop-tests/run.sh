#!/usr/bin/env bash
# Switchboard: the single test command of the project.
#
#   bash interop-tests/run.sh        (CI: bash .ci/run, as root, on Debian 12)
#
# 1. installs the external peers the tests drive, only when they are missing
#    (idempotent; apt-get update runs only if something must be installed);
# 2. runs the whole Rust test suite; the integration tests under tests/ start
#    the switchboard binary and run the SIPp scenarios of interop-tests/sipp/.
# Exits non-zero on any failure.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

section() { printf '\n==> %s\n' "$*"; }
die() { printf 'run.sh: error: %s\n' "$*" >&2; exit 1; }

# rustup installs into ~/.cargo/bin, which a non-login shell may not have on PATH.
if ! command -v cargo >/dev/null 2>&1 && [[ -x "${CARGO_HOME:-$HOME/.cargo}/bin/cargo" ]]; then
  export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
fi
command -v cargo >/dev/null 2>&1 || die "cargo not found (install the Rust toolchain first)"

# --------------------------------------------------------------------------
# 1. Test dependencies (Debian 12 packages)
# --------------------------------------------------------------------------
section "test dependencies"
apt_packages=()
command -v sipp >/dev/null 2>&1 || apt_packages+=(sip-tester)
command -v sipsak >/dev/null 2>&1 || apt_packages+=(sipsak)       # TLS OPTIONS test (Debian's SIPp has no TLS)
# libopus for the media engine's Opus codec (the `opus` crate links the system library).
dpkg -s libopus-dev >/dev/null 2>&1 || apt_packages+=(libopus-dev)
command -v pkg-config >/dev/null 2>&1 || apt_packages+=(pkg-config)
command -v cmake >/dev/null 2>&1 || apt_packages+=(cmake)

# Browser tests (interop-tests/browser: Debian's /usr/bin/chromium driven by playwright-core
# over CDP; never `npx playwright install`) and the node/npm that run them. node/npm also
# build the softphone: build.rs runs `npm ci` and esbuild in web/ during `cargo test`.
command -v chromium >/dev/null 2>&1 || apt_packages+=(chromium)
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  apt_packages+=(nodejs npm)
fi

# TURN tests use coturn's clients (turnutils_stunclient, turnutils_uclient, turnutils_peer) only.
command -v turnutils_uclient >/dev/null 2>&1 || apt_packages+=(coturn)

if ((${#apt_packages[@]} > 0)); then
  SUDO=()
  if [[ "$(id -u)" -ne 0 ]]; then
    command -v sudo >/dev/null 2>&1 || die "need root (or sudo) to install: ${apt_packages[*]}"
    SUDO=(sudo)
  fi
  echo "installing: ${apt_packages[*]}"
  export DEBIAN_FRONTEND=noninteractive
  "${SUDO[@]}" apt-get update -qq
  "${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${apt_packages[@]}"
  # The coturn package may start its daemon (where services run): it would hold 3478/5349.
  if [[ " ${apt_packages[*]} " == *" coturn "* ]]; then
    "${SUDO[@]}" systemctl disable --now coturn >/dev/null 2>&1 || true
    "${SUDO[@]}" service coturn stop >/dev/null 2>&1 || true
    for pidfile in /run/turnserver/turnserver.pid /var/run/turnserver.pid; do
      [[ -f "$pidfile" ]] && "${SUDO[@]}" kill "$(cat "$pidfile")" >/dev/null 2>&1 || true
    done
  fi
else
  echo "nothing to install"
fi

# npm packages of the browser harness, exactly as locked. Skipped when node_modules already
# matches package-lock.json (a stamp written after a successful `npm ci`).
browser_dir=interop-tests/browser
lock_sum="$(sha256sum "$browser_dir/package-lock.json" | cut -d' ' -f1)"
stamp="$browser_dir/node_modules/.switchboard-lock.sha256"
if [[ -f "$stamp" && "$(cat "$stamp")" == "$lock_sum" ]]; then
  echo "npm packages of $browser_dir: up to date"
else
  section "npm ci ($browser_dir)"
  (cd "$browser_dir" && npm ci --no-audit --no-fund)
  echo "$lock_sum" >"$stamp"
fi

echo "coturn clients: $(command -v turnutils_uclient)"
echo "sipsak: $(command -v sipsak)"
echo "sipp:  $(command -v sipp) ($(sipp -v 2>&1 | grep -o 'v[0-9][0-9.]*[^ ]*' | head -n1 || true))"
echo "chromium: $(chromium --version 2>/dev/null | head -n1)"
echo "node:  $(node --version), npm $(npm --version 2>/dev/null)"
echo "cargo: $(cargo --version)"
echo "rustc: $(rustc --version)"

# --------------------------------------------------------------------------
# 2. Rust tests (unit + integration; integration tests run the SIPp scenarios)
# --------------------------------------------------------------------------
section "cargo test --locked --no-fail-fast"
# A one-off build gains nothing from incremental compilation, whose caches were several GB;
# the disk use is printed so a full disk shows up as such.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
df -h . | tail -n1 || true
cargo test --locked --no-fail-fast

