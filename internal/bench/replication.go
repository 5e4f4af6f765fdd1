package bench

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tocsin/tocsin/internal/capture"
	"github.com/tocsin/tocsin/internal/routes"
	"github.com/tocsin/tocsin/internal/sequencer"
)

// The modes of the replication throughput measurement, in the order they run in a round.
const (
	// ReplicationModeNone inserts into a table no route watches, consumer stopped: the
	// baseline.
	ReplicationModeNone = "none"
	// ReplicationModePaused inserts into a table a replication route watches with the
	// consumer stopped (the slot keeps the WAL): what the application's writes pay.
	ReplicationModePaused = "replication-paused"
	// ReplicationModeRunning inserts into that table while the consumer and a sequencer
	// run against the same server: what the machine pays.
	ReplicationModeRunning = "replication"
)

// ReplicationModes returns the throughput modes, in the order they run within a round.
func ReplicationModes() []string {
	return []string{ReplicationModeNone, ReplicationModePaused, ReplicationModeRunning}
}

// ReplicationConfig configures RunReplication. Zero values take the defaults below.
type ReplicationConfig struct {
	// DatabaseURL names a server to create the scratch database on (wal_level=logical and
	// a role with REPLICATION); empty starts a private durable cluster.
	DatabaseURL string
	// Rates are the change rates (single-row transactions per second) whose commit →
	// outbox lag is measured, one run each.
	Rates []int
	// LagDuration is how long each rate is held (after a one-second warm-up).
	LagDuration time.Duration
	// Connections is how many connections share each rate's transactions.
	Connections int
	// NoLag skips the lag measurement.
	NoLag bool
	// NoSequencer measures the lag with no sequencer running (a node runs one): what its
	// batches cost the capture's own path.
	NoSequencer bool
	// Writers, Duration and Rounds shape the throughput measurement as in CaptureConfig.
	Writers  int
	Duration time.Duration
	Rounds   int
	// Modes are the throughput modes to measure (see ReplicationModes); empty means all.
	Modes []string
	// NoThroughput skips the throughput measurement.
	NoThroughput bool
}

// Replication bench defaults.
var (
	RatesDefault = []int{1000, 5000}
)

// Replication bench defaults.
const (
	LagDurationDefault = 10 * time.Second
	ConnectionsDefault = 16
)

func (c *ReplicationConfig) withDefaults() (ReplicationConfig, error) {
	cfg := *c
	if len(cfg.Rates) == 0 {
		cfg.Rates = slices.Clone(RatesDefault)
	}
	if cfg.LagDuration <= 0 {
		cfg.LagDuration = LagDurationDefault
	}
	if cfg.Connections <= 0 {
		cfg.Connections = ConnectionsDefault
	}
	if cfg.Writers <= 0 {
		cfg.Writers = WritersDefault
	}
	if cfg.Duration <= 0 {
		cfg.Duration = DurationDefault
	}
	if cfg.Rounds <= 0 {
		cfg.Rounds = RoundsDefault
	}
	if len(cfg.Modes) == 0 {
		cfg.Modes = ReplicationModes()
	}
	var errs []error
	for _, r := range cfg.Rates {
		if r <= 0 {
			errs = append(errs, fmt.Errorf("rate %d: want a positive number of changes per second", r))
		}
	}
	for _, name := range cfg.Modes {
		if !slices.Contains(ReplicationModes(), name) {
			errs = append(errs, fmt.Errorf("unknown replication mode %q (want one of %s)", name, strings.Join(ReplicationModes(), ", ")))
		}
	}
	cfg.Modes = slices.DeleteFunc(ReplicationModes(), func(m string) bool { return !slices.Contains(cfg.Modes, m) })
	if cfg.NoLag && cfg.NoThroughput {
		errs = append(errs, errors.New("nothing to measure: both the lag and the throughput are skipped"))
	}
	return cfg, errors.Join(errs...)
}

// LagResult is the commit → outbox lag of one rate.
type LagResult struct {
	Rate int
	// Changes is how many transactions committed during the measured window; Achieved is
	// their rate.
	Changes  int
	Achieved float64
	// Lag is the distribution of the source commit → the consumer's outbox commit, over
	// every transaction of the window.
	Lag Percentiles
	// Stages split Lag (see lagStages for their names).
	Stages [len(lagStages)]Percentiles
	// Load is the machine's load averages when the window ended.
	Load string
	// CPU is what each part used during the window, as shares of one core.
	CPU LagCPU
	// WriterCommit is the writers' INSERT round trip (the insert, its durable commit and
	// the network) over the window.
	WriterCommit Percentiles
}

// LagCPU is the CPU used during a lag window, as shares of one core (0.05 = 5 %; negative:
// not measured, the server is not on this machine).
type LagCPU struct {
	// Writers are the backends of the writers' connections, Walsender the one that decodes
	// the WAL for the slot, OtherPostgres the rest of the server (the consumer's and the
	// sequencer's backends, WAL writer, checkpointer…).
	Writers, Walsender, OtherPostgres float64
	// Process is this process: the consumer, the sequencer and the writers' client side.
	Process float64
	// SequencerBatches is the sequencer's batches per second.
	SequencerBatches float64
	// WalsenderWaiting is the share of the window the walsender spent runnable but waiting
	// for a core (the kernel's run-queue wait, /proc/PID/schedstat; negative: not measured).
	WalsenderWaiting float64
}

// Percentiles summarises durations.
type Percentiles struct{ P50, P90, P99, Max time.Duration }

func lagPercentiles(ds []time.Duration) Percentiles {
	if len(ds) == 0 {
		return Percentiles{}
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	at := func(q float64) time.Duration { return s[int(q*float64(len(s)-1))] }
	return Percentiles{P50: at(0.50), P90: at(0.90), P99: at(0.99), Max: s[len(s)-1]}
}

// lagStages name the parts of a transaction's lag, from capture.Applied's moments.
var lagStages = [...]struct {
	name string
	of   func(a capture.Applied) time.Duration
}{
	{"commit→sent", func(a capture.Applied) time.Duration { return a.SentAt.Sub(a.CommitTime) }},
	{"sent→received", func(a capture.Applied) time.Duration { return a.ReceivedAt.Sub(a.SentAt) }},
	{"received→write", func(a capture.Applied) time.Duration { return a.WriteAt.Sub(a.ReceivedAt) }},
	{"write→committed", func(a capture.Applied) time.Duration { return a.CommittedAt.Sub(a.WriteAt) }},
}

// ReplicationResult is what RunReplication measured.
type ReplicationResult struct {
	Lag        []LagResult
	Throughput []CaptureResult
	// Load is the machine's load averages (1, 5, 15 minutes) at the start and at the end.
	LoadStart, LoadEnd string
}

// replicationSlotPidSQL finds the walsender of the bench's slot.
var replicationSlotPidSQL = queries.Get("replication_slot_pid")

// replicationTable is the table the replication route watches; its route is added to the
// capture bench's routes.
const replicationTable = "bench_replication"

//go:embed replication_routes.yaml
var replicationRoutesYAML []byte

// RunReplication measures replication capture: the commit → outbox lag at each rate, with
// a breakdown by stage, and the insert throughput of concurrent writers with no capture,
// with the consumer paused and with it running. It writes a report to out.
func RunReplication(ctx context.Context, cfg ReplicationConfig, out io.Writer) (ReplicationResult, error) {
	var res ReplicationResult
	cfg, err := cfg.withDefaults()
	if err != nil {
		return res, err
	}
	res.LoadStart = loadAverage()
	srv, err := openServer(ctx, cfg.DatabaseURL)
	if err != nil {
		return res, err
	}
	defer srv.close()
	db, err := newScratch(ctx, srv.adminURL, max(cfg.Writers, cfg.Connections))
	if err != nil {
		return res, err
	}
	defer db.close()
	r, err := newReplicationScratch(ctx, db)
	if err != nil {
		return res, err
	}
	defer r.close()
	facts, err := db.facts(ctx)
	if err != nil {
		return res, err
	}
	facts.private = srv.private

	if !cfg.NoLag {
		for _, rate := range cfg.Rates {
			l, err := r.lag(ctx, rate, cfg.LagDuration, cfg.Connections, !cfg.NoSequencer)
			if err != nil {
				return res, fmt.Errorf("measuring the lag at %d changes/s: %w", rate, err)
			}
			res.Lag = append(res.Lag, l)
			fmt.Fprintf(out, "lag at %5d changes/s  p50 %s  p99 %s  (load %s)\n", rate, ms(l.Lag.P50), ms(l.Lag.P99), l.Load)
		}
	}
	if !cfg.NoThroughput {
		if res.Throughput, err = r.throughput(ctx, cfg, out); err != nil {
			return res, err
		}
	}
	res.LoadEnd = loadAverage()
	if err := writeReplicationReport(out, cfg, facts, res); err != nil {
		return res, fmt.Errorf("writing the report: %w", err)
	}
	return res, nil
}

// replicationScratch adds a replication route and its consumer to a scratch database.
type replicationScratch struct {
	*scratch
	slot string
	pool *pgxpool.Pool // the consumer's and the sequencer's connections

	mu        sync.Mutex
	recording time.Time         // record transactions committed at or after this
	applied   []capture.Applied // recorded transactions
	lastAt    time.Time         // commit time of the last transaction applied
	stop      func() error      // stops the running consumer, or nil
	batches   atomic.Int64      // the sequencer's batches
}

func newReplicationScratch(ctx context.Context, s *scratch) (*replicationScratch, error) {
	r := &replicationScratch{scratch: s}
	_, err := s.ctl.Exec(ctx, `CREATE TABLE `+replicationTable+` (LIKE bench_none INCLUDING ALL)`)
	if err != nil {
		return nil, fmt.Errorf("creating %s: %w", replicationTable, err)
	}
	f, err := routes.Parse("capture_routes.yaml", captureRoutesYAML)
	if err != nil {
		return nil, fmt.Errorf("parsing the bench routes: %w", err)
	}
	more, err := routes.Parse("replication_routes.yaml", replicationRoutesYAML)
	if err != nil {
		return nil, fmt.Errorf("parsing the bench routes: %w", err)
	}
	f.Routes = append(f.Routes, more.Routes...)
	if _, err := routes.Apply(ctx, s.ctl, f); err != nil {
		return nil, fmt.Errorf("applying the replication route (the server needs wal_level=logical, the role REPLICATION): %w", err)
	}
	if r.slot, err = routes.SlotName(ctx, s.ctl); err != nil {
		return nil, err
	}
	if r.pool, err = s.pool(ctx, 6, nil); err != nil {
		r.close()
		return nil, err
	}
	return r, nil
}

// close stops the consumer and drops the slot, which would keep the scratch database
// from being dropped.
func (r *replicationScratch) close() {
	_ = r.stopConsumer()
	if r.pool != nil {
		r.pool.Close()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, _ = routes.DropSlot(ctx, r.ctl, r.slot)
}

// startConsumer runs a capture consumer and, when sequence is true, a sequencer, and waits
// until the consumer has caught up with the WAL written so far.
func (r *replicationScratch) startConsumer(ctx context.Context, sequence bool) error {
	if r.stop != nil {
		return nil
	}
	dsn, err := r.url()
	if err != nil {
		return err
	}
	log := slog.New(slog.DiscardHandler)
	seq := sequencer.New(r.pool, sequencer.Config{BatchFunc: func(int64, int) { r.batches.Add(1) }}, log)
	c := capture.New(r.pool, capture.Config{DatabaseURL: dsn, WakeFunc: seq.Wake, AppliedFunc: r.record}, log)
	rctx, cancel := context.WithCancel(ctx)
	errs := make(chan error, 2)
	if sequence {
		go func() { errs <- seq.Run(rctx) }()
	} else {
		errs <- nil
	}
	go func() { errs <- c.Run(rctx) }()
	r.stop = func() error {
		cancel()
		return errors.Join(<-errs, <-errs)
	}
	return r.catchUp(ctx)
}

func (r *replicationScratch) stopConsumer() error {
	if r.stop == nil {
		return nil
	}
	err := r.stop()
	r.stop = nil
	if err != nil {
		return fmt.Errorf("running the consumer: %w", err)
	}
	return nil
}

// reset stops the consumer and the sequencer and empties the tables (see scratch.reset).
func (r *replicationScratch) reset(ctx context.Context) error {
	if err := r.stopConsumer(); err != nil {
		return err
	}
	if _, err := r.ctl.Exec(ctx, "TRUNCATE "+replicationTable+" RESTART IDENTITY"); err != nil {
		return fmt.Errorf("truncating %s: %w", replicationTable, err)
	}
	return r.scratch.reset(ctx, true)
}

// url is the scratch database's connection string (the server's URL must be a URL, not
// key=value pairs).
func (r *replicationScratch) url() (string, error) {
	u, err := url.Parse(r.adminURL)
	if err != nil || u.Scheme == "" {
		return "", fmt.Errorf("replication capture needs --database-url as a postgres:// URL")
	}
	u.Path = "/" + r.name
	return u.String(), nil
}

// record is the consumer's AppliedFunc.
func (r *replicationScratch) record(a capture.Applied) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.recording.IsZero() && !a.CommitTime.Before(r.recording) {
		r.applied = append(r.applied, a)
	}
	if a.CommitTime.After(r.lastAt) {
		r.lastAt = a.CommitTime
	}
}

// catchUp commits a marker row and waits until the consumer has applied it: every
// transaction committed before it has been applied too (the stream is in commit order).
func (r *replicationScratch) catchUp(ctx context.Context) error {
	at := time.Now()
	if _, err := r.ctl.Exec(ctx, replicationInsertSQL(), newRowSource(0).next()...); err != nil {
		return fmt.Errorf("inserting a marker row: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	for {
		r.mu.Lock()
		done := !r.lastAt.Before(at)
		r.mu.Unlock()
		if done {
			return nil
		}
		if err := sleep(ctx, 5*time.Millisecond); err != nil {
			return fmt.Errorf("waiting for the consumer to catch up: %w", err)
		}
	}
}

func replicationInsertSQL() string {
	return "INSERT INTO " + replicationTable + " (portfolio_id, owner_id, body, status) VALUES ($1, $2, $3, 'published')"
}

// lag commits single-row transactions at rate over conns connections for a second of
// warm-up and then d, and returns the lag of those committed during d.
func (r *replicationScratch) lag(ctx context.Context, rate int, d time.Duration, conns int, sequence bool) (LagResult, error) {
	res := LagResult{Rate: rate}
	if err := r.startConsumer(ctx, sequence); err != nil { // catch up before the tables are emptied
		return res, err
	}
	if err := r.reset(ctx); err != nil {
		return res, err
	}
	if err := r.startConsumer(ctx, sequence); err != nil {
		return res, err
	}
	warmup := time.Second
	start := time.Now().Add(warmup)
	end := start.Add(d)
	r.mu.Lock()
	r.recording, r.applied = start, r.applied[:0]
	r.mu.Unlock()
	cpu, err := r.watchLagCPU(ctx, start, end)
	if err != nil {
		return res, err
	}
	commits, err := pace(ctx, r.writers, replicationInsertSQL(), rate, time.Now(), start, end, conns)
	if err != nil {
		return res, err
	}
	res.CPU = <-cpu
	res.WriterCommit = lagPercentiles(commits)
	res.Load = loadAverage()
	if err := r.catchUp(ctx); err != nil {
		return res, err
	}
	r.mu.Lock()
	var applied []capture.Applied
	for _, a := range r.applied {
		if a.CommitTime.Before(end) {
			applied = append(applied, a)
		}
	}
	r.recording, r.applied = time.Time{}, r.applied[:0]
	r.mu.Unlock()
	res.Changes = len(applied)
	res.Achieved = float64(res.Changes) / d.Seconds()
	total := make([]time.Duration, len(applied))
	for i, a := range applied {
		total[i] = a.CommittedAt.Sub(a.CommitTime)
	}
	res.Lag = lagPercentiles(total)
	for s, st := range lagStages {
		ds := make([]time.Duration, len(applied))
		for i, a := range applied {
			ds[i] = st.of(a)
		}
		res.Stages[s] = lagPercentiles(ds)
	}
	return res, nil
}

// pace runs single-row inserts of sql at rate per second, from begin until end, spread
// over conns connections each on its own schedule; a connection that falls behind catches
// up without waiting. It returns the round trips of the inserts issued from start on.
func pace(ctx context.Context, pool *pgxpool.Pool, sql string, rate int, begin, start, end time.Time, conns int) ([]time.Duration, error) {
	interval := time.Duration(int64(time.Second) * int64(conns) / int64(rate))
	var wg sync.WaitGroup
	var failed atomic.Pointer[error]
	trips := make([][]time.Duration, conns)
	for w := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rows := newRowSource(uint64(w + 1))
			next := begin.Add(time.Duration(w) * interval / time.Duration(conns))
			for next.Before(end) && failed.Load() == nil {
				if sleep(ctx, time.Until(next)) != nil {
					return
				}
				t0 := time.Now()
				if _, err := pool.Exec(ctx, sql, rows.next()...); err != nil {
					err = fmt.Errorf("inserting: %w", err)
					failed.CompareAndSwap(nil, &err)
					return
				}
				if !t0.Before(start) {
					trips[w] = append(trips[w], time.Since(t0))
				}
				next = next.Add(interval)
			}
		}()
	}
	wg.Wait()
	if p := failed.Load(); p != nil {
		return nil, *p
	}
	return slices.Concat(trips...), ctx.Err()
}

// watchLagCPU measures the CPU of the writers' backends, the walsender, the rest of the
// server and this process from start to end, and sends it on the returned channel.
func (r *replicationScratch) watchLagCPU(ctx context.Context, start, end time.Time) (<-chan LagCPU, error) {
	var walsender int
	if err := r.ctl.QueryRow(ctx, replicationSlotPidSQL, r.slot).Scan(&walsender); err != nil {
		return nil, fmt.Errorf("finding the walsender: %w", err)
	}
	conns := r.writers.AcquireAllIdle(ctx)
	writers := make([]int, len(conns))
	for i, c := range conns {
		writers[i] = int(c.Conn().PgConn().PID())
		c.Release()
	}
	ticks := func() (w, ws, server, self, batches int64) {
		for _, pid := range writers {
			w += cpuTicks(pid)
		}
		if r.postmaster != 0 {
			server = serverTicks(r.postmaster)
		}
		return w, cpuTicks(walsender), server, cpuTicks(os.Getpid()), r.batches.Load()
	}
	out := make(chan LagCPU, 1)
	go func() {
		_ = sleep(ctx, time.Until(start))
		w0, ws0, s0, p0, b0 := ticks()
		q0, qok0 := runQueueWait(walsender)
		t0 := time.Now()
		_ = sleep(ctx, time.Until(end))
		w1, ws1, s1, p1, b1 := ticks()
		q1, qok1 := runQueueWait(walsender)
		secs := time.Since(t0).Seconds()
		share := func(t int64) float64 { return float64(t) / 100 / secs }
		c := LagCPU{Writers: share(w1 - w0), Walsender: share(ws1 - ws0), OtherPostgres: -1, Process: share(p1 - p0),
			SequencerBatches: float64(b1-b0) / secs, WalsenderWaiting: -1}
		if qok0 && qok1 {
			c.WalsenderWaiting = (q1 - q0).Seconds() / secs
		}
		if r.postmaster != 0 {
			c.OtherPostgres = share((s1 - s0) - (w1 - w0) - (ws1 - ws0))
		} else {
			c.Writers, c.Walsender = -1, -1
		}
		out <- c
	}()
	return out, nil
}

// throughput measures the insert throughput of each mode, interleaved over rounds.
func (r *replicationScratch) throughput(ctx context.Context, cfg ReplicationConfig, out io.Writer) ([]CaptureResult, error) {
	results := make([]CaptureResult, len(cfg.Modes))
	for i, name := range cfg.Modes {
		results[i].Mode = name
	}
	for round := 1; round <= cfg.Rounds; round++ {
		for i, name := range cfg.Modes {
			m, err := r.measureMode(ctx, name, cfg.Writers, cfg.Duration)
			if err != nil {
				return nil, fmt.Errorf("measuring mode %q, round %d: %w", name, round, err)
			}
			res := &results[i]
			res.RoundTxPerSec = append(res.RoundTxPerSec, m.txPerSec)
			res.roundWriterCPU = append(res.roundWriterCPU, m.writerCPU)
			res.roundServerCPU = append(res.roundServerCPU, m.serverCPU)
			res.Inserts += m.inserts
			res.Captured += m.captured
			res.Sequenced += m.sequenced
			fmt.Fprintf(out, "round %d/%d  %-18s %9.1f tx/s  (load %s)\n", round, cfg.Rounds, name, m.txPerSec, loadAverage())
		}
	}
	var base float64
	for i := range results {
		results[i].TxPerSec = median(results[i].RoundTxPerSec)
		results[i].WriterCPU = median(results[i].roundWriterCPU)
		results[i].ServerCPU = median(results[i].roundServerCPU)
		if results[i].Mode == ReplicationModeNone {
			base = results[i].TxPerSec
		}
	}
	if base > 0 {
		for i := range results {
			results[i].Ratio = results[i].TxPerSec / base
		}
	}
	return results, nil
}

// measureMode measures one mode once. The consumer runs only in ReplicationModeRunning; it
// first catches up with what the other modes left in the slot, so that the measurement
// sees the steady state. Afterwards it counts the rows the mode captured: in the running
// mode once the consumer applied every insert.
func (r *replicationScratch) measureMode(ctx context.Context, name string, writers int, d time.Duration) (measurement, error) {
	var res measurement
	table := replicationTable
	if name == ReplicationModeNone {
		table = "bench_none"
	}
	if name == ReplicationModeRunning {
		// Apply what the other modes left in the slot before the tables are emptied.
		if err := r.startConsumer(ctx, true); err != nil {
			return res, err
		}
	}
	if err := r.reset(ctx); err != nil {
		return res, err
	}
	if name == ReplicationModeRunning {
		if err := r.startConsumer(ctx, true); err != nil {
			return res, err
		}
	}
	sql := "INSERT INTO " + table + " (portfolio_id, owner_id, body, status) VALUES ($1, $2, $3, 'published')"
	w, err := runWriters(ctx, r.writers, sql, writers, warmupFor(d), d, r.postmaster)
	if err != nil {
		return res, err
	}
	res.txPerSec, res.writerCPU, res.serverCPU = w.rate, w.writerCPU, w.serverCPU
	if name == ReplicationModeRunning {
		if err := r.catchUp(ctx); err != nil {
			return res, err
		}
	}
	err = r.ctl.QueryRow(ctx, `
		SELECT (SELECT count(*) FROM `+table+`),
		       (SELECT count(*) FROM tocsin.outbox) + (SELECT count(*) FROM tocsin.feed),
		       (SELECT count(*) FROM tocsin.feed)`).Scan(&res.inserts, &res.captured, &res.sequenced)
	if err != nil {
		return res, fmt.Errorf("counting inserted and captured rows: %w", err)
	}
	return res, nil
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d.Microseconds())/1000) }
