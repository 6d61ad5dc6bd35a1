#!/usr/bin/env bash
# One command sets up a fresh Debian 12 host of this kind and runs a job:
#   bash scripts/run.sh demo     # install everything, then run a real migration profiled live
#   bash scripts/run.sh test     # install everything, then run the whole test suite
#   bash scripts/run.sh setup    # install only
#   bash scripts/run.sh bench    # install, then run the benchmarks in bench/
# Idempotent: a second run installs nothing new. Needs root (apt, BPF, namespaces).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
MODE=${1:-test}
shift || true
export MIGPROF_CACHE=${MIGPROF_CACHE:-/var/cache/migprof}
mkdir -p "$MIGPROF_CACHE"

log() { printf 'setup: %s\n' "$*" >&2; }

APT_UPDATED=0
apt_update_once() {
  if [ "$APT_UPDATED" = 0 ]; then
    log "apt-get update"
    apt-get -o DPkg::Lock::Timeout=900 update -q >/dev/null
    APT_UPDATED=1
  fi
}
# need_pkgs PKG...: install the Debian packages that are not installed yet
need_pkgs() {
  local missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    apt_update_once
    log "apt-get install ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=900 install -y -q --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

if [ "$(id -u)" != 0 ]; then
  echo "scripts/run.sh: run as root (apt, BPF, network namespaces need it)" >&2
  exit 2
fi

# every step lives in scripts/setup.d, run in name order, sharing the helpers above
for step in scripts/setup.d/*.sh; do
  # shellcheck source=/dev/null
  . "$step"
done

case "$MODE" in
  setup) log "done" ;;
  test) exec .venv/bin/python -m pytest "$@" ;;
  demo) exec .venv/bin/migprof demo "$@" ;;
  bench) exec .venv/bin/python bench/run_all.py "$@" ;;
  *) echo "usage: scripts/run.sh demo|test|setup|bench" >&2; exit 2 ;;
esac
