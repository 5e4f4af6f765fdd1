package bench

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"maps"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/tocsin/tocsin/internal/sqlfile"
)

var (
	//go:embed queries.sql
	queriesSQL            string
	queries               = sqlfile.Parse("bench/queries.sql", queriesSQL)
	benchPublishSoakSQL   = queries.Get("bench_publish_soak")
	backendPidSQL         = queries.Get("backend_pid")
	benchPublishBatchSQL  = queries.Get("bench_publish_batch")
	benchPublishFanoutSQL = queries.Get("bench_publish_fanout")
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
	// Transports to measure, one run each: "long-poll", "sse" or "mixed" (clients
	// alternate between SSE and long polling).
	Transports []string
	// PerTx lists the events per publishing transaction to measure, one run each (1).
	PerTx []int
	// Writers is how many connections publish side by side (LatencyWritersDefault).
	Writers int
	// Binary is the tocsin executable to run the server with (default: this executable).
	Binary string
	// Rest is how long CPU is measured with the clients connected and nothing published,
	// before the run (RestDefault when zero).
	Rest time.Duration
	// Roles are the roles of the measured `tocsin serve` (LatencyRolesDefault when empty;
	// "all" adds River's workers and the grouping mover to what is measured).
	Roles string
}

// Defaults of LatencyConfig.
const (
	// RestDefault is LatencyConfig.Rest's default.
	RestDefault            = 10 * time.Second
	LatencyRateDefault     = 1000
	LatencyDurationDefault = 10 * time.Second
	LatencyClientsDefault  = 100
	LatencyWritersDefault  = 8
	LatencyRolesDefault    = "api,sequencer"
	// latencyCatchUpIdle is how long the bench waits for a missing event after the last
	// arrival before it counts the rest as lost.
	latencyCatchUpIdle = 15 * time.Second
)

// withDefaults fills the zero fields of c.
func (c LatencyConfig) withDefaults() LatencyConfig {
	if c.Rate <= 0 {
		c.Rate = LatencyRateDefault
	}
	if c.Duration <= 0 {
		c.Duration = LatencyDurationDefault
	}
	if c.Clients <= 0 {
		c.Clients = LatencyClientsDefault
	}
	if len(c.Transports) == 0 {
		c.Transports = []string{"long-poll"}
	}
	if len(c.PerTx) == 0 {
		c.PerTx = []int{1}
	}
	if c.Writers <= 0 {
		c.Writers = LatencyWritersDefault
	}
	if c.Rest <= 0 {
		c.Rest = RestDefault
	}
	if c.Roles == "" {
		c.Roles = LatencyRolesDefault
	}
	return c
}

// LatencyResult is the commit→client latency of one transport and transaction size.
type LatencyResult struct {
	Transport string
	PerTx     int
	Rate      int
	Events    int
	Received  int
	// Lost counts events that never reached their client; Duplicated, extra arrivals.
	Lost, Duplicated int
	// Published is the rate the writers achieved (events per second); Delivered, events
	// received per second from the first publish to the last arrival.
	Published, Delivered float64
	P50, P99             time.Duration
	Max                  time.Duration
	// ByTransport splits a mixed run's latency by the clients' transport.
	ByTransport map[string]percentiles
	// CPU is what the tocsin process and the PostgreSQL server used while the events were
	// published (the writers' own transactions included); AtRest, with the clients
	// connected and nothing published.
	CPU, AtRest CPUShare
	// Sessions and SessionsAtRest split PostgreSQL's CPU by session (nil when the server
	// is not on this machine).
	Sessions, SessionsAtRest SessionShares
	// Pipeline is what the node's sequencer did meanwhile (from its /metrics).
	Pipeline pipeline
	// Reconnects and Errors count the clients' failed or ended requests.
	Reconnects, Errors int64
	ErrorKinds         map[string]int64
}

const latencySecret = "tocsin-bench-secret-0123456789abcdef"

// RunLatency measures commit→client latency: writers publish Rate events per second to
// Clients recipients through tocsin.publish, PerTx per transaction; each client follows its
// feed from a cursor over its transport, and an event's latency runs from just before its
// writer's COMMIT to its arrival at the client, on one clock. It fails when an event is
// lost or duplicated.
func RunLatency(ctx context.Context, cfg LatencyConfig, out io.Writer) ([]LatencyResult, error) {
	cfg = cfg.withDefaults()
	for _, t := range cfg.Transports {
		if err := checkTransport(t); err != nil {
			return nil, err
		}
	}
	srv, err := openServer(ctx, cfg.DatabaseURL)
	if err != nil {
		return nil, err
	}
	defer srv.close()

	var results []LatencyResult
	for _, perTx := range cfg.PerTx {
		for _, name := range cfg.Transports {
			r, err := runLatencyOnce(ctx, srv, cfg, name, max(perTx, 1))
			if err != nil {
				return results, fmt.Errorf("measuring %s, %d per transaction: %w", name, perTx, err)
			}
			results = append(results, r)
		}
	}
	fmt.Fprintf(out, "commit→client latency — %d events/s to %d recipients for %s, %d writers, durable commits, %d cores, load average %s\n",
		cfg.Rate, cfg.Clients, cfg.Duration, cfg.Writers, runtime.NumCPU(), loadAverage())
	fmt.Fprintf(out, "%-10s %6s %8s %8s %5s %5s %9s %9s %9s %9s %9s\n", "transport", "per tx", "events", "received",
		"lost", "dup", "publ/s", "p50", "p99", "max", "deliv/s")
	for _, r := range results {
		fmt.Fprintf(out, "%-10s %6d %8d %8d %5d %5d %9.0f %9s %9s %9s %9.0f\n", r.Transport, r.PerTx, r.Events, r.Received,
			r.Lost, r.Duplicated, r.Published, r.P50.Round(10*time.Microsecond), r.P99.Round(10*time.Microsecond),
			r.Max.Round(10*time.Microsecond), r.Delivered)
		for _, t := range slices.Sorted(maps.Keys(r.ByTransport)) {
			fmt.Fprintf(out, "  of which %-9s %s\n", t+":", r.ByTransport[t])
		}
	}
	fmt.Fprintf(out, "CPU from /proc (PostgreSQL: the whole server, the writers' transactions included)\n")
	for _, r := range results {
		perEvent := ""
		if r.CPU.Postgres >= 0 {
			perEvent = fmt.Sprintf(" = %.0f µs per event", (r.CPU.Tocsin+r.CPU.Postgres)*1e6/float64(r.Rate))
		}
		fmt.Fprintf(out, "%-10s %3d/tx publishing: %s%s\n", r.Transport, r.PerTx, r.CPU, perEvent)
		fmt.Fprintf(out, "%-10s %3d/tx at rest:    %s (%d clients connected, %s)\n", r.Transport, r.PerTx, r.AtRest, cfg.Clients, cfg.Rest)
	}
	if len(results) > 0 && results[0].Sessions != nil {
		fmt.Fprintf(out, "PostgreSQL's CPU by session (application_name; tocsin = the node's pool: fan-out reads, API, settings, River)\n")
		for _, r := range results {
			fmt.Fprintf(out, "%-10s %3d/tx publishing: %s\n", r.Transport, r.PerTx, r.Sessions.String(r.CPU.Postgres))
			fmt.Fprintf(out, "%-10s %3d/tx at rest:    %s\n", r.Transport, r.PerTx, r.SessionsAtRest.String(r.AtRest.Postgres))
		}
	}
	for _, r := range results {
		fmt.Fprintf(out, "%-10s %3d/tx %s\n", r.Transport, r.PerTx, r.Pipeline)
	}
	perTx := make([]string, len(cfg.PerTx))
	for i, n := range cfg.PerTx {
		perTx[i] = strconv.Itoa(n)
	}
	fmt.Fprintf(out, "reproduce: tocsin bench latency --rate %d --duration %s --clients %d --transports %s --per-tx %s --writers %d --rest %s\n",
		cfg.Rate, cfg.Duration, cfg.Clients, strings.Join(cfg.Transports, ","), strings.Join(perTx, ","), cfg.Writers, cfg.Rest)
	var failures []error
	for _, r := range results {
		if r.Errors > 0 {
			fmt.Fprintf(out, "%s, %d/tx: %d client requests failed or ended (each resumed from its cursor):\n%s",
				r.Transport, r.PerTx, r.Errors, errorLines(r.ErrorKinds))
		}
		if r.Lost != 0 || r.Duplicated != 0 {
			failures = append(failures, fmt.Errorf("%s, %d per transaction: %d events lost, %d duplicated",
				r.Transport, r.PerTx, r.Lost, r.Duplicated))
		}
	}
	return results, errors.Join(failures...)
}

func runLatencyOnce(ctx context.Context, srv *server, cfg LatencyConfig, transport string, perTx int) (LatencyResult, error) {
	sc, err := newScratch(ctx, srv.adminURL, cfg.Writers)
	if err != nil {
		return LatencyResult{}, err
	}
	defer sc.close()
	// The server under measurement is a real `tocsin serve` process, as a deployment runs it.
	base, pid, stopNode, err := startServe(ctx, cfg.Binary, sc, "--max-connections", strconv.Itoa(cfg.Clients+1000),
		"--roles", cfg.Roles)
	if err != nil {
		return LatencyResult{}, err
	}
	defer stopNode()

	clients, err := openClients(ctx, base, cfg.Clients, transport)
	if err != nil {
		return LatencyResult{}, err
	}
	defer clients.close()
	total := int(int64(cfg.Rate) * int64(cfg.Duration) / int64(time.Second))
	pub := &loadPublisher{Pool: sc.writers, Rate: cfg.Rate, PerTx: perTx, Writers: cfg.Writers, Total: total,
		Recipients: cfg.Clients}
	pub.init()
	arr := newArrivals(total)
	var (
		received atomic.Int64
		lastAt   atomic.Int64
	)
	stats := newFollowStats()
	clientCtx, stopClients := context.WithCancel(ctx)
	defer stopClients()
	waitClients := clients.follow(clientCtx, time.Second, stats, func(c *loadClient, e soakEvent, at time.Time) {
		if arr.got(pub, e.Data.N, at) {
			received.Add(1)
			lastAt.Store(at.UnixNano())
		}
	})
	// Let the clients park (each has its cursor already), then measure the CPU at rest.
	waitConnected(ctx, base, cfg.Clients)
	time.Sleep(500 * time.Millisecond)
	postgres := postmasterPID(ctx, sc.ctl)
	rest := startCPUWatch(pid, postgres)
	restSessions := startSessionWatch(ctx, sc.ctl, postgres)
	time.Sleep(cfg.Rest)
	atRest := rest.stop()
	sessionsAtRest := restSessions.stop()

	busy := startCPUWatch(pid, postgres)
	busySessions := startSessionWatch(ctx, sc.ctl, postgres)
	watch := startPipelineWatch(base)
	writeErr := pub.run(ctx)
	cpu := busy.stop()
	sessions := busySessions.stop()
	arr.waitAll(ctx, &received, int64(total), latencyCatchUpIdle)
	pipe := watch.end()
	stopClients()
	waitClients()
	if writeErr != nil {
		return LatencyResult{}, writeErr
	}

	r := LatencyResult{Transport: transport, PerTx: perTx, Rate: cfg.Rate, Events: total, Received: int(received.Load()),
		CPU: cpu, AtRest: atRest, Sessions: sessions, SessionsAtRest: sessionsAtRest, Published: pub.rate(), Reconnects: stats.reconnects.Load(),
		Pipeline: pipe}
	r.Errors, r.ErrorKinds = stats.errs.snapshot()
	lost, dup := arr.lostAndDuplicated()
	r.Lost, r.Duplicated = int(lost), int(dup)
	if span := time.Duration(lastAt.Load() - pub.started.UnixNano()); span > 0 {
		r.Delivered = float64(r.Received) / span.Seconds()
	}
	all := make([]time.Duration, 0, total)
	split := map[string][]time.Duration{}
	for n := range total {
		if arr.count[n].Load() == 0 {
			continue
		}
		d := time.Duration(arr.latency[n].Load())
		all = append(all, d)
		if transport == TransportMixed {
			t := clients.list[n%cfg.Clients].transport
			split[t] = append(split[t], d)
		}
	}
	p := percentilesOf(all)
	r.P50, r.P99, r.Max = p.P50, p.P99, p.Max
	if len(split) > 0 {
		r.ByTransport = map[string]percentiles{}
		for t, d := range split {
			r.ByTransport[t] = percentilesOf(d)
		}
	}
	return r, nil
}

func recipient(i int) string { return fmt.Sprintf("bench-user-%d", i) }
