// A tiny in-cluster HTTP client for the local test node's test image: no dependencies.
module managedsecrets.io/hack/node/kubeget

go 1.25.0
