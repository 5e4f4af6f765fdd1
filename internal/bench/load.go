package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"golang.org/x/sync/errgroup"

	"github.com/tocsin/tocsin/internal/auth"
)

// The pieces the end-to-end benches (latency, fanout, storm) share: clients that follow
// their feed from a cursor over SSE or long polling, reconnecting after errors, and
// writers that publish numbered events at a steady rate, one or more per transaction.

// Transport mixes a bench accepts beside the plain transport names.
const (
	// TransportMixed alternates SSE and long polling from one client to the next.
	TransportMixed = "mixed"
	// loadLongPollWait is a long poll's wait, in seconds.
	loadLongPollWait = 30
	// loadConnectGate bounds the clients resolving their starting cursor at once.
	loadConnectGate = 64
)

// clientTransport is the transport of client i under mix ("sse", "long-poll" or "mixed").
func clientTransport(mix string, i int) string {
	if mix == TransportMixed {
		return [2]string{"sse", "long-poll"}[i%2]
	}
	return mix
}

func checkTransport(mix string) error {
	switch mix {
	case "sse", "long-poll", TransportMixed:
		return nil
	}
	return fmt.Errorf("unknown transport %q (sse, long-poll or mixed)", mix)
}

// loadClient follows one recipient's feed.
type loadClient struct {
	soakClient
	index int
	// received counts the distinct events this client has (see loadClients.follow).
	received atomic.Int64
}

// loadClients are the followers of one run and the HTTP transport sized for them.
type loadClients struct {
	base    string
	list    []*loadClient
	httpc   *http.Client
	closeFn func()
}

// newHTTPClient returns a client whose transport keeps a connection per follower: the
// default transport keeps two idle connections per host, so thousands of long polls would
// dial anew for every request.
func newHTTPClient(conns int) (*http.Client, func()) {
	t := &http.Transport{MaxIdleConnsPerHost: conns, MaxIdleConns: conns, DisableCompression: true,
		IdleConnTimeout: 90 * time.Second}
	return &http.Client{Transport: t}, t.CloseIdleConnections
}

// openClients makes n clients for recipients 0…n-1 over mix and resolves each one's
// starting cursor (after=now) with a short poll, so that nothing published afterwards can
// fall before a client's cursor.
func openClients(ctx context.Context, base string, n int, mix string) (*loadClients, error) {
	httpc, closeIdle := newHTTPClient(n)
	l := &loadClients{base: base, httpc: httpc, closeFn: closeIdle, list: make([]*loadClient, n)}
	for i := range l.list {
		tok, err := auth.Mint(auth.Config{HS256Secret: []byte(latencySecret)}, recipient(i), 24*time.Hour, "")
		if err != nil {
			return nil, err
		}
		c := &loadClient{index: i}
		c.transport, c.recipient, c.token = clientTransport(mix, i), recipient(i), tok
		l.list[i] = c
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(loadConnectGate)
	for _, c := range l.list {
		g.Go(func() error {
			_, cursor, err := c.poll(gctx, httpc, base, "now", 0)
			if err != nil {
				return fmt.Errorf("resolving the starting cursor of %s: %w", c.recipient, err)
			}
			c.cursor = cursor
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		closeIdle()
		return nil, err
	}
	return l, nil
}

func (l *loadClients) close() { l.closeFn() }

// followStats counts what happened to the followers' connections.
type followStats struct {
	reconnects atomic.Int64
	errs       errorKinds
}

func newFollowStats() *followStats { return &followStats{errs: errorKinds{kinds: map[string]int64{}}} }

// follow runs every client until ctx ends: each reads its feed over its transport from its
// cursor and, after an error or the end of a stream, reconnects from that cursor after a
// random pause of up to retry (at once after a stream the server ended cleanly). got is called for each event as it arrives, from the
// client's goroutine. The returned func waits for the clients to stop.
func (l *loadClients) follow(ctx context.Context, retry time.Duration, stats *followStats,
	got func(c *loadClient, e soakEvent, at time.Time)) (wait func()) {
	var wg sync.WaitGroup
	for _, c := range l.list {
		wg.Go(func() {
			deliver := func(events []soakEvent) {
				at := time.Now()
				for _, e := range events {
					got(c, e, at)
				}
			}
			for ctx.Err() == nil {
				var err error
				if c.transport == "sse" {
					err = c.stream(ctx, l.httpc, l.base, deliver)
				} else {
					for err == nil {
						var events []soakEvent
						if events, c.cursor, err = c.poll(ctx, l.httpc, l.base, c.cursor, loadLongPollWait); err == nil {
							deliver(events)
						}
					}
				}
				if ctx.Err() != nil {
					return
				}
				stats.reconnects.Add(1)
				var ended endedByServer
				if errors.As(err, &ended) {
					stats.errs.ended(ended.frame)
					continue // a clean end asks for a reconnect, at once
				}
				if err != nil {
					stats.errs.add(c.transport, err)
				}
				if retry > 0 {
					_ = sleep(ctx, rand.N(retry))
				}
			}
		})
	}
	return wg.Wait
}

// loadPublisher publishes events 0…Total-1, event n to recipient n mod Recipients with
// data {"n": n}, PerTx events per transaction, Rate events per second on Writers
// connections. A transaction that falls behind the schedule goes at once, so the achieved
// rate shows whether the writers kept up.
type loadPublisher struct {
	Pool       *pgxpool.Pool
	Rate       int
	PerTx      int
	Writers    int
	Total      int
	Recipients int

	// commitAt is, per event, the clock just before its transaction was sent (Unix ns).
	commitAt []atomic.Int64
	// perRecipient counts each recipient's committed events.
	perRecipient []atomic.Int64
	committed    atomic.Int64
	started      time.Time
	elapsed      time.Duration
}

func (p *loadPublisher) init() {
	p.commitAt = make([]atomic.Int64, p.Total)
	p.perRecipient = make([]atomic.Int64, p.Recipients)
}

// run publishes everything, or stops at the first error.
func (p *loadPublisher) run(ctx context.Context) error {
	var claimed atomic.Int64
	txs := (p.Total + p.PerTx - 1) / p.PerTx
	g, gctx := errgroup.WithContext(ctx)
	p.started = time.Now()
	for range p.Writers {
		g.Go(func() error {
			recipients := make([]string, 0, p.PerTx)
			numbers := make([]int64, 0, p.PerTx)
			for {
				k := int(claimed.Add(1) - 1)
				if k >= txs {
					return nil
				}
				first := k * p.PerTx
				due := p.started.Add(time.Duration(float64(first) / float64(p.Rate) * float64(time.Second)))
				if err := sleep(gctx, time.Until(due)); err != nil {
					return err
				}
				recipients, numbers = recipients[:0], numbers[:0]
				for n := first; n < min(first+p.PerTx, p.Total); n++ {
					recipients = append(recipients, recipient(n%p.Recipients))
					numbers = append(numbers, int64(n))
				}
				if err := p.publish(gctx, recipients, numbers); err != nil {
					return err
				}
			}
		})
	}
	err := g.Wait()
	p.elapsed = time.Since(p.started)
	return err
}

// publish commits one transaction of events: one statement, which commits by itself
// (one round trip). Its events' clock starts just before the statement is sent, so their
// latency includes the statement's own execution and commit.
func (p *loadPublisher) publish(ctx context.Context, recipients []string, numbers []int64) error {
	now := time.Now().UnixNano()
	for _, n := range numbers {
		p.commitAt[n].Store(now)
	}
	if _, err := p.Pool.Exec(ctx, benchPublishBatchSQL, recipients, numbers); err != nil {
		return fmt.Errorf("publishing: %w", err)
	}
	for _, n := range numbers {
		p.perRecipient[int(n)%p.Recipients].Add(1)
	}
	p.committed.Add(int64(len(numbers)))
	return nil
}

// rate is the events per second the writers achieved.
func (p *loadPublisher) rate() float64 {
	if p.elapsed <= 0 {
		return 0
	}
	return float64(p.committed.Load()) / p.elapsed.Seconds()
}

// arrivals records, per event, how many times it reached its client and the latency of its
// first arrival.
type arrivals struct {
	count   []atomic.Int32
	latency []atomic.Int64 // ns from just before COMMIT to the first arrival
}

func newArrivals(total int) *arrivals {
	return &arrivals{count: make([]atomic.Int32, total), latency: make([]atomic.Int64, total)}
}

// got records event n arriving at, published by p; it returns false for a repeat.
func (a *arrivals) got(p *loadPublisher, n int64, at time.Time) bool {
	if n < 0 || int(n) >= len(a.count) {
		return false
	}
	if a.count[n].Add(1) != 1 {
		return false
	}
	a.latency[n].Store(at.UnixNano() - p.commitAt[n].Load())
	return true
}

// waitAll waits until every event arrived, or until nothing arrived for idle.
func (a *arrivals) waitAll(ctx context.Context, received *atomic.Int64, total int64, idle time.Duration) {
	last, lastAt := received.Load(), time.Now()
	for ctx.Err() == nil {
		n := received.Load()
		if n >= total {
			return
		}
		if n != last {
			last, lastAt = n, time.Now()
		} else if time.Since(lastAt) > idle {
			return
		}
		_ = sleep(ctx, 10*time.Millisecond)
	}
}

// lostAndDuplicated counts the events that never arrived and the extra arrivals.
func (a *arrivals) lostAndDuplicated() (lost, duplicated int64) {
	for i := range a.count {
		switch c := a.count[i].Load(); {
		case c == 0:
			lost++
		case c > 1:
			duplicated += int64(c - 1)
		}
	}
	return lost, duplicated
}

// percentiles of a set of durations.
type percentiles struct {
	N             int
	P50, P99, Max time.Duration
}

func percentilesOf(d []time.Duration) percentiles {
	if len(d) == 0 {
		return percentiles{}
	}
	slices.Sort(d)
	return percentiles{N: len(d), P50: d[len(d)*50/100], P99: d[min(len(d)-1, len(d)*99/100)], Max: d[len(d)-1]}
}

func (p percentiles) String() string {
	r := func(d time.Duration) string { return d.Round(10 * time.Microsecond).String() }
	return fmt.Sprintf("p50 %s, p99 %s, max %s", r(p.P50), r(p.P99), r(p.Max))
}

// errorLines formats error kinds, most frequent first.
func errorLines(kinds map[string]int64) string {
	keys := make([]string, 0, len(kinds))
	for k := range kinds {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b string) int { return int(kinds[b] - kinds[a]) })
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "  %8d  %s\n", kinds[k], k)
	}
	return b.String()
}

// scrapeMetrics reads the named series (exact names with their labels, as /metrics prints
// them) from the server's /metrics; absent series are missing from the result.
func scrapeMetrics(base string, names ...string) map[string]float64 {
	out := map[string]float64{}
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		return out
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		name, value, ok := strings.Cut(sc.Text(), " ")
		if !ok || !slices.Contains(names, name) {
			continue
		}
		if v, err := strconv.ParseFloat(value, 64); err == nil {
			out[name] = v
		}
	}
	return out
}

// pipelineWatch samples the node's sequencer while events are published: the largest
// outbox backlog seen (rows committed, not yet sequenced), and the rows per batch.
type pipelineWatch struct {
	base       string
	stop       chan struct{}
	done       chan struct{}
	maxBacklog float64
	rows0, n0  float64
}

const (
	metricBacklog   = "tocsin_outbox_backlog"
	metricBatchSum  = "tocsin_sequencer_batch_rows_sum"
	metricBatchN    = "tocsin_sequencer_batch_rows_count"
	metricFanoutRds = "tocsin_hub_fanout_reads_total"
)

func startPipelineWatch(base string) *pipelineWatch {
	w := &pipelineWatch{base: base, stop: make(chan struct{}), done: make(chan struct{})}
	m := scrapeMetrics(base, metricBatchSum, metricBatchN)
	w.rows0, w.n0 = m[metricBatchSum], m[metricBatchN]
	go func() {
		defer close(w.done)
		t := time.NewTicker(500 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-w.stop:
				return
			case <-t.C:
				w.maxBacklog = max(w.maxBacklog, scrapeMetrics(base, metricBacklog)[metricBacklog])
			}
		}
	}()
	return w
}

// pipeline is what a pipelineWatch saw.
type pipeline struct {
	MaxBacklog   float64 // outbox rows not yet sequenced, the most seen
	Batches      float64 // sequencer batches
	RowsPerBatch float64
}

func (w *pipelineWatch) end() pipeline {
	close(w.stop)
	<-w.done
	m := scrapeMetrics(w.base, metricBatchSum, metricBatchN)
	p := pipeline{MaxBacklog: w.maxBacklog, Batches: m[metricBatchN] - w.n0}
	if p.Batches > 0 {
		p.RowsPerBatch = (m[metricBatchSum] - w.rows0) / p.Batches
	}
	return p
}

func (p pipeline) String() string {
	return fmt.Sprintf("sequencer: %.0f batches of %.1f rows on average, outbox backlog at most %.0f rows",
		p.Batches, p.RowsPerBatch, p.MaxBacklog)
}

// waitConnected waits until the node holds n connections (streams and parked long polls),
// or up to a minute.
func waitConnected(ctx context.Context, base string, n int) {
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		if scrapeMetrics(base, "tocsin_connections")["tocsin_connections"] >= float64(n) {
			return
		}
		_ = sleep(ctx, 100*time.Millisecond)
	}
}
