// The reference gateway fanout is measured against: the seeds' pattern, with
// errgroup.WithContext, net/http and encoding/json, one goroutine per backend,
// answers merged into one map.
//
// Build (offline, Debian's golang-go and golang-golang-x-sync-dev):
//   GO111MODULE=off GOPATH=/usr/share/gocode go build -o target/go-reference bench/go-reference/main.go
package main

import (
	"encoding/json"
	"flag"
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
