// Command loadgen is the load generator of `make bench`: keep-alive HTTP/1.1 clients over TLS,
// each in its own goroutine, that check every answer.
//
// The request body and the expected answer both carry the uid 00000000-0000-0000-0000-000000000000.
// Each request gets a uid of its own (same length, so Content-Length stays fixed), and its answer
// must be byte for byte the expected one with that uid: the uid echoed, the patch exactly the one
// the bench checked against decide() beforehand (with -echo=false, the fixed answer of the bare app). It prints one JSON object: requests, errors, the
// first error, latency percentiles and its own CPU seconds, so a saturated generator shows.
package main

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

var placeholder = []byte("00000000-0000-0000-0000-000000000000")

type result struct {
	Requests          int     `json:"requests"`
	Errors            int     `json:"errors"`
	FirstError        string  `json:"first_error,omitempty"`
	Seconds           float64 `json:"seconds"`
	RequestsPerSecond float64 `json:"requests_per_second"`
	P50               float64 `json:"p50_ms"`
	P90               float64 `json:"p90_ms"`
	P99               float64 `json:"p99_ms"`
	Max               float64 `json:"max_ms"`
	CPUSeconds        float64 `json:"generator_cpu_seconds"`
}

func main() {
	url := flag.String("url", "", "https URL to POST to")
	caFile := flag.String("ca", "", "PEM file of the CA that signed the server's certificate")
	bodyFile := flag.String("body", "", "request body, with the placeholder uid")
	expectFile := flag.String("expect", "", "expected answer body, with the placeholder uid")
	concurrency := flag.Int("concurrency", 8, "clients, one keep-alive connection each")
	seconds := flag.Float64("seconds", 5, "how long to send")
	echo := flag.Bool("echo", true, "the answer echoes each request's uid; false: it is fixed (the bare app)")
	flag.Parse()

	body, expect, pool := mustRead(*bodyFile), mustRead(*expectFile), x509.NewCertPool()
	if !pool.AppendCertsFromPEM(mustRead(*caFile)) {
		fail("no certificate in %s", *caFile)
	}
	bodyAt, expectAt := bytes.Index(body, placeholder), bytes.Index(expect, placeholder)
	if bodyAt < 0 || (*echo && expectAt < 0) {
		fail("the body and the expected answer must both carry the uid %s", placeholder)
	}
	transport := &http.Transport{
		TLSClientConfig:     &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"},
		MaxIdleConnsPerHost: *concurrency,
		MaxConnsPerHost:     *concurrency,
		DisableCompression:  true,
		ForceAttemptHTTP2:   false,
	}
	client := &http.Client{Transport: transport, Timeout: 30 * time.Second}

	var (
		counter    atomic.Uint64
		mu         sync.Mutex
		latencies  []time.Duration
		errors     int
		firstError string
	)
	send := func(worker int, timed bool) {
		uid := []byte(fmt.Sprintf("%08x-0000-0000-0000-%012x", worker, counter.Add(1)))
		request := append([]byte(nil), body...)
		copy(request[bodyAt:], uid)
		want := expect
		if *echo {
			want = append([]byte(nil), expect...)
			copy(want[expectAt:], uid)
		}
		started := time.Now()
		problem := exchange(client, *url, request, want)
		elapsed := time.Since(started)
		if !timed {
			if problem != "" {
				fail("warm-up request: %s", problem)
			}
			return
		}
		mu.Lock()
		defer mu.Unlock()
		latencies = append(latencies, elapsed)
		if problem != "" {
			errors++
			if firstError == "" {
				firstError = problem
			}
		}
	}

	// Open every connection (TLS handshake) before the clock starts.
	var warm sync.WaitGroup
	for worker := 0; worker < *concurrency; worker++ {
		warm.Add(1)
		go func(worker int) { defer warm.Done(); send(worker, false) }(worker)
	}
	warm.Wait()
	cpuBefore := cpuSeconds()
	started := time.Now()
	deadline := started.Add(time.Duration(*seconds * float64(time.Second)))
	var run sync.WaitGroup
	for worker := 0; worker < *concurrency; worker++ {
		run.Add(1)
		go func(worker int) {
			defer run.Done()
			for time.Now().Before(deadline) {
				send(worker, true)
			}
		}(worker)
	}
	run.Wait()
	elapsed := time.Since(started).Seconds()

	sort.Slice(latencies, func(i, j int) bool { return latencies[i] < latencies[j] })
	at := func(q float64) float64 {
		if len(latencies) == 0 {
			return 0
		}
		index := int(q * float64(len(latencies)-1))
		return float64(latencies[index].Microseconds()) / 1000
	}
	out := result{
		Requests: len(latencies), Errors: errors, FirstError: firstError, Seconds: elapsed,
		RequestsPerSecond: float64(len(latencies)) / elapsed,
		P50:               at(0.50), P90: at(0.90), P99: at(0.99), Max: at(1),
		CPUSeconds: cpuSeconds() - cpuBefore,
	}
	if err := json.NewEncoder(os.Stdout).Encode(out); err != nil {
		fail("%v", err)
	}
}

// exchange sends one request and returns "" if the answer is the expected one, else what is wrong.
func exchange(client *http.Client, url string, request, want []byte) string {
	response, err := client.Post(url, "application/json", bytes.NewReader(request))
	if err != nil {
		return err.Error()
	}
	defer response.Body.Close()
	got, err := io.ReadAll(response.Body)
	if err != nil {
		return err.Error()
	}
	if response.StatusCode != http.StatusOK {
		return fmt.Sprintf("status %d: %.200s", response.StatusCode, got)
	}
	if !bytes.Equal(got, want) {
		return fmt.Sprintf("unexpected answer: %.300s", got)
	}
	return ""
}

func cpuSeconds() float64 {
	var usage syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &usage); err != nil {
		fail("getrusage: %v", err)
	}
	return time.Duration(usage.Utime.Nano() + usage.Stime.Nano()).Seconds()
}

func mustRead(path string) []byte {
	data, err := os.ReadFile(path)
	if err != nil {
		fail("%v", err)
	}
	return data
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "loadgen: "+format+"\n", args...)
	os.Exit(2)
}
