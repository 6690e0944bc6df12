// The sandbox ("pause") program of the local test node's pause image: no dependencies.
module managedsecrets.io/hack/node/pause

go 1.25.0
