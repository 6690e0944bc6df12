#!/usr/bin/env bash
# End-to-end test on kind: a real cluster with a kubelet, so the operator runs as the Helm chart's pod from the
# image built from this repository, and tests/e2e checks it from outside (Deployment available, a ManagedSecret
# reconciled by the pod, health and metrics endpoints, JSON logs, a pod restart without a new version).
#
# Needs Docker (a running engine), kind, kubectl, helm, python3 and make. The project's development and CI
# machines have no Docker engine, so this script is for people who have one; `make test` covers the rest on a
# local control plane without a kubelet.
#
#   bash hack/e2e-kind.sh                       # create the cluster, test, delete the cluster
#   KEEP_CLUSTER=1 bash hack/e2e-kind.sh        # keep the cluster afterwards (kind delete cluster --name mso-e2e)
set -euo pipefail
cd "$(dirname "$0")/.."

cluster=${KIND_CLUSTER:-mso-e2e}
image=${IMAGE:-managed-secrets-operator:e2e}
namespace=${E2E_NAMESPACE:-managed-secrets}
release=${E2E_RELEASE:-mso}

for tool in docker kind kubectl helm python3 make; do
  command -v "$tool" >/dev/null || { echo "e2e-kind: $tool is required" >&2; exit 2; }
done
docker info >/dev/null 2>&1 || { echo "e2e-kind: needs a running Docker engine" >&2; exit 2; }

created=""
if ! kind get clusters 2>/dev/null | grep -qx "$cluster"; then
  kind create cluster --name "$cluster" --wait 180s
  created=1
fi
kubeconfig=$(mktemp)
cleanup() {
  rm -f "$kubeconfig"
  if [ -n "$created" ] && [ -z "${KEEP_CLUSTER:-}" ]; then kind delete cluster --name "$cluster"; fi
}
trap cleanup EXIT
kind get kubeconfig --name "$cluster" >"$kubeconfig"
export KUBECONFIG=$kubeconfig

echo "== image $image"
docker build -t "$image" .
kind load docker-image "$image" --name "$cluster"

echo "== helm install $release into $namespace (restricted Pod Security enforced)"
kubectl create namespace "$namespace" --dry-run=client -o yaml | kubectl apply -f -
kubectl label namespace "$namespace" --overwrite \
  pod-security.kubernetes.io/enforce=restricted pod-security.kubernetes.io/warn=restricted
helm upgrade --install "$release" charts/managed-secrets-operator -n "$namespace" \
  --set image.repository="${image%:*}" --set image.tag="${image##*:}" --set image.pullPolicy=Never \
  --wait --timeout 5m

echo "== tests/e2e"
make install
MSO_E2E=1 MSO_E2E_NAMESPACE="$namespace" MSO_E2E_RELEASE="$release" .venv/bin/pytest tests/e2e -q
