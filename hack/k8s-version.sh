# shellcheck shell=bash
# The Kubernetes version of the local control plane and of its node, and the -ldflags that stamp it into the
# binaries built from Go modules (as Kubernetes' own build does), so `kubectl version` and the kubelet report it.
# Sourced by hack/build-controlplane.sh and hack/build-node.sh; hack/controlplane/go.mod and
# hack/node/kube/go.mod pin the same k8s.io/kubernetes version.
K8S_VERSION=1.35.4
k8s_minor=$(echo "$K8S_VERSION" | cut -d. -f2)
k8s_ldflags="-s -w -X k8s.io/component-base/version.gitVersion=v$K8S_VERSION \
 -X k8s.io/component-base/version.gitMajor=${K8S_VERSION%%.*} \
 -X k8s.io/component-base/version.gitMinor=$k8s_minor \
 -X k8s.io/component-base/version.gitTreeState=clean \
 -X k8s.io/client-go/pkg/version.gitVersion=v$K8S_VERSION \
 -X k8s.io/client-go/pkg/version.gitMajor=${K8S_VERSION%%.*} \
 -X k8s.io/client-go/pkg/version.gitMinor=$k8s_minor"
