// The reference gateway fanout is measured against: the seeds' pattern, with
// errgroup.WithContext, net/http and encoding/json, one goroutine per backend,
// answers merged into one map.
//
// Build (offline, Debian's golang-go and golang-golang-x-sync-dev):
//   GO111MODULE=off GOPATH=/usr/share/gocode go build -o target/go-reference bench/go-reference/main.go
//
// bench/run.sh builds and runs it next to fanout: -listen for the address,
// -backends for the comma-separated URLs merged by GET /merged.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"net/http"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:19280", "address to listen on")
	backends := flag.String("backends", "", "comma-separated backend URLs")
	flag.Parse()
	urls := strings.Split(*backends, ",")
	client := &http.Client{
		Timeout:   5 * time.Second,
		Transport: &http.Transport{MaxIdleConns: 4096, MaxIdleConnsPerHost: 1024},
	}

	http.HandleFunc("/merged", func(w http.ResponseWriter, r *http.Request) {
		g, ctx := errgroup.WithContext(r.Context())
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
					return err
				}
				defer resp.Body.Close()
				// A failed backend fails the request, and errgroup's context
				// cancels the other calls (the fail-fast scenario). Every
				// throughput backend answers 200, so this changes nothing there.
				if resp.StatusCode >= 300 {
					return fmt.Errorf("%s: status %d", url, resp.StatusCode)
				}
				var part map[string]interface{}
				if err := json.NewDecoder(resp.Body).Decode(&part); err != nil {
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
