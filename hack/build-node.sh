#!/usr/bin/env bash
# Builds what the local test node (`hack/cluster.py up --with-node`) runs beside the control plane, pinned to
# the versions below, into a cache directory outside the work tree so that a second run takes seconds:
#
#   kubelet, kube-scheduler           hack/node/kube (same k8s.io/kubernetes pin as hack/controlplane)
#   containerd, containerd-shim-runc-v2, ctr
#                                     hack/node/containerd (github.com/containerd/containerd/v2)
#   cni/bridge, cni/host-local, cni/loopback, cni/portmap
#                                     hack/node/cni (github.com/containernetworking/plugins)
#   pause                             hack/node/pause (the Pod sandbox process)
#   kubeget                           hack/node/kubeget (a minimal in-cluster client for the test image)
#   images-r<N>/pause.tar             OCI archive of localhost/mso-pause:<PAUSE_VERSION> (the sandbox image)
#   images-r<N>/busybox.tar           OCI archive of localhost/mso-busybox:<version>-r<N>: Debian's
#                                     busybox-static plus /bin/kubeget, the image tests/node runs
#
# Everything Go is built with CGO_ENABLED=0 (static). runc comes from Debian (installed if missing, as root),
# busybox-static too; the two images are made with buildah from scratch (installed if missing) and committed
# straight to OCI archives, so nothing is left in buildah's image store.
#
# Prints the directory that holds the binaries on its last line.
set -euo pipefail

CONTAINERD_VERSION=2.2.9
CNI_PLUGINS_VERSION=1.10.0
PAUSE_VERSION=mso-1
# Bump when the way the images are made changes (part of the images' cache key and of the test image's tag).
IMAGES_REVISION=3

here=$(cd "$(dirname "$0")" && pwd)
# K8S_VERSION and k8s_ldflags, shared with the control plane's build.
source "$here/k8s-version.sh"
cache=${MSO_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/managed-secrets-operator}
bin="$cache/bin/node-k8s-$K8S_VERSION-containerd-$CONTAINERD_VERSION-cni-$CNI_PLUGINS_VERSION-pause-$PAUSE_VERSION"
images="$bin/images-r$IMAGES_REVISION"
mkdir -p "$bin/cni" "$images"
export CGO_ENABLED=0 GOFLAGS=-trimpath
log() { echo "build-node: $*" >&2; }
die() {
  log "FAILED: $*"
  exit 1
}
exec 9>"$bin/.lock"
flock -w 3600 9 || die "another build holds $bin/.lock"

# --- Debian packages: runc (the OCI runtime containerd's shim runs), busybox-static, buildah -----------------

missing=()
command -v runc >/dev/null || missing+=(runc)
[ -x /bin/busybox ] && file -L /bin/busybox 2>/dev/null | grep -q 'statically linked' || missing+=(busybox-static)
command -v buildah >/dev/null || missing+=(buildah)
command -v file >/dev/null || missing+=(file)
if [ ${#missing[@]} -gt 0 ]; then
  [ "$(id -u)" = 0 ] || die "missing ${missing[*]}; install these Debian packages as root"
  log "installing ${missing[*]} (Debian packages)"
  export DEBIAN_FRONTEND=noninteractive
  apt=(apt-get -o DPkg::Lock::Timeout=600 -y -q)
  aptlog=$(mktemp /tmp/mso-build-node-apt.XXXXXX.log)
  if ! "${apt[@]}" install --no-install-recommends "${missing[@]}" >>"$aptlog" 2>&1; then
    # No package lists yet, or stale ones: refresh once and try again.
    "${apt[@]}" update >>"$aptlog" 2>&1 && "${apt[@]}" install --no-install-recommends "${missing[@]}" >>"$aptlog" 2>&1 ||
      { tail -n 30 "$aptlog" >&2; die "apt-get could not install ${missing[*]} (the end of $aptlog is above)"; }
  fi
  rm -f "$aptlog"
fi
file -L /bin/busybox | grep -q 'statically linked' || die "/bin/busybox is not the static busybox (busybox-static)"

# --- Go binaries -------------------------------------------------------------------------------------------

ctrd_pkg=github.com/containerd/containerd/v2
ctrd_ldflags="-s -w -X $ctrd_pkg/version.Version=v$CONTAINERD_VERSION -X $ctrd_pkg/version.Package=$ctrd_pkg \
 -X $ctrd_pkg/version.Revision=go-module"
# containerd's own Makefile tags for a static build; btrfs needs cgo (dropped anyway), devmapper and zfs are
# snapshotters this node never uses.
ctrd_tags=no_btrfs,no_devmapper,no_zfs,urfave_cli_no_docs,osusergo,netgo,static_build
cni_ldflags="-s -w -X github.com/containernetworking/plugins/pkg/utils/buildversion.BuildVersion=v$CNI_PLUGINS_VERSION"

build() { # OUTPUT MODULE_DIR [go build args...]
  local out=$1 dir=$2 start=$SECONDS
  shift 2
  [ -x "$bin/$out" ] && return 0
  log "building $out"
  (cd "$here/$dir" && go build -o "$bin/$out.tmp" "$@")
  mv "$bin/$out.tmp" "$bin/$out"
  log "built $out in $((SECONDS - start))s"
}

build kubelet node/kube -ldflags "$k8s_ldflags" ./cmd/kubelet
build kube-scheduler node/kube -ldflags "$k8s_ldflags" ./cmd/kube-scheduler
build containerd node/containerd -tags "$ctrd_tags" -ldflags "$ctrd_ldflags" "$ctrd_pkg/cmd/containerd"
build containerd-shim-runc-v2 node/containerd -tags "$ctrd_tags,no_grpc" -ldflags "$ctrd_ldflags" \
  "$ctrd_pkg/cmd/containerd-shim-runc-v2"
build ctr node/containerd -tags "$ctrd_tags" -ldflags "$ctrd_ldflags" "$ctrd_pkg/cmd/ctr"
for p in ipam/host-local main/bridge main/loopback meta/portmap; do
  build "cni/${p#*/}" node/cni -ldflags "$cni_ldflags" "github.com/containernetworking/plugins/plugins/$p"
done
build pause node/pause -ldflags "-s -w -X main.version=$PAUSE_VERSION" .
# kubeget is rebuilt whenever its source changes (it is part of the test image).
kubeget_hash=$(cat "$here/node/kubeget/go.mod" "$here/node/kubeget/main.go" | sha256sum | cut -c1-12)
[ "$(cat "$bin/.kubeget-hash" 2>/dev/null)" = "$kubeget_hash" ] || rm -f "$bin/kubeget"
build kubeget node/kubeget -ldflags "-s -w" .
echo "$kubeget_hash" >"$bin/.kubeget-hash"

# --- images (OCI archives, imported into containerd by hack/cluster.py) ------------------------------------

busybox_version=$(dpkg-query -W -f '${Version}' busybox-static 2>/dev/null | sed 's/^[0-9]*://; s/[^A-Za-z0-9_.-]/_/g')
busybox_version=${busybox_version:-unknown}-r$IMAGES_REVISION
image() { # ARCHIVE REFERENCE SETUP_FUNCTION INPUTS_STAMP
  local archive=$1 ref=$2 setup=$3 stamp="$2 $4" start=$SECONDS ctr
  if [ -s "$images/$archive" ] && [ "$(cat "$images/$archive.ref" 2>/dev/null)" = "$stamp" ]; then
    return 0
  fi
  log "making $ref"
  ctr=$(buildah from --name "mso-node-image-$$-${archive%.tar}" scratch)
  # shellcheck disable=SC2064
  trap "buildah rm $ctr >/dev/null 2>&1 || true" EXIT
  "$setup" "$ctr"
  rm -f "$images/$archive.tmp"
  buildah commit --quiet --format oci "$ctr" "oci-archive:$images/$archive.tmp:$ref" >/dev/null
  buildah rm "$ctr" >/dev/null
  trap - EXIT
  mv "$images/$archive.tmp" "$images/$archive"
  echo "$stamp" >"$images/$archive.ref"
  log "made $ref in $((SECONDS - start))s ($(du -h "$images/$archive" | cut -f1))"
}
pause_setup() {
  buildah copy --quiet "$1" "$bin/pause" /pause >/dev/null
  buildah config --entrypoint '["/pause"]' --cmd '' --user 65535:65535 \
    --label "org.opencontainers.image.description=Pod sandbox (hack/node/pause)" \
    --created-by "hack/build-node.sh" "$1"
}
busybox_setup() {
  local m
  m=$(buildah mount "$1")
  mkdir -p "$m/bin" "$m/etc" "$m/tmp" "$m/root"
  chmod 1777 "$m/tmp"
  cp /bin/busybox "$m/bin/busybox"
  cp "$bin/kubeget" "$m/bin/kubeget"
  # Every applet as a symlink, so `sh`, `cat`, `wget`... are on PATH.
  for applet in $(/bin/busybox --list); do
    [ "$applet" = busybox ] || ln -sf busybox "$m/bin/$applet"
  done
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' >"$m/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\n' >"$m/etc/group"
  buildah umount "$1" >/dev/null
  buildah config --env PATH=/bin --cmd '["sh"]' \
    --label "org.opencontainers.image.description=Debian busybox-static $busybox_version" \
    --created-by "hack/build-node.sh" "$1"
}
image pause.tar "localhost/mso-pause:$PAUSE_VERSION" pause_setup "$(sha256sum "$bin/pause" | cut -c1-12)"
image busybox.tar "localhost/mso-busybox:$busybox_version" busybox_setup "kubeget-$kubeget_hash"

# What hack/cluster.py reads.
cat >"$bin/node.json" <<EOF
{"kubernetes": "v$K8S_VERSION", "containerd": "v$CONTAINERD_VERSION", "cniPlugins": "v$CNI_PLUGINS_VERSION",
 "runc": "$(command -v runc)",
 "pauseImage": "localhost/mso-pause:$PAUSE_VERSION", "pauseArchive": "$images/pause.tar",
 "busyboxImage": "localhost/mso-busybox:$busybox_version", "busyboxArchive": "$images/busybox.tar"}
EOF
echo "$bin"
