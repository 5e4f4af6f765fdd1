// Package sequencer gives committed outbox rows their feed position, in the order in which
// they became visible, and rings the doorbell once per batch.
//
// Invariants:
//   - One sequencer at a time. Leadership (internal/leader) is a session advisory lock held
//     on the same connection that runs the batches; if that connection dies, the lock goes
//     with it and a standby takes over. Even two would-be leaders cannot interleave: every batch locks
//     tocsin.feed_state first, so positions are handed out by one transaction at a time.
//   - A batch only ever reads committed rows and moves them atomically (delete from the
//     outbox, insert into the feed, advance the head, NOTIFY), so a crash at any moment
//     loses nothing and repeats nothing.
//   - A position, once announced, is durable: the batch commits synchronously whatever the
//     session's synchronous_commit. When the sequencer takes leadership it checks the feed's
//     history (tocsin.feed_check_history): another database system or WAL timeline (a
//     promoted standby, a restored backup) or a head below the highest this process saw
//     committed means commits may have been lost, and the epoch changes, so that clients
//     get 410 instead of phantom events or a silent gap.
//   - Grouped rows never reach the feed directly: the batch diverts them into
//     tocsin.group_pending and, in the same transaction, enqueues one River flush job per
//     touched window through Config.Enqueuer. A batch whose enqueue fails rolls back whole.
//   - The application's transactions never NOTIFY. The sequencer finds new rows by probing
//     the outbox's primary key every PollInterval — inside PostgreSQL (tocsin.outbox_wait),
//     so that an idle cluster costs one round trip per WaitTimeout, not one per probe. It is
//     one probe for the whole cluster, not one per client. Each silent WaitTimeout doubles
//     the interval up to IdlePollInterval, and the first row found restores PollInterval:
//     a busy feed keeps its latency, an idle cluster probes a thirty-second as often.
package sequencer

import (
	"bytes"
	"context"
	_ "embed"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tocsin/tocsin/internal/leader"
	"github.com/tocsin/tocsin/internal/sqlfile"
)

// Config configures a Sequencer. Zero values take the defaults below.
type Config struct {
	// PollInterval is how often the leader probes the outbox for committed rows (whole
	// milliseconds, at least 1).
	PollInterval time.Duration
	// IdlePollInterval is the slowest probe: each WaitTimeout that passes without a row
	// doubles the interval, from PollInterval up to this; the first row found brings it
	// back. A busy feed is probed every PollInterval; an idle cluster costs a fraction.
	IdlePollInterval time.Duration
	// WaitTimeout is the longest a single server-side wait lasts before Tocsin checks in.
	WaitTimeout time.Duration
	// BatchLimit is the most rows moved by one batch transaction.
	BatchLimit int
	// StandbyInterval is how often a standby tries to take leadership.
	StandbyInterval time.Duration
	// RetryInterval is the pause after a database error before trying again.
	RetryInterval time.Duration
	// BatchFunc, when set, is called after each committed batch with the new head (tests,
	// metrics).
	BatchFunc func(head int64, rows int)
	// LeadingFunc, when set, is called with true when this sequencer starts leading (before
	// its first batch) and with false when it stops: while it leads, BatchFunc sees every
	// batch there is (the node's doorbell lets its connection go).
	LeadingFunc func(leading bool)
	// MessageGroupWindow and MessageGroupMax group published messages that name a group
	// (routes carry their own window and max).
	MessageGroupWindow time.Duration
	MessageGroupMax    int
	// Enqueuer enqueues the flush jobs of the windows a batch touched, in the batch's
	// transaction. Nil: windows are left to the grouping sweep (and a warning is logged).
	Enqueuer Enqueuer
}

// Flush is one group window a batch opened or extended.
type Flush struct {
	Recipient string    `json:"recipient"`
	Route     string    `json:"route"` // "" for published messages
	GroupKey  string    `json:"group_key"`
	ClosesAt  time.Time `json:"closes_at"`
	Count     int       `json:"count"`
	MaxCount  int       `json:"max_count"`
}

// Enqueuer enqueues flush jobs inside the sequencer's batch transaction (a
// *grouping.Enqueuer). Flushes hold each window once.
type Enqueuer interface {
	EnqueueFlushesTx(ctx context.Context, tx pgx.Tx, flushes []Flush) error
}

// Defaults.
const (
	PollIntervalDefault     = 2 * time.Millisecond
	IdlePollIntervalDefault = 64 * time.Millisecond
	WaitTimeoutDefault      = time.Second
	BatchLimitDefault       = 1000
	// MessageGroupWindowDefault and MessageGroupMaxDefault apply to grouped messages.
	MessageGroupWindowDefault = 30 * time.Second
	MessageGroupMaxDefault    = 50
	StandbyIntervalDefault    = time.Second
	RetryIntervalDefault      = time.Second
)

var (
	//go:embed queries.sql
	queriesSQL            string
	queries               = sqlfile.Parse("sequencer/queries.sql", queriesSQL)
	sequenceBatchSQL      = queries.Get("sequence_batch")
	sequenceBatchAloneSQL = queries.Get("sequence_batch_alone")
	outboxWaitSQL         = queries.Get("outbox_wait")
	feedCheckHistorySQL   = queries.Get("feed_check_history")
)

// leaderLockKey is the advisory lock that makes a sequencer the leader ("tocsin-seq").
const leaderLockKey int64 = 0x746f6373696e2d73

// Sequencer moves committed outbox rows into the feed.
type Sequencer struct {
	cfg  Config
	pool *pgxpool.Pool
	log  *slog.Logger
	wake chan struct{}
	// seenHead is the highest head a batch of this process committed.
	seenHead atomic.Int64
}

func (c *Config) withDefaults() {
	if c.PollInterval <= 0 {
		c.PollInterval = PollIntervalDefault
	}
	c.PollInterval = max(c.PollInterval, time.Millisecond) // tocsin.outbox_wait counts whole milliseconds
	if c.IdlePollInterval <= 0 {
		c.IdlePollInterval = IdlePollIntervalDefault
	}
	c.IdlePollInterval = max(c.IdlePollInterval, c.PollInterval)
	if c.WaitTimeout <= 0 {
		c.WaitTimeout = WaitTimeoutDefault
	}
	if c.BatchLimit <= 0 {
		c.BatchLimit = BatchLimitDefault
	}
	if c.StandbyInterval <= 0 {
		c.StandbyInterval = StandbyIntervalDefault
	}
	if c.RetryInterval <= 0 {
		c.RetryInterval = RetryIntervalDefault
	}
	if c.MessageGroupWindow <= 0 {
		c.MessageGroupWindow = MessageGroupWindowDefault
	}
	if c.MessageGroupMax <= 0 {
		c.MessageGroupMax = MessageGroupMaxDefault
	}
}

// New returns a Sequencer working through pool.
func New(pool *pgxpool.Pool, cfg Config, log *slog.Logger) *Sequencer {
	cfg.withDefaults()
	return &Sequencer{cfg: cfg, pool: pool, log: log, wake: make(chan struct{}, 1)}
}

// SetEnqueuer sets Config.Enqueuer; call it before Run (the composition root builds River
// after the sequencer).
func (s *Sequencer) SetEnqueuer(e Enqueuer) { s.cfg.Enqueuer = e }

// Wake tells the leader that rows are coming, so that it looks again right after its
// current batch instead of waiting for its next probe. It never blocks.
func (s *Sequencer) Wake() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// Run takes part in leader election and, while leader, sequences until ctx ends.
func (s *Sequencer) Run(ctx context.Context) error {
	return leader.New(s.pool, leader.Config{Role: "sequencer", Key: leaderLockKey,
		StandbyInterval: s.cfg.StandbyInterval, RetryInterval: s.cfg.RetryInterval}, s.log).Run(ctx, s.lead)
}

// lead sequences on conn, the connection that holds leadership, until ctx ends.
//
// Each round is one round trip: the outbox probe (tocsin.outbox_wait, unless rows are
// known to be waiting) and the batch as a transaction of its own
// (tocsin.sequence_batch_alone) go out together in a pipeline, the batch right behind the
// probe. A batch that holds grouped rows is refused by the server and run again in a
// transaction of the sequencer's (batch), which enqueues its flush jobs before COMMIT;
// while batches keep holding grouped rows, rounds take that way directly.
func (s *Sequencer) lead(ctx context.Context, conn *pgx.Conn) error {
	if err := s.checkHistory(ctx, conn); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	st, err := prepare(ctx, conn)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	if s.cfg.LeadingFunc != nil {
		s.cfg.LeadingFunc(true)
		defer s.cfg.LeadingFunc(false)
	}
	interval := s.cfg.PollInterval
	wait := false    // probe before the next batch (false: rows are known to be waiting)
	grouped := false // the last batch held grouped rows: the next one takes the long way
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-s.wake:
			wait, interval = false, s.cfg.PollInterval
		default:
		}
		r, err := s.round(ctx, conn, st, wait, interval, grouped)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, context.Canceled) {
				return nil
			}
			return err
		}
		if wait {
			interval = nextPollInterval(interval, r.found || r.moved > 0, s.cfg.PollInterval, s.cfg.IdlePollInterval)
		}
		grouped = r.grouped
		if r.head != nil {
			if *r.head > s.seenHead.Load() {
				s.seenHead.Store(*r.head)
			}
			if s.cfg.BatchFunc != nil {
				s.cfg.BatchFunc(*r.head, r.moved)
			}
		}
		// A full batch leaves rows behind: take them without probing.
		wait = r.moved < s.cfg.BatchLimit
	}
}

// nextPollInterval is the probe interval after a wait that found rows (pending) or timed
// out: back to the fastest on a find, doubled up to the slowest after a silent wait.
func nextPollInterval(cur time.Duration, pending bool, fastest, slowest time.Duration) time.Duration {
	if pending {
		return fastest
	}
	return min(2*cur, slowest)
}

// statements are the sequencer's prepared statements on its leader connection.
type statements struct {
	wait, batch *pgconn.StatementDescription
}

func prepare(ctx context.Context, conn *pgx.Conn) (statements, error) {
	wait, err := conn.Prepare(ctx, "tocsin_sequencer_wait", outboxWaitSQL)
	if err != nil {
		return statements{}, fmt.Errorf("preparing the outbox probe: %w", err)
	}
	batch, err := conn.Prepare(ctx, "tocsin_sequencer_batch", sequenceBatchAloneSQL)
	if err != nil {
		return statements{}, fmt.Errorf("preparing the batch: %w", err)
	}
	return statements{wait: wait, batch: batch}, nil
}

// roundResult is what one round saw and did.
type roundResult struct {
	found   bool   // the probe found a committed row
	head    *int64 // the new head; nil when no batch moved a row
	moved   int    // outbox rows taken
	grouped bool   // the batch held grouped rows (and took the long way)
}

// groupedSQLState is what tocsin.sequence_batch_alone raises for a batch with grouped rows
// (migrations/0063_sequence_batch_alone.sql).
const groupedSQLState = "TS001"

// round probes (when wait) and runs one batch. The probe and the batch alone go out in
// one pipelined round trip; a batch with grouped rows, or any batch right after one
// (grouped), runs in a transaction of the sequencer's (batch) after the probe.
func (s *Sequencer) round(ctx context.Context, conn *pgx.Conn, st statements, wait bool,
	interval time.Duration, grouped bool) (roundResult, error) {
	var r roundResult
	p := conn.PgConn().StartPipeline(ctx)
	if wait {
		p.SendQueryStatement(st.wait, [][]byte{
			strconv.AppendInt(nil, s.cfg.WaitTimeout.Milliseconds(), 10),
			strconv.AppendInt(nil, interval.Milliseconds(), 10)}, nil, nil)
		p.SendPipelineSync()
	}
	if !grouped {
		p.SendQueryStatement(st.batch, [][]byte{
			strconv.AppendInt(nil, int64(s.cfg.BatchLimit), 10),
			fmt.Appendf(nil, "%d microseconds", s.cfg.MessageGroupWindow.Microseconds()),
			strconv.AppendInt(nil, int64(s.cfg.MessageGroupMax), 10)}, nil, nil)
		p.SendPipelineSync()
	}
	err := p.Flush()
	if err == nil && wait {
		var row [][]byte
		if row, err = onlyRow(p); err == nil {
			if len(row) != 1 {
				err = fmt.Errorf("the outbox probe returned %d columns", len(row))
			} else {
				r.found = string(row[0]) == "t"
			}
		}
		if err != nil {
			err = fmt.Errorf("waiting for outbox rows: %w", err)
		}
	}
	var refused bool
	if err == nil && !grouped {
		var row [][]byte
		row, err = onlyRow(p)
		var pgErr *pgconn.PgError
		switch {
		case errors.As(err, &pgErr) && pgErr.Code == groupedSQLState:
			refused, err = true, nil
		case err != nil:
			err = fmt.Errorf("sequencing a batch: %w", err)
		default:
			r.head, r.moved, err = parseBatchRow(row)
		}
	}
	if cerr := p.Close(); err == nil {
		err = cerr
	}
	switch {
	case err != nil:
		return r, err
	case !grouped && !refused: // the batch ran alone
		return r, nil
	case grouped && wait && !r.found: // nothing to take: the next round probes again
		return r, nil
	}
	head, moved, windows, err := s.batch(ctx, conn)
	if err != nil {
		return r, fmt.Errorf("sequencing a batch: %w", err)
	}
	r.head, r.moved, r.grouped = head, moved, windows > 0
	return r, nil
}

// onlyRow reads the next statement's result in p and its Sync, and returns its first row
// (nil when it returned none) and the statement's error.
func onlyRow(p *pgconn.Pipeline) ([][]byte, error) {
	res, err := p.GetResults()
	if err != nil {
		return nil, err
	}
	rr, ok := res.(*pgconn.ResultReader)
	if !ok {
		return nil, fmt.Errorf("unexpected pipeline result %T", res)
	}
	var row [][]byte
	for rr.NextRow() {
		if row == nil {
			for _, v := range rr.Values() {
				row = append(row, bytes.Clone(v))
			}
		}
	}
	_, stmtErr := rr.Close()
	// The statement's Sync follows, whether it failed or not.
	if res, err = p.GetResults(); err != nil {
		return nil, err
	}
	if _, ok := res.(*pgconn.PipelineSync); !ok {
		return nil, fmt.Errorf("unexpected pipeline result %T", res)
	}
	return row, stmtErr
}

// parseBatchRow decodes tocsin.sequence_batch_alone's row (text format): head is nil when
// no row was moved into the feed.
func parseBatchRow(row [][]byte) (head *int64, moved int, err error) {
	if len(row) != 2 {
		return nil, 0, fmt.Errorf("the batch returned %d columns", len(row))
	}
	if row[1] != nil {
		if moved, err = strconv.Atoi(string(row[1])); err != nil {
			return nil, 0, fmt.Errorf("the batch's moved: %w", err)
		}
	}
	if row[0] != nil && moved > 0 {
		h, err := strconv.ParseInt(string(row[0]), 10, 64)
		if err != nil {
			return nil, 0, fmt.Errorf("the batch's head: %w", err)
		}
		head = &h
	}
	return head, moved, nil
}

// batch runs one batch transaction of the sequencer's own: tocsin.sequence_batch, then the
// flush jobs of the windows it touched (their number is returned), then COMMIT (which
// delivers the doorbell).
func (s *Sequencer) batch(ctx context.Context, conn *pgx.Conn) (head *int64, moved, windows int, err error) {
	err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		var flushes []Flush
		if err := tx.QueryRow(ctx, sequenceBatchSQL,
			s.cfg.BatchLimit, s.cfg.MessageGroupWindow, s.cfg.MessageGroupMax).Scan(&head, &moved, &flushes); err != nil {
			return err
		}
		windows = len(flushes)
		if len(flushes) == 0 {
			return nil
		}
		if s.cfg.Enqueuer == nil {
			s.log.Warn("grouped rows but no flush enqueuer: the grouping sweep will flush them",
				slog.Int("windows", len(flushes)))
			return nil
		}
		if err := s.cfg.Enqueuer.EnqueueFlushesTx(ctx, tx, flushes); err != nil {
			return fmt.Errorf("enqueueing %d group flushes: %w", len(flushes), err)
		}
		return nil
	})
	return head, moved, windows, err
}

// checkHistory runs tocsin.feed_check_history before the first batch of a leadership: if
// the feed's history may have diverged since it was written (see the package doc), the
// epoch changes and every client is sent back to refetch with 410.
func (s *Sequencer) checkHistory(ctx context.Context, conn *pgx.Conn) error {
	var (
		epoch  string
		reason *string
	)
	if err := conn.QueryRow(ctx, feedCheckHistorySQL, s.seenHead.Load()).Scan(&epoch, &reason); err != nil {
		return fmt.Errorf("checking the feed's history: %w", err)
	}
	if reason != nil {
		s.log.Error("the feed's history may have diverged: feed epoch changed, clients will refetch (410)",
			slog.String("reason", *reason), slog.String("epoch", epoch))
		s.seenHead.Store(0)
	}
	return nil
}
