#!/usr/bin/env bash
# The Debian packages the tests and the demo need beyond a compiler toolchain, installed if missing (run by
# `make install`): softhsm2, the token behind the local control plane's KMS v2 plugin (Secrets encrypted at
# rest), `make demo KMS=softhsm` and the KMS/PKCS#11 tests; zsh and fish, whose completion scripts for the
# kubectl plugin the tests parse; openssh-server and openssh-client, the real sshd hosts (and the client that
# checks their logins) of the sshKey.hosts tests. (PostgreSQL and MariaDB come from hack/databases.sh.)
set -euo pipefail
missing=()
if ! command -v softhsm2-util >/dev/null ||
  ! ls /usr/lib/softhsm/libsofthsm2.so /usr/lib/*-linux-gnu/softhsm/libsofthsm2.so >/dev/null 2>&1; then
  missing+=(softhsm2)
fi
command -v zsh >/dev/null || missing+=(zsh)
command -v fish >/dev/null || missing+=(fish)
[ -x /usr/sbin/sshd ] || missing+=(openssh-server)
command -v ssh >/dev/null || missing+=(openssh-client)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ] && ! command -v sudo >/dev/null; then
  echo "install-debian-packages: missing ${missing[*]}; install these Debian packages (as root)" >&2
  exit 1
fi
sudo=()
[ "$(id -u)" = 0 ] || sudo=(sudo)
echo "install-debian-packages: installing ${missing[*]}" >&2
apt=("${sudo[@]}" apt-get -o DPkg::Lock::Timeout=600 -y -q)
log=$(mktemp /tmp/apt-packages.XXXXXX.log)
export DEBIAN_FRONTEND=noninteractive
if ! apt-cache show --no-all-versions softhsm2 >/dev/null 2>&1 ||
  ! "${apt[@]}" install --no-install-recommends "${missing[@]}" >>"$log" 2>&1; then
  # No package lists yet, or stale ones (a 404 on a superseded .deb): refresh once and try again.
  "${apt[@]}" update >>"$log" 2>&1 && "${apt[@]}" install --no-install-recommends "${missing[@]}" >>"$log" 2>&1 ||
    { echo "install-debian-packages: apt-get failed; the end of $log:" >&2; tail -n 30 "$log" >&2; exit 1; }
fi
