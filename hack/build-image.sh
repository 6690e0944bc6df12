#!/usr/bin/env bash
# Builds the operator image from the repository's Dockerfile without Docker and without a registry, on a Debian
# 12 machine as root (the project's development and CI machines):
#
#   1. installs buildah, crun, debootstrap and debian-archive-keyring from Debian packages if they are missing
#      (`apt-get update` only when the package lists do not know them, or an install fails on stale lists);
#   2. makes a minimal Debian bookworm root filesystem with python3, python3-venv and ca-certificates
#      (debootstrap, then the bookworm-updates and bookworm-security updates), cached as a tarball under
#      ${MSO_CACHE_DIR:-${XDG_CACHE_HOME:-~/.cache}/managed-secrets-operator}/image-base/<stamp>/, and imports it
#      as the local image localhost/managed-secrets-operator-base:<stamp>;
#   3. removes older images of the operator and leftover working containers, then runs `buildah bud` on the
#      Dockerfile with PYTHON_IMAGE set to that local base, tagging localhost/managed-secrets-operator:<version
#      from pyproject.toml>;
#   4. smoke-checks the image: its config (user 65532, entrypoint managed-secrets-operator) and
#      `managed-secrets-operator --help` run inside it as 65532:65532 (buildah's chroot isolation).
#
# pip inside the build must reach PyPI the way this machine does: the build's RUN steps get a read-only bind
# mount at /etc/xdg/pip (pip's site-wide configuration directory, an empty directory in the base, so nothing
# of it is committed to a layer) holding a CA bundle made of every bundle this machine trusts (the system one,
# /usr/local/share/ca-certificates, PIP_CERT, REQUESTS_CA_BUNDLE, SSL_CERT_FILE, CURL_CA_BUNDLE) and a pip.conf
# naming it (plus index-url/extra-index-url/trusted-host from PIP_* or the machine's pip.conf). Proxy variables
# pass through (buildah's --http-proxy; an apt proxy is used when no http(s)_proxy is set). The image itself
# carries only Debian's ca-certificates, never this machine's (possibly intercepting) proxy CA.
#
# Progress and timings go to stderr; stdout gets two lines for scripts:
#   image=localhost/managed-secrets-operator:<version>
#   storage_driver=<driver>     (use `buildah --storage-driver <driver> ...` to see the image)
#
# Environment:
#   MSO_STORAGE_DRIVER  auto (default), overlay or vfs. auto = overlay when the kernel can mount overlayfs where
#                       the image store lives (about 2.5 times faster and a third less disk than vfs, and what
#                       a plain `buildah images` / `podman images` shows), else vfs (works everywhere, copies
#                       every layer in full). A store keeps images per driver: this script's images left under
#                       the other driver are removed.
#   DEBIAN_MIRROR, DEBIAN_SECURITY_MIRROR  default: the ones in this machine's apt sources.
#   MSO_CACHE_DIR, XDG_CACHE_HOME          where the base tarball is cached (see 2.).
# Safe to run again: the cached base is reused, the previous image of the same name and this script's leftover
# working containers are removed first (disk use stays at one base and one image). Bump BASE_REVISION, or delete
# the cache directory, to remake the base with the latest Debian updates.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

NAME=managed-secrets-operator
SUITE=bookworm
# Bump BASE_REVISION when the way the base is made changes: it is part of the cache key.
BASE_REVISION=2
BASE_PACKAGES=python3,python3-venv,python-is-python3,ca-certificates
# The operator user of the Dockerfile.
UID_EXPECTED=65532
# pip's site-wide configuration directory (XDG_CONFIG_DIRS/pip). The base has it as an empty directory, so the
# build can bind-mount this machine's pip.conf and CA bundle there without leaving a mount point in any layer.
BUILD_PIP_DIR=/etc/xdg/pip

say() { echo "build-image: $*" >&2; }
die() {
  say "FAILED: $*"
  exit 1
}
started=$SECONDS
phase_start=$SECONDS
phase() {
  say "$1 in $((SECONDS - phase_start))s"
  phase_start=$SECONDS
}

[ "$(id -u)" -eq 0 ] || die "must run as root (debootstrap and buildah's chroot isolation need it): sudo bash $0"
[ -f Dockerfile ] && [ -f pyproject.toml ] || die "no Dockerfile or pyproject.toml in $repo"
grep -q '^ARG PYTHON_IMAGE' Dockerfile || die "the Dockerfile has no 'ARG PYTHON_IMAGE' to point at the local base"

version=$(sed -n 's/^__version__ *= *"\([^"]*\)".*/\1/p' src/managed_secrets/__init__.py | head -n 1)
[ -n "$version" ] || die "no __version__ in src/managed_secrets/__init__.py (the one place the version is written)"
image=localhost/$NAME:$version
driver=${MSO_STORAGE_DRIVER:-auto}
stamp=$SUITE-r$BASE_REVISION-$(printf '%s\n' "$BASE_PACKAGES" | sha256sum | cut -c1-8)
base_image=localhost/$NAME-base:$stamp
cache=${MSO_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/$NAME}/image-base
base_dir=$cache/$stamp
base_tar=$base_dir/rootfs.tar
mkdir -p "$cache"

bah() { buildah --storage-driver "$driver" "$@"; }

# --- cleanup -----------------------------------------------------------------------------------------------

mounts_under() { findmnt -rn -o TARGET | grep -F "$1/" || true; }
tmp=$(mktemp -d /tmp/mso-build-image.XXXXXX)
work=
containers=()
cleanup() {
  local rc=$? c m
  for c in "${containers[@]}"; do
    bah rm "$c" >/dev/null 2>&1 || true
  done
  if [ -n "$work" ] && [ -d "$work" ]; then
    # debootstrap mounts /proc and /sys inside its target; never delete through a mount.
    mounts_under "$work" | sort -r | while read -r m; do umount -l "$m" || true; done
    rm -rf --one-file-system "$work"
  fi
  rm -rf "$tmp"
  [ "$rc" -eq 0 ] || say "failed after $((SECONDS - started))s"
}
trap cleanup EXIT
trap 'say "FAILED at line $LINENO: $BASH_COMMAND"' ERR

# One build at a time (the test and a developer may run this together).
exec 9>"$cache/.lock"
flock -w 1800 9 || die "another build holds $cache/.lock"
# Work directories of runs that were killed before their cleanup (this run holds the lock, so none is in use).
for stale in "$cache"/.work.*; do
  [ -d "$stale" ] || continue
  say "removing the stale work directory $stale"
  mounts_under "$stale" | sort -r | while read -r m; do umount -l "$m" || true; done
  rm -rf --one-file-system "$stale"
done

# --- packages ----------------------------------------------------------------------------------------------

install_packages() {
  local wanted=() log=$tmp/apt.log rc=0 updated=
  command -v buildah >/dev/null || wanted+=(buildah)
  command -v debootstrap >/dev/null || wanted+=(debootstrap)
  # An OCI runtime is only a Recommends of buildah; chroot isolation hardly uses it, but buildah expects one.
  command -v crun >/dev/null || command -v runc >/dev/null || wanted+=(crun)
  [ -f /usr/share/keyrings/debian-archive-keyring.gpg ] || wanted+=(debian-archive-keyring)
  [ -f /etc/ssl/certs/ca-certificates.crt ] || wanted+=(ca-certificates)
  [ ${#wanted[@]} -gt 0 ] || return 0
  say "installing ${wanted[*]} (Debian packages)"
  export DEBIAN_FRONTEND=noninteractive
  local apt=(apt-get -o DPkg::Lock::Timeout=600 -y -q)
  if ! apt-cache show --no-all-versions "${wanted[@]}" >/dev/null 2>&1; then
    "${apt[@]}" update >>"$log" 2>&1 || rc=$?
    updated=1
  fi
  [ "$rc" -ne 0 ] || "${apt[@]}" install --no-install-recommends "${wanted[@]}" >>"$log" 2>&1 || rc=$?
  if [ "$rc" -ne 0 ] && [ -z "$updated" ]; then
    # Stale package lists (a 404 on a superseded .deb): refresh once and try again.
    rc=0
    "${apt[@]}" update >>"$log" 2>&1 || rc=$?
    [ "$rc" -ne 0 ] || "${apt[@]}" install --no-install-recommends "${wanted[@]}" >>"$log" 2>&1 || rc=$?
  fi
  if [ "$rc" -ne 0 ]; then
    tail -n 30 "$log" >&2
    die "apt-get could not install ${wanted[*]} (the end of its log is above)"
  fi
  command -v buildah >/dev/null && command -v debootstrap >/dev/null || die "buildah or debootstrap missing after install"
  phase "installed ${wanted[*]}"
}
install_packages

# --- storage driver ----------------------------------------------------------------------------------------

graph_root=$(buildah info --format '{{.store.GraphRoot}}' 2>/dev/null || true)
graph_root=${graph_root:-/var/lib/containers/storage}
# Can the kernel mount overlayfs on the file system that holds the image store (not so on overlayfs itself,
# nor in most unprivileged containers)?
overlay_works() {
  local d rc=0
  mkdir -p "$graph_root"
  d=$(mktemp -d "$graph_root/.mso-overlay-probe.XXXXXX") || return 1
  mkdir "$d/lower" "$d/upper" "$d/work" "$d/merged"
  echo probe >"$d/lower/file"
  if mount -t overlay overlay -o "lowerdir=$d/lower,upperdir=$d/upper,workdir=$d/work" "$d/merged" 2>/dev/null; then
    [ "$(cat "$d/merged/file" 2>/dev/null)" = probe ] || rc=1
    umount "$d/merged" || rc=1
  else
    rc=1
  fi
  [ -z "$(mounts_under "$d")" ] && rm -rf --one-file-system "$d"
  return "$rc"
}
if [ "$driver" = auto ]; then
  if overlay_works; then driver=overlay; else driver=vfs; fi
fi
case $driver in overlay | vfs) ;; *) die "MSO_STORAGE_DRIVER must be auto, overlay or vfs, not '$driver'" ;; esac
say "buildah $(buildah --version | awk '{print $3}'), storage driver $driver ($graph_root), image $image"

# --- what this machine trusts ------------------------------------------------------------------------------

# apt may be configured with a proxy that wget (debootstrap) and pip would not otherwise know about.
if [ -z "${http_proxy:-}${HTTP_PROXY:-}" ]; then
  apt_proxy=$(apt-config dump 2>/dev/null | sed -n 's/^Acquire::http::Proxy "\(.*\)";$/\1/p' | head -n 1)
  if [ -n "$apt_proxy" ] && [ "$apt_proxy" != DIRECT ]; then export http_proxy=$apt_proxy; fi
fi
if [ -z "${https_proxy:-}${HTTPS_PROXY:-}" ]; then
  apt_proxy=$(apt-config dump 2>/dev/null | sed -n 's/^Acquire::https::Proxy "\(.*\)";$/\1/p' | head -n 1)
  if [ -n "$apt_proxy" ] && [ "$apt_proxy" != DIRECT ]; then export https_proxy=$apt_proxy; fi
fi

# Every CA bundle and extra certificate this machine's tools are told to trust, in one file.
pip_dir=$tmp/pip
mkdir -p "$pip_dir"
ca_bundle=$pip_dir/ca.crt
: >"$ca_bundle"
declare -A seen=()
add_ca() {
  local f
  f=$(readlink -f "$1" 2>/dev/null) || return 0
  [ -f "$f" ] && [ -r "$f" ] && [ -z "${seen[$f]:-}" ] || return 0
  grep -q 'BEGIN CERTIFICATE' "$f" || return 0
  seen[$f]=1
  cat "$f" >>"$ca_bundle"
  echo >>"$ca_bundle"
}
for f in /etc/ssl/certs/ca-certificates.crt "${PIP_CERT:-}" "${REQUESTS_CA_BUNDLE:-}" "${SSL_CERT_FILE:-}" \
  "${CURL_CA_BUNDLE:-}"; do
  [ -n "$f" ] && add_ca "$f"
done
while IFS= read -r -d '' f; do add_ca "$f"; done \
  < <(find /usr/local/share/ca-certificates -type f -name '*.crt' -print0 2>/dev/null)
ca_count=$(grep -c 'BEGIN CERTIFICATE' "$ca_bundle" || true)

# pip settings that decide where packages come from, from the environment or this machine's pip.conf.
pip_setting() { # NAME (e.g. index-url)
  local env_name value
  env_name=PIP_$(echo "$1" | tr 'a-z-' 'A-Z_')
  value=${!env_name:-}
  if [ -z "$value" ]; then
    value=$(python3 - "$1" 2>/dev/null <<'EOF' || true
import configparser, os, sys
paths = ["/etc/xdg/pip/pip.conf", "/etc/pip.conf", os.path.expanduser("~/.pip/pip.conf"),
         os.path.expanduser("~/.config/pip/pip.conf")]
if os.environ.get("PIP_CONFIG_FILE"):
    paths.append(os.environ["PIP_CONFIG_FILE"])
value = ""
for path in paths:
    parser = configparser.RawConfigParser()
    try:
        parser.read(path)
    except configparser.Error:
        continue
    for section in ("global", "install"):
        if parser.has_option(section, sys.argv[1]):
            value = parser.get(section, sys.argv[1])
print(" ".join(value.split()))
EOF
    )
  fi
  printf '%s' "$value"
}
pip_conf=$pip_dir/pip.conf
{
  echo "[global]"
  [ "$ca_count" -gt 0 ] && echo "cert = $BUILD_PIP_DIR/ca.crt"
  for key in index-url extra-index-url trusted-host; do
    value=$(pip_setting "$key")
    [ -z "$value" ] || echo "$key = $value"
  done
} >"$pip_conf"
say "pip in the build trusts $ca_count certificates from this machine; pip.conf: $(grep -v '^\[' "$pip_conf" | tr '\n' ';')"

# --- the base image ----------------------------------------------------------------------------------------

debian_uri() { # PATTERN: the first apt source URI matching it
  local lists=() sources=()
  shopt -s nullglob
  lists=(/etc/apt/sources.list /etc/apt/sources.list.d/*.list)
  sources=(/etc/apt/sources.list.d/*.sources)
  shopt -u nullglob
  : >"$tmp/uris"
  [ ${#lists[@]} -eq 0 ] || cat "${lists[@]}" 2>/dev/null |
    awk '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i ~ /^https?:/) { print $i; break } }' >>"$tmp/uris" || true
  [ ${#sources[@]} -eq 0 ] || awk '/^URIs:/ { for (i = 2; i <= NF; i++) print $i }' "${sources[@]}" >>"$tmp/uris" || true
  grep -E "$1" "$tmp/uris" | head -n 1 || true
}
mirror=${DEBIAN_MIRROR:-$(debian_uri '/debian/?$')}
mirror=${mirror:-http://deb.debian.org/debian}
security_mirror=${DEBIAN_SECURITY_MIRROR:-$(debian_uri '/debian-security/?$')}
security_mirror=${security_mirror:-http://deb.debian.org/debian-security}

make_base() {
  work=$(mktemp -d "$cache/.work.XXXXXX")
  local rootfs=$work/rootfs log=$work/debootstrap.log
  say "making the $SUITE base with debootstrap from $mirror (once; cached in $base_dir)"
  if ! debootstrap --variant=minbase --components=main --include="$BASE_PACKAGES" \
    --keyring=/usr/share/keyrings/debian-archive-keyring.gpg "$SUITE" "$rootfs" "$mirror" >"$log" 2>&1; then
    tail -n 30 "$log" >&2
    [ -f "$rootfs/debootstrap/debootstrap.log" ] && tail -n 30 "$rootfs/debootstrap/debootstrap.log" >&2
    die "debootstrap failed (the end of its log is above)"
  fi
  # debootstrap unmounts what it mounted in its target; the deletions below must never reach through a mount.
  [ -z "$(mounts_under "$work")" ] || die "debootstrap left mounts under $work: $(mounts_under "$work")"
  phase "debootstrap done"

  # Updates and security fixes, as an official image would have them.
  cat >"$rootfs/etc/apt/sources.list" <<EOF
deb $mirror $SUITE main
deb $mirror $SUITE-updates main
deb $security_mirror $SUITE-security main
EOF
  cp "$ca_bundle" "$rootfs/tmp/host-ca.crt"
  local apt=(chroot "$rootfs" env DEBIAN_FRONTEND=noninteractive apt-get -q -y
    -o Acquire::https::CAInfo=/tmp/host-ca.crt)
  if ! { "${apt[@]}" update && "${apt[@]}" dist-upgrade && "${apt[@]}" clean; } >"$work/upgrade.log" 2>&1; then
    tail -n 30 "$work/upgrade.log" >&2
    die "apt-get dist-upgrade in the new base failed (the end of its log is above)"
  fi
  say "updates: $(grep -E '^[0-9]+ upgraded' "$work/upgrade.log" | tail -n 1)"
  chroot "$rootfs" python3 -c 'import sys, venv, ensurepip; assert sys.version_info >= (3, 11), sys.version' ||
    die "the base's python3 is not a usable Python >= 3.11"

  # Trim what a container never uses (like the official slim images); keep licences (copyright files).
  rm -f "$rootfs/tmp/host-ca.crt"
  rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/debconf/*-old \
    "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* "$rootfs"/usr/share/locale/* "$rootfs"/tmp/* \
    "$rootfs"/var/tmp/* "$rootfs/debootstrap"
  find "$rootfs/usr/share/doc" -mindepth 1 -type f ! -name copyright -delete
  find "$rootfs/usr/share/doc" -mindepth 1 -type d -empty -delete
  find "$rootfs/var/log" -type f -delete
  # The runtime provides these (buildah and Kubernetes bind-mount their own).
  : >"$rootfs/etc/resolv.conf"
  mkdir -p "$rootfs$BUILD_PIP_DIR"
  rm -f "$rootfs/etc/hostname"
  find "$rootfs/dev" -xdev -mindepth 1 -delete

  local python_version
  python_version=$(chroot "$rootfs" python3 -c 'import platform; print(platform.python_version())')
  tar --numeric-owner --xattrs --xattrs-include='*' -C "$rootfs" -cf "$work/rootfs.tar" .
  mkdir -p "$base_dir"
  {
    echo "suite=$SUITE revision=$BASE_REVISION packages=$BASE_PACKAGES"
    echo "python=$python_version mirror=$mirror made=$(date -u +%FT%TZ)"
  } >"$work/STAMP"
  mv "$work/STAMP" "$base_dir/STAMP"
  mv "$work/rootfs.tar" "$base_tar"
  [ -z "$(mounts_under "$work")" ] || die "something is still mounted under $work: $(mounts_under "$work")"
  rm -rf --one-file-system "$work"
  work=
  # Older bases are of no further use.
  find "$cache" -mindepth 1 -maxdepth 1 -type d ! -name "$stamp" ! -name '.*' -exec rm -rf --one-file-system {} +
  phase "base made (Python $python_version, $(du -sh "$base_tar" | cut -f1) tarball)"
}

image_exists() { bah inspect --type image "$1" >/dev/null 2>&1; }

# Older base images (other stamps) and leftover working containers of earlier, interrupted runs.
# Images of this script kept under the other storage driver (a store keeps images per driver) only take room.
other=vfs
[ "$driver" = vfs ] && other=overlay
if [ -d "$graph_root/$other-images" ]; then
  for old in $(buildah --storage-driver "$other" images --format '{{.Name}}:{{.Tag}}' 2>/dev/null |
    grep -E "^localhost/$NAME(-base)?:"); do
    say "removing $old from the $other store"
    buildah --storage-driver "$other" rmi -f "$old" >/dev/null 2>&1 || true
  done
fi
for c in $(bah containers --format '{{.ContainerID}} {{.ImageName}} {{.ContainerName}}' 2>/dev/null |
  awk -v a="localhost/$NAME:" -v b="localhost/$NAME-base:" \
    'index($2, a) == 1 || index($2, b) == 1 || index($3, "mso-image-") == 1 { print $1 }'); do
  say "removing the leftover working container $c"
  bah rm "$c" >/dev/null 2>&1 || true
done
for old in $(bah images --format '{{.Name}}:{{.Tag}}' 2>/dev/null | grep -E "^localhost/$NAME-base:" |
  grep -vxF "$base_image"); do
  say "removing the older base image $old"
  bah rmi -f "$old" >/dev/null 2>&1 || true
done

if [ ! -s "$base_tar" ]; then
  if image_exists "$base_image"; then bah rmi -f "$base_image" >/dev/null 2>&1 || true; fi
  make_base
fi
if ! image_exists "$base_image"; then
  say "importing $base_tar as $base_image"
  ctr=$(bah from --name "mso-image-base-$$" scratch)
  containers+=("$ctr")
  bah add --quiet "$ctr" "$base_tar" / >/dev/null
  bah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin --env LANG=C.UTF-8 \
    --cmd python3 --label "org.opencontainers.image.description=Debian $SUITE with python3 (local base)" \
    --created-by "hack/build-image.sh: debootstrap $SUITE $BASE_PACKAGES" "$ctr"
  bah commit --quiet --rm "$ctr" "$base_image" >/dev/null
  containers=()
  phase "base image imported"
else
  say "reusing $base_image ($(tr '\n' ' ' <"$base_dir/STAMP"))"
fi

# --- the operator image ------------------------------------------------------------------------------------

# Older images of the operator: every tag of the name, and untagged ones left by earlier builds.
for old in $(
  bah images --format '{{.Name}}:{{.Tag}}' 2>/dev/null | grep -E "^localhost/$NAME:"
  bah images --filter dangling=true --filter "label=org.opencontainers.image.title=$NAME" --format '{{.ID}}' \
    2>/dev/null
); do
  say "removing the older image $old"
  bah rmi -f "$old" >/dev/null 2>&1 || true
done

# Layers are kept (--layers), so a rebuild after a source change reuses the dependency layer; the untagged
# layers of earlier builds are pruned once the store passes 2 GiB (the next build then fills the cache again).
if [ "$(du -sm "$graph_root" 2>/dev/null | cut -f1)" -gt 2048 ]; then
  say "pruning cached layers (the image store passed 2 GiB)"
  bah rmi --prune >/dev/null 2>&1 || true
fi

say "building $image (buildah bud, chroot isolation)"
phase_start=$SECONDS
build_log=$tmp/bud.log
bud=(bah bud --isolation chroot --pull=never --layers=true --format oci
  --build-arg "PYTHON_IMAGE=$base_image" --tag "$image"
  --volume "$pip_dir:$BUILD_PIP_DIR:ro")
if ! "${bud[@]}" --file Dockerfile . >"$build_log" 2>&1; then
  tail -n 40 "$build_log" >&2
  die "buildah bud failed (the end of its output is above)"
fi
phase "image built"

# --- smoke check -------------------------------------------------------------------------------------------

config_user=$(bah inspect --type image --format '{{.OCIv1.Config.User}}' "$image")
entrypoint=$(bah inspect --type image --format '{{range .OCIv1.Config.Entrypoint}}{{.}} {{end}}' "$image")
entrypoint=${entrypoint% }
case $config_user in
  "$UID_EXPECTED" | "$UID_EXPECTED:$UID_EXPECTED" | nonroot | nonroot:nonroot) ;;
  *) die "the image's user is '$config_user', expected $UID_EXPECTED" ;;
esac
[ "$entrypoint" = managed-secrets-operator ] || die "the image's entrypoint is '$entrypoint'"

ctr=$(bah from --pull=never --name "mso-image-smoke-$$" "$image")
containers+=("$ctr")
smoke() { bah run --isolation chroot --user "$UID_EXPECTED:$UID_EXPECTED" "$ctr" -- "$@"; }
smoke sh -c '[ "$(id -u):$(id -g)" = "65532:65532" ] && [ "$(id -un)" = nonroot ]' ||
  die "the image does not run as 65532:65532 (nonroot)"
smoke managed-secrets-operator --help >"$tmp/help.txt" 2>&1 || {
  cat "$tmp/help.txt" >&2
  die "managed-secrets-operator --help failed inside the image"
}
grep -q -- '--liveness' "$tmp/help.txt" || die "unexpected --help output: $(head -c 300 "$tmp/help.txt")"
smoke sh -c '! python -m pip --version >/dev/null 2>&1' || die "pip is importable in the final image"
bah rm "$ctr" >/dev/null
containers=()
phase "smoke check passed (user $config_user, entrypoint $entrypoint, --help runs as $UID_EXPECTED)"

size=$(bah images --format '{{.Size}}' "$image" 2>/dev/null | head -n 1)
say "done in $((SECONDS - started))s: $image ($size); the image store $graph_root holds" \
  "$(du -sh "$graph_root" 2>/dev/null | cut -f1), the base cache $(du -sh "$cache" | cut -f1)"
echo "image=$image"
echo "storage_driver=$driver"
