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
	"context"
	_ "embed"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
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
	queriesSQL          string
	queries             = sqlfile.Parse("sequencer/queries.sql", queriesSQL)
	sequenceBatchSQL    = queries.Get("sequence_batch")
	outboxWaitSQL       = queries.Get("outbox_wait")
	feedCheckHistorySQL = queries.Get("feed_check_history")
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
func (s *Sequencer) lead(ctx context.Context, conn *pgx.Conn) error {
	if err := s.checkHistory(ctx, conn); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	timeoutMs := s.cfg.WaitTimeout.Milliseconds()
	interval := s.cfg.PollInterval
	pending := true
	for {
		if pending {
			if err := s.drain(ctx, conn); err != nil {
				return err
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-s.wake:
			pending = true
			interval = s.cfg.PollInterval
			continue
		default:
		}
		if err := conn.QueryRow(ctx, outboxWaitSQL, timeoutMs, interval.Milliseconds()).Scan(&pending); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("waiting for outbox rows: %w", err)
		}
		interval = nextPollInterval(interval, pending, s.cfg.PollInterval, s.cfg.IdlePollInterval)
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

// drain moves batches until the outbox holds no committed row.
func (s *Sequencer) drain(ctx context.Context, conn *pgx.Conn) error {
	// Batches run only when the probe found rows: an empty batch would lock feed_state
	// and write WAL for nothing.
	for pending := true; pending; {
		head, moved, err := s.batch(ctx, conn)
		if err != nil {
			if errors.Is(err, context.Canceled) {
				return nil
			}
			return fmt.Errorf("sequencing a batch: %w", err)
		}
		if head == nil {
			return nil
		}
		if *head > s.seenHead.Load() {
			s.seenHead.Store(*head)
		}
		if s.cfg.BatchFunc != nil {
			s.cfg.BatchFunc(*head, moved)
		}
		pending = moved == s.cfg.BatchLimit
	}
	return nil
}

// batch runs one batch transaction: tocsin.sequence_batch, then the flush jobs of the
// windows it touched, then COMMIT (which delivers the doorbell).
func (s *Sequencer) batch(ctx context.Context, conn *pgx.Conn) (head *int64, moved int, err error) {
	err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		var flushes []Flush
		if err := tx.QueryRow(ctx, sequenceBatchSQL,
			s.cfg.BatchLimit, s.cfg.MessageGroupWindow, s.cfg.MessageGroupMax).Scan(&head, &moved, &flushes); err != nil {
			return err
		}
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
	return head, moved, err
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
