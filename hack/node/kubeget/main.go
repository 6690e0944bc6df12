// Command kubeget is a minimal in-cluster Kubernetes client for the test image of the local node
// (localhost/mso-busybox): it finds the API server the way client-go's rest.InClusterConfig does
// (KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT, the service-account token and CA bundle under
// /var/run/secrets/kubernetes.io/serviceaccount), verifies the server's certificate against that CA, GETs
// each path given and prints the response bodies, one line each. Busybox's wget cannot stand in for it: its
// TLS client fails the handshake with the local API server ("TLS error from peer (alert code 40): handshake
// failure"; the server's certificate is ECDSA P-256), and it would not verify the certificate anyway.
//
//	kubeget /version /api/v1/namespaces/$(cat .../namespace)/secrets/NAME
//
// Exit status: 0 when every response is 2xx, 1 otherwise (the status and body are printed to stderr).
package main

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"time"
)

const saDir = "/var/run/secrets/kubernetes.io/serviceaccount"

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: kubeget PATH...")
		os.Exit(2)
	}
	host, port := os.Getenv("KUBERNETES_SERVICE_HOST"), os.Getenv("KUBERNETES_SERVICE_PORT")
	if host == "" || port == "" {
		fail("KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT must be set (not running in a Pod?)")
	}
	token, err := os.ReadFile(saDir + "/token")
	if err != nil {
		fail("no service-account token: %v", err)
	}
	caPEM, err := os.ReadFile(saDir + "/ca.crt")
	if err != nil {
		fail("no CA bundle: %v", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		fail("no certificate in %s/ca.crt", saDir)
	}
	client := &http.Client{
		Timeout:   10 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}},
	}
	base := "https://" + net.JoinHostPort(host, port)
	ok := true
	for _, path := range os.Args[1:] {
		req, err := http.NewRequest(http.MethodGet, base+path, nil)
		if err != nil {
			fail("%v", err)
		}
		req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(token)))
		req.Header.Set("Accept", "application/json")
		resp, err := client.Do(req)
		if err != nil {
			fail("GET %s: %v", base+path, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode/100 != 2 {
			fmt.Fprintf(os.Stderr, "kubeget: GET %s: %s\n%s\n", base+path, resp.Status, body)
			ok = false
			continue
		}
		// One line per response (the API server indents some, /version among them).
		var compact bytes.Buffer
		if json.Compact(&compact, body) == nil {
			body = compact.Bytes()
		}
		os.Stdout.Write(body)
		fmt.Println()
	}
	if !ok {
		os.Exit(1)
	}
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "kubeget: "+format+"\n", args...)
	os.Exit(1)
}
