package bench

import (
	"bufio"
	"context"
	_ "embed"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tocsin/tocsin/internal/auth"

	"github.com/tocsin/tocsin/internal/sqlfile"
)

var (
	//go:embed queries.sql
	queriesSQL             string
	queries                = sqlfile.Parse("bench/queries.sql", queriesSQL)
	benchPublishLatencySQL = queries.Get("bench_publish_latency")
	benchPublishSoakSQL    = queries.Get("bench_publish_soak")
	backendPidSQL          = queries.Get("backend_pid")
)

// LatencyConfig configures RunLatency.
type LatencyConfig struct {
	// DatabaseURL names a server to create the scratch database on; empty starts a private
	// durable cluster.
	DatabaseURL string
	// Rate is events per second, spread evenly over the run.
	Rate int
	// Duration of the measured run.
	Duration time.Duration
	// Clients is how many recipients follow their feed, one client each.
	Clients int
	// Transports to measure, one run each: "long-poll" (default) and any registered by
	// transports (see latencyTransports).
	Transports []string
	// Binary is the tocsin executable to run the server with (default: this executable).
	Binary string
	// Rest is how long CPU is measured with the clients connected and nothing published,
	// before the run (RestDefault when zero).
	Rest time.Duration
}

// RestDefault is LatencyConfig.Rest's default.
const RestDefault = 10 * time.Second

// LatencyResult is the commit→client latency of one transport.
type LatencyResult struct {
	Transport string
	Rate      int
	Events    int
	Received  int
	P50, P99  time.Duration
	Max       time.Duration
	// CPU is what the tocsin process and the PostgreSQL server used while the events were
	// published (the writers' own transactions included); AtRest, with the clients
	// connected and nothing published.
	CPU, AtRest CPUShare
}

// latencyClient follows one recipient's feed and reports each event's data as it arrives.
type latencyClient func(ctx context.Context, base, token string, got func(data json.RawMessage)) error

var latencyTransports = map[string]latencyClient{
	"long-poll": longPollClient,
	"sse":       sseClient,
}

const latencySecret = "tocsin-bench-secret-0123456789abcdef"

// RunLatency measures commit→client latency: writers publish Rate events per second to
// Clients recipients through tocsin.publish; each client follows its feed over the
// transport, and an event's latency runs from just before its writer's COMMIT to its
// arrival at the client, on one clock.
func RunLatency(ctx context.Context, cfg LatencyConfig, out io.Writer) ([]LatencyResult, error) {
	if cfg.Rate <= 0 {
		cfg.Rate = 1000
	}
	if cfg.Duration <= 0 {
		cfg.Duration = 10 * time.Second
	}
	if cfg.Clients <= 0 {
		cfg.Clients = 100
	}
	if len(cfg.Transports) == 0 {
		cfg.Transports = []string{"long-poll"}
	}
	if cfg.Rest <= 0 {
		cfg.Rest = RestDefault
	}
	srv, err := openServer(ctx, cfg.DatabaseURL)
	if err != nil {
		return nil, err
	}
	defer srv.close()

	var results []LatencyResult
	for _, name := range cfg.Transports {
		client, ok := latencyTransports[name]
		if !ok {
			return results, fmt.Errorf("unknown transport %q", name)
		}
		r, err := runLatencyOnce(ctx, srv, cfg, name, client)
		if err != nil {
			return results, fmt.Errorf("measuring %s: %w", name, err)
		}
		results = append(results, r)
	}
	fmt.Fprintf(out, "commit→client latency — %d events/s to %d recipients for %s, durable commits, %d cores\n",
		cfg.Rate, cfg.Clients, cfg.Duration, runtime.NumCPU())
	fmt.Fprintf(out, "%-10s %8s %8s %9s %9s %9s\n", "transport", "events", "received", "p50", "p99", "max")
	for _, r := range results {
		fmt.Fprintf(out, "%-10s %8d %8d %9s %9s %9s\n", r.Transport, r.Events, r.Received,
			r.P50.Round(10*time.Microsecond), r.P99.Round(10*time.Microsecond), r.Max.Round(10*time.Microsecond))
	}
	fmt.Fprintf(out, "CPU from /proc (PostgreSQL: the whole server, the writers' transactions included)\n")
	for _, r := range results {
		perEvent := ""
		if r.CPU.Postgres >= 0 {
			perEvent = fmt.Sprintf(" = %.0f µs per event", (r.CPU.Tocsin+r.CPU.Postgres)*1e6/float64(r.Rate))
		}
		fmt.Fprintf(out, "%-10s publishing: %s%s\n", r.Transport, r.CPU, perEvent)
		fmt.Fprintf(out, "%-10s at rest:    %s (%d clients connected, %s)\n", r.Transport, r.AtRest, cfg.Clients, cfg.Rest)
	}
	return results, nil
}

func runLatencyOnce(ctx context.Context, srv *server, cfg LatencyConfig, transport string, client latencyClient) (LatencyResult, error) {
	sc, err := newScratch(ctx, srv.adminURL, 8)
	if err != nil {
		return LatencyResult{}, err
	}
	defer sc.close()
	pool := sc.writers
	// The server under measurement is a real `tocsin serve` process, as a deployment runs it.
	base, pid, stopNode, err := startServe(ctx, cfg.Binary, sc)
	if err != nil {
		return LatencyResult{}, err
	}
	defer stopNode()

	var (
		mu       sync.Mutex
		sentAt   = map[int64]time.Time{}
		latency  []time.Duration
		received int
	)
	got := func(data json.RawMessage) {
		now := time.Now()
		var d struct{ N int64 }
		if json.Unmarshal(data, &d) != nil {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		if t0, ok := sentAt[d.N]; ok {
			latency = append(latency, now.Sub(t0))
			delete(sentAt, d.N)
		}
		received++
	}
	clientCtx, stopClients := context.WithCancel(ctx)
	var clients sync.WaitGroup
	for i := range cfg.Clients {
		tok, err := auth.Mint(auth.Config{HS256Secret: []byte(latencySecret)}, recipient(i), time.Hour, "")
		if err != nil {
			stopClients()
			return LatencyResult{}, err
		}
		clients.Go(func() { _ = client(clientCtx, base, tok, got) })
	}
	time.Sleep(500 * time.Millisecond) // let the clients park
	postgres := postmasterPID(ctx, sc.ctl)
	rest := startCPUWatch(pid, postgres)
	time.Sleep(cfg.Rest)
	atRest := rest.stop()

	// Writers: one event per transaction, paced evenly; a few writers so that a slow commit
	// does not hold the schedule back.
	total := int(int64(cfg.Rate) * int64(cfg.Duration) / int64(time.Second))
	interval := time.Second / time.Duration(cfg.Rate)
	jobs := make(chan int64, 1024)
	var writers sync.WaitGroup
	var writeErr error
	var errOnce sync.Once
	for range 8 {
		writers.Go(func() {
			for n := range jobs {
				err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
					_, err := tx.Exec(ctx, benchPublishLatencySQL,
						recipient(int(n)%cfg.Clients), n)
					mu.Lock()
					sentAt[n] = time.Now()
					mu.Unlock()
					return err
				})
				if err != nil {
					errOnce.Do(func() { writeErr = err })
				}
			}
		})
	}
	busy := startCPUWatch(pid, postgres)
	start := time.Now()
	for n := range total {
		if d := time.Until(start.Add(time.Duration(n) * interval)); d > 0 {
			time.Sleep(d)
		}
		jobs <- int64(n)
	}
	close(jobs)
	writers.Wait()
	cpu := busy.stop()
	// Wait for stragglers, then stop.
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		mu.Lock()
		done := received >= total
		mu.Unlock()
		if done {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	stopClients()
	clients.Wait()
	if writeErr != nil {
		return LatencyResult{}, writeErr
	}
	mu.Lock()
	defer mu.Unlock()
	slices.Sort(latency)
	r := LatencyResult{Transport: transport, Rate: cfg.Rate, Events: total, Received: received, CPU: cpu, AtRest: atRest}
	if len(latency) > 0 {
		r.P50 = latency[len(latency)*50/100]
		r.P99 = latency[min(len(latency)-1, len(latency)*99/100)]
		r.Max = latency[len(latency)-1]
	}
	return r, nil
}

func recipient(i int) string { return fmt.Sprintf("bench-user-%d", i) }

// longPollClient follows the feed with GET /v1/feed?wait=30.
func longPollClient(ctx context.Context, base, token string, got func(json.RawMessage)) error {
	cursor := "now"
	for ctx.Err() == nil {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/v1/feed?wait=30&limit=1000&after="+cursor, nil)
		if err != nil {
			return err
		}
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		var page struct {
			Events []struct {
				Data json.RawMessage `json:"data"`
			} `json:"events"`
			Cursor string `json:"cursor"`
		}
		err = json.NewDecoder(resp.Body).Decode(&page)
		resp.Body.Close()
		if err != nil {
			return err
		}
		for _, e := range page.Events {
			got(e.Data)
		}
		cursor = page.Cursor
	}
	return nil
}

// sseClient follows the feed with GET /v1/feed/stream, parsing the wire format itself.
func sseClient(ctx context.Context, base, token string, got func(json.RawMessage)) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/v1/feed/stream?after=now", nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("stream answered %s", resp.Status)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if data, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
			var e struct {
				Data json.RawMessage `json:"data"`
			}
			if json.Unmarshal([]byte(data), &e) == nil {
				got(e.Data)
			}
		}
	}
	return sc.Err()
}
