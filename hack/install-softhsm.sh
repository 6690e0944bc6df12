#!/usr/bin/env bash
# SoftHSM2 (Debian package softhsm2), installed if missing: the token behind the local control plane's KMS v2
# plugin (Secrets encrypted at rest), `make demo KMS=softhsm` and the KMS/PKCS#11 tests. Run by `make install`.
set -euo pipefail
if command -v softhsm2-util >/dev/null &&
  ls /usr/lib/softhsm/libsofthsm2.so /usr/lib/*-linux-gnu/softhsm/libsofthsm2.so >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" != 0 ] && ! command -v sudo >/dev/null; then
  echo "install-softhsm: SoftHSM2 is missing; install the Debian package softhsm2 (as root)" >&2
  exit 1
fi
sudo=()
[ "$(id -u)" = 0 ] || sudo=(sudo)
echo "install-softhsm: installing softhsm2" >&2
apt=("${sudo[@]}" apt-get -o DPkg::Lock::Timeout=600 -y -q)
log=$(mktemp /tmp/apt-softhsm2.XXXXXX.log)
export DEBIAN_FRONTEND=noninteractive
if ! apt-cache show --no-all-versions softhsm2 >/dev/null 2>&1 ||
  ! "${apt[@]}" install --no-install-recommends softhsm2 >>"$log" 2>&1; then
  # No package lists yet, or stale ones (a 404 on a superseded .deb): refresh once and try again.
  "${apt[@]}" update >>"$log" 2>&1 && "${apt[@]}" install --no-install-recommends softhsm2 >>"$log" 2>&1 ||
    { echo "install-softhsm: apt-get failed; the end of $log:" >&2; tail -n 30 "$log" >&2; exit 1; }
fi
