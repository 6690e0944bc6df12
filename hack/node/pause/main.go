// Command pause is the sandbox process of every Pod on the local test node (hack/cluster.py up --with-node),
// like upstream's build/pause/linux/pause.c: it holds the Pod's namespaces, blocks until SIGTERM or SIGINT,
// and as PID 1 of a Pod that shares its process namespace it reaps orphaned children.
package main

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

var version = "mso-1"

func main() {
	if len(os.Args) > 1 && (os.Args[1] == "-v" || os.Args[1] == "--version") {
		fmt.Println("pause", version)
		return
	}
	if os.Getpid() != 1 {
		fmt.Fprintln(os.Stderr, "pause: warning: not PID 1")
	}
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGCHLD)
	for sig := range sigs {
		if sig == syscall.SIGCHLD {
			for {
				var ws syscall.WaitStatus
				pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
				if pid <= 0 || err != nil {
					break
				}
			}
			continue
		}
		fmt.Fprintf(os.Stderr, "pause: shutting down, got signal %v\n", sig)
		os.Exit(0)
	}
}
