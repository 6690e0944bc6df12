#!/usr/bin/env bash
# Builds the test control plane (etcd, kube-apiserver, kube-controller-manager, kubectl) and helm from Go
# modules, pinned to the versions below, into a cache directory outside the work tree so that a second run
# (or a fresh clone on the same machine) takes seconds.
#
# If KUBEBUILDER_ASSETS points at a directory that already holds etcd and kube-apiserver (as
# controller-runtime's setup-envtest lays it out), those are used and nothing is built for them.
#
# Prints the directory that holds the binaries on its last line.
set -euo pipefail

ETCD_VERSION=3.6.16
HELM_VERSION=3.22.0

here=$(cd "$(dirname "$0")" && pwd)
# K8S_VERSION and k8s_ldflags, shared with the node's build.
source "$here/k8s-version.sh"
cache=${MSO_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/managed-secrets-operator}
bin="$cache/bin/k8s-$K8S_VERSION-etcd-$ETCD_VERSION-helm-$HELM_VERSION"
mkdir -p "$bin"
export CGO_ENABLED=0 GOFLAGS=-trimpath
log() { echo "build-controlplane: $*" >&2; }

if [ -n "${KUBEBUILDER_ASSETS:-}" ] && [ -x "$KUBEBUILDER_ASSETS/kube-apiserver" ] && [ -x "$KUBEBUILDER_ASSETS/etcd" ]; then
  for b in etcd kube-apiserver kube-controller-manager kubectl; do
    [ -x "$KUBEBUILDER_ASSETS/$b" ] && ln -sf "$KUBEBUILDER_ASSETS/$b" "$bin/$b"
  done
  log "using binaries from KUBEBUILDER_ASSETS=$KUBEBUILDER_ASSETS"
fi

for b in kube-apiserver kube-controller-manager kubectl; do
  if [ ! -x "$bin/$b" ]; then
    log "building $b v$K8S_VERSION (the first build takes many minutes)"
    start=$SECONDS
    (cd "$here/controlplane" && go build -ldflags "$k8s_ldflags" -o "$bin/$b.tmp" "./cmd/$b")
    mv "$bin/$b.tmp" "$bin/$b"
    log "built $b in $((SECONDS - start))s"
  fi
done

if [ ! -x "$bin/etcd" ]; then
  log "building etcd v$ETCD_VERSION"
  start=$SECONDS
  (cd "$here/etcd" && go build -ldflags "-s -w" -o "$bin/etcd.tmp" .)
  mv "$bin/etcd.tmp" "$bin/etcd"
  log "built etcd in $((SECONDS - start))s"
fi

# helm reports the Kubernetes version of its own client-go to `helm template` (as its Makefile stamps it);
# without the stamp it would claim v1.20 and charts with a kubeVersion constraint fail to render.
if [ ! -x "$bin/helm" ] || [ ! -f "$bin/.helm-kube-version" ]; then
  log "building helm v$HELM_VERSION"
  start=$SECONDS
  gomod=$(go mod download -json "helm.sh/helm/v3@v$HELM_VERSION" | sed -n 's/.*"GoMod": "\(.*\)",*/\1/p')
  client_minor=$(sed -n 's/^[[:space:]]*k8s.io\/client-go v0\.\([0-9]*\)\..*/\1/p' "$gomod" | head -n 1)
  GOBIN="$bin" go install -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=v$HELM_VERSION \
    -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$client_minor \
    -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=$client_minor" \
    "helm.sh/helm/v3/cmd/helm@v$HELM_VERSION"
  echo "1.$client_minor" >"$bin/.helm-kube-version"
  log "built helm in $((SECONDS - start))s (reports Kubernetes 1.$client_minor to helm template)"
fi

echo "$bin"
