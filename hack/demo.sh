#!/usr/bin/env bash
# `make demo`: a local control plane, the CRD, the operator (as its own ServiceAccount), the examples, and
# the projected Secrets they produce. `make demo-down` stops it all.
#
# KMS=softhsm (`make demo KMS=softhsm`): the operator's keyring is sealed by an AES key in a SoftHSM2 token
# (PKCS#11), so the keyring Secret holds only ciphertext. KMS=kmsv2: sealed through the control plane's own
# KMS v2 plugin, the one kube-apiserver encrypts Secrets at rest with.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${MSO_CLUSTER_DIR:-/tmp/managed-secrets-cluster}
py=.venv/bin/python

# NODE=1: also a node (containerd + kubelet + kube-scheduler; root), so Pods really run and mount the Secrets.
export KUBECONFIG=$($py hack/cluster.py up --dir "$dir" ${NODE:+--with-node})
bin=$(bash hack/build-controlplane.sh 2>/dev/null | tail -n 1)
kubectl() { "$bin/kubectl" "$@"; }

echo "== CRD"
kubectl apply -f crds/
kubectl wait --for=condition=Established crd/managedsecrets.managedsecrets.io --timeout=60s

echo "== operator namespace, ServiceAccount and RBAC (deploy/rbac.yaml)"
kubectl create namespace managed-secrets --dry-run=client -o yaml | kubectl apply -f -
kubectl apply -f deploy/rbac.yaml
# Admission-time authorization (a ManagedSecret reaches no further than its author) and the user roles.
kubectl apply -f deploy/admission-policy.yaml -f deploy/user-roles.yaml
token=$(kubectl -n managed-secrets create token managed-secrets-operator --duration=24h)
server=$(kubectl config view --minify -o jsonpath='{.clusters[0].cluster.server}')
cat > "$dir/operator.kubeconfig" <<KCFG
apiVersion: v1
kind: Config
clusters: [{name: local, cluster: {server: "$server", certificate-authority: "$dir/pki/ca.crt"}}]
users: [{name: operator, user: {token: "$token"}}]
contexts: [{name: local, context: {cluster: local, user: operator}}]
current-context: local
KCFG
chmod 600 "$dir/operator.kubeconfig"

kms=()
case "${KMS:-}" in
  "" | none) ;;
  softhsm | pkcs11)
    hsm="$dir/operator-softhsm"
    if [ ! -f "$hsm/softhsm2.conf" ]; then
      $py hack/softhsm.py init --dir "$hsm" --token-label managed-secrets --key-label keyring-kek-1 >/dev/null
    fi
    kms=(SOFTHSM2_CONF="$hsm/softhsm2.conf" MSO_KMS_PROVIDER=pkcs11 MSO_PKCS11_LIBRARY="$($py -c \
      'import sys; sys.path.insert(0, "hack"); import softhsm; print(softhsm.library())')" \
      MSO_PKCS11_TOKEN_LABEL=managed-secrets MSO_PKCS11_KEY_LABEL=keyring-kek-1 MSO_PKCS11_PIN_FILE="$hsm/pin")
    echo "== key service: SoftHSM2 token 'managed-secrets' in $hsm, key 'keyring-kek-1' (PKCS#11)"
    ;;
  kmsv2)
    socket=$($py -c 'import json, sys; print(json.load(open(sys.argv[1]))["kms"]["socket"])' "$dir/cluster.json")
    kms=(MSO_KMS_PROVIDER=kmsv2 MSO_KMS_ENDPOINT="unix://$socket")
    echo "== key service: the control plane's KMS v2 plugin at $socket"
    ;;
  *) echo "KMS=$KMS: expected softhsm, kmsv2 or none" >&2; exit 2 ;;
esac

echo "== operator"
if [ -f "$dir/pids/operator.pid" ] && kill -0 "$(cat "$dir/pids/operator.pid")" 2>/dev/null; then
  echo "already running (pid $(cat "$dir/pids/operator.pid"))"
else
  env KUBECONFIG="$dir/operator.kubeconfig" MSO_NAMESPACE=managed-secrets "${kms[@]}" \
    nohup .venv/bin/managed-secrets-operator --log-format=plain >"$dir/logs/operator.log" 2>&1 &
  echo $! >"$dir/pids/operator.pid"
  echo "started (pid $!, log $dir/logs/operator.log)"
fi

echo "== examples"
kubectl apply -f examples/00-namespace.yaml
kubectl apply -f examples/
kubectl -n demo wait --for=condition=Ready managedsecret --all --timeout=120s
kubectl -n demo get managedsecrets
echo
echo "== the projected Secret app-db (keys and the operator's annotations)"
kubectl -n demo describe secret app-db
echo
cat <<TXT
Done. Try:
  export KUBECONFIG=$KUBECONFIG PATH=$bin:\$PATH
  kubectl -n demo get msec app-db -o yaml            # status: versions, stages, conditions
  kubectl -n demo get secret app-db -o jsonpath='{.data.DATABASE_URL}' | base64 -d; echo
  kubectl -n demo edit secret app-db                  # drift: the operator puts it back
Stop everything with: make demo-down
TXT
if [ ${#kms[@]} -gt 0 ]; then
  cat <<TXT
The keyring is sealed: the keyring Secret holds only ciphertext, openable with the key service alone:
  kubectl -n managed-secrets get secret managed-secrets-keyring -o jsonpath='{.data}'; echo   # only keyring.sealed
  env ${kms[*]} KUBECONFIG=$KUBECONFIG MSO_NAMESPACE=managed-secrets .venv/bin/managed-secrets-operator keyring status
TXT
fi
