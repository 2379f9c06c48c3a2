// The reference gateway fanout is measured against: the seeds' pattern, with
// errgroup.WithContext, net/http and encoding/json, one goroutine per backend,
// answers merged into one map.
//
// Build (offline, Debian's golang-go and golang-golang-x-sync-dev):
//
//	GO111MODULE=off GOPATH=/usr/share/gocode go build -o target/go-reference bench/go-reference/main.go
//
// bench/run.sh builds and runs it next to fanout: -listen for the address,
// -backends for the comma-separated URLs merged by GET /merged, and -ca for
// the PEM file of the roots that https:// backends are verified with (the
// TLS scenario; without it, the system's roots and plain HTTP as before).
//
// -detached is a variant, not the reference. In the reference, a call's
// context is cancelled as soon as it is over: by errgroup.WithContext when
// Wait returns, and by http.Client's Timeout when the body has been read.
// net/http's read loop, when it sees the context cancelled before it has put
// the connection back in its pool, closes the connection instead: a race
// lost often enough over TLS to make a new connection (a handshake) for a
// good share of the calls. -detached gives the calls a context with the same
// 5 s deadline that is cancelled only when a call fails (fail-fast kept;
// otherwise its timer runs out by itself), and no Client.Timeout, so that
// connections are reused. bench/run.sh measures it beside the reference in
// the TLS scenario.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:19280", "address to listen on")
	backends := flag.String("backends", "", "comma-separated backend URLs")
	ca := flag.String("ca", "", "PEM file of the roots https:// backends are verified with")
	detached := flag.Bool("detached", false, "calls' context cancelled only when one fails, not when the request ends")
	flag.Parse()
	urls := strings.Split(*backends, ",")
	transport := &http.Transport{MaxIdleConns: 4096, MaxIdleConnsPerHost: 1024}
	if *ca != "" {
		pem, err := os.ReadFile(*ca)
		if err != nil {
			log.Fatal(err)
		}
		roots := x509.NewCertPool()
		if !roots.AppendCertsFromPEM(pem) {
			log.Fatalf("%s holds no PEM certificate", *ca)
		}
		// Verification stays on (no InsecureSkipVerify). HTTP/2 is offered
		// by ALPN as with the default TLS settings.
		transport.TLSClientConfig = &tls.Config{RootCAs: roots}
		transport.ForceAttemptHTTP2 = true
	}
	client := &http.Client{Timeout: 5 * time.Second, Transport: transport}
	if *detached {
		client = &http.Client{Transport: transport}
	}

	http.HandleFunc("/merged", func(w http.ResponseWriter, r *http.Request) {
		var g *errgroup.Group
		var ctx context.Context
		fail := func() {}
		if *detached {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(context.Background(), 5*time.Second)
			g, fail = new(errgroup.Group), cancel
		} else {
			g, ctx = errgroup.WithContext(r.Context())
		}
		var mu sync.Mutex
		merged := map[string]interface{}{}
		for _, url := range urls {
			url := url
			g.Go(func() error {
				req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
				if err != nil {
					return err
				}
				resp, err := client.Do(req)
				if err != nil {
					fail()
					return err
				}
				defer resp.Body.Close()
				// A failed backend fails the request, and errgroup's context
				// cancels the other calls (the fail-fast scenario). Every
				// throughput backend answers 200, so this changes nothing there.
				if resp.StatusCode >= 300 {
					fail()
					return fmt.Errorf("%s: status %d", url, resp.StatusCode)
				}
				var part map[string]interface{}
				if err := json.NewDecoder(resp.Body).Decode(&part); err != nil {
					fail()
					return err
				}
				mu.Lock()
				for k, v := range part {
					merged[k] = v
				}
				mu.Unlock()
				return nil
			})
		}
		if err := g.Wait(); err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(merged)
	})
	log.Fatal(http.ListenAndServe(*listen, nil))
}
