package capture_test

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/tocsin/tocsin/internal/capture"
	"github.com/tocsin/tocsin/internal/pgcluster"
	"github.com/tocsin/tocsin/internal/pgtest"
	"github.com/tocsin/tocsin/internal/sequencer"
)

// benchRoutes routes rows of bench_repl by replication and of bench_trig by trigger;
// bench_none has no route.
const benchRoutes = `
routes:
  - name: repl
    table: bench_repl
    recipients: { column: owner }
    topic: t
    payload: full
    columns: [id, owner, body]
    capture: replication
  - name: trig
    table: bench_trig
    recipients: { column: owner }
    topic: t
    payload: full
    columns: [id, owner, body]
`

// benchSetup starts a private durable cluster (fsync and synchronous_commit on).
func benchSetup(b *testing.B) *bundle {
	b.Helper()
	_, url := pgtest.NewCluster(b, pgcluster.Config{Durable: true})
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, url+"&pool_max_conns=48")
	require.NoError(b, err)
	b.Cleanup(pool.Close)
	bb := &bundle{ctx: ctx, db: &pgtest.DB{Pool: pool, URL: url}, pool: pool}
	for _, t := range []string{"bench_none", "bench_repl", "bench_trig"} {
		_, err := pool.Exec(ctx, fmt.Sprintf(`CREATE TABLE %s (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, owner text, body text)`, t))
		require.NoError(b, err)
	}
	bb.apply(b, benchRoutes)
	return bb
}

// runConsumer runs a sequencer and a consumer until the returned stop is called.
func (bb *bundle) runConsumer(cfg capture.Config) (stop func()) {
	ctx, cancel := context.WithCancel(bb.ctx)
	log := slog.New(slog.DiscardHandler)
	seq := sequencer.New(bb.pool, sequencer.Config{}, log)
	cfg.DatabaseURL, cfg.WakeFunc = bb.db.URL, seq.Wake
	c := capture.New(bb.pool, cfg, log)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); _ = seq.Run(ctx) }()
	go func() { defer wg.Done(); _ = c.Run(ctx) }()
	return func() { cancel(); wg.Wait() }
}

// BenchmarkReplicationLag measures commit→outbox lag (the source commit time to the
// consumer's commit of its outbox rows) at a steady rate of single-row transactions.
//
//	go test ./internal/capture -run '^$' -bench BenchmarkReplicationLag -benchtime 1x
func BenchmarkReplicationLag(b *testing.B) {
	bb := benchSetup(b)
	var mu sync.Mutex
	var lags []time.Duration
	stop := bb.runConsumer(capture.Config{AppliedFunc: func(a capture.Applied) {
		d := time.Since(a.CommitTime)
		mu.Lock()
		lags = append(lags, d)
		mu.Unlock()
	}})
	defer stop()
	for _, rate := range []int{1000, 5000} {
		b.Run(fmt.Sprintf("changes_per_s=%d", rate), func(b *testing.B) {
			for b.Loop() {
				mu.Lock()
				lags = lags[:0]
				mu.Unlock()
				sent := bb.pace(b, "bench_repl", rate, 5*time.Second, 32)
				eventually(b, time.Minute, "all changes applied", func() bool {
					mu.Lock()
					defer mu.Unlock()
					return len(lags) >= sent
				})
				mu.Lock()
				sort.Slice(lags, func(i, j int) bool { return lags[i] < lags[j] })
				p := func(q float64) float64 { return float64(lags[int(q*float64(len(lags)-1))].Microseconds()) / 1000 }
				b.ReportMetric(p(0.50), "p50_ms")
				b.ReportMetric(p(0.99), "p99_ms")
				b.ReportMetric(float64(sent)/5, "achieved_changes/s")
				mu.Unlock()
			}
		})
	}
}

// pace commits single-row inserts into table at rate per second for d, over conns
// connections, and returns how many it committed.
func (bb *bundle) pace(b *testing.B, table string, rate int, d time.Duration, conns int) int {
	var sent atomic.Int64
	var wg sync.WaitGroup
	interval := time.Duration(int64(time.Second) * int64(conns) / int64(rate))
	end := time.Now().Add(d)
	for w := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			next := time.Now().Add(time.Duration(w) * interval / time.Duration(conns))
			for next.Before(end) {
				time.Sleep(time.Until(next))
				if _, err := bb.pool.Exec(bb.ctx, "INSERT INTO "+table+" (owner, body) VALUES ('o' || (random() * 100)::int, 'hello')"); err != nil {
					b.Error(err)
					return
				}
				sent.Add(1)
				next = next.Add(interval)
			}
		}()
	}
	wg.Wait()
	return int(sent.Load())
}

// BenchmarkReplicationThroughput compares the insert throughput of 16 durable writers on a
// table with no route, with a trigger route, and with a replication route while the
// consumer runs. Modes are interleaved for 3 rounds; medians are reported, and ratios to
// no capture.
//
//	go test ./internal/capture -run '^$' -bench BenchmarkReplicationThroughput -benchtime 1x
func BenchmarkReplicationThroughput(b *testing.B) {
	bb := benchSetup(b)
	const writers, d, rounds = 16, 5 * time.Second, 3
	modes := []string{"none", "trigger", "replication"}
	for b.Loop() {
		results := map[string][]float64{}
		for range rounds {
			for _, mode := range modes {
				var stop func()
				table := "bench_" + map[string]string{"none": "none", "trigger": "trig", "replication": "repl"}[mode]
				if mode == "replication" {
					stop = bb.runConsumer(capture.Config{})
				}
				results[mode] = append(results[mode], bb.throughput(b, table, writers, d))
				if stop != nil {
					stop()
				}
				bb.exec(b, `TRUNCATE bench_none, bench_repl, bench_trig, tocsin.outbox, tocsin.feed`)
				bb.exec(b, `CHECKPOINT`)
			}
		}
		med := map[string]float64{}
		for _, m := range modes {
			slices.Sort(results[m])
			med[m] = results[m][len(results[m])/2]
			b.ReportMetric(med[m], m+"_inserts/s")
		}
		b.ReportMetric(med["trigger"]/med["none"], "trigger_ratio")
		b.ReportMetric(med["replication"]/med["none"], "replication_ratio")
	}
}

// throughput runs writers autocommitting single-row inserts into table for d.
func (bb *bundle) throughput(b *testing.B, table string, writers int, d time.Duration) float64 {
	var n atomic.Int64
	var wg sync.WaitGroup
	end := time.Now().Add(d)
	for range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(end) {
				if _, err := bb.pool.Exec(bb.ctx, "INSERT INTO "+table+" (owner, body) VALUES ('o' || (random() * 100)::int, 'hello')"); err != nil {
					b.Error(err)
					return
				}
				n.Add(1)
			}
		}()
	}
	wg.Wait()
	return float64(n.Load()) / d.Seconds()
}
