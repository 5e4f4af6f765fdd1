package grouping

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"

	"github.com/tocsin/tocsin/internal/migrate"
)

// Mover makes flush jobs available as soon as their window ends, instead of at River's
// next 5 s scheduler tick. Any number of Movers may run: each takes the due jobs it can
// lock (FOR UPDATE SKIP LOCKED) and promotes them with River's JobRetryTx while it holds
// them, so it never touches a job that has started, completed or been promoted already.
//
// It does not poll on a short tick: it looks up when the next flush job falls due and
// sleeps until then, or for Config.IdleInterval at most (jobs that other nodes enqueue
// meanwhile are found by that lookup), and Expect, called by this node's Enqueuer, brings
// the next look forward. At rest it costs one small query per IdleInterval. A promotion
// sends River's insert notification for the flush queue, so a worker picks the job up at
// once rather than at the queue's next poll.
type Mover struct {
	pool   *pgxpool.Pool
	client *river.Client[pgx.Tx]
	tick   time.Duration
	idle   time.Duration
	log    *slog.Logger

	mu       sync.Mutex
	expected time.Time     // earliest due time told by Expect and not yet looked at
	kick     chan struct{} // capacity 1
}

// NewMover returns a Mover (Config.Tick, Config.IdleInterval).
func NewMover(pool *pgxpool.Pool, client *river.Client[pgx.Tx], cfg Config, log *slog.Logger) *Mover {
	cfg = cfg.withDefaults()
	return &Mover{pool: pool, client: client, tick: cfg.Tick, idle: cfg.IdleInterval, log: log,
		kick: make(chan struct{}, 1)}
}

// Expect tells the Mover that a flush job falls due at `at` (a window this node's
// sequencer just scheduled). It never blocks.
func (m *Mover) Expect(at time.Time) {
	m.mu.Lock()
	if m.expected.IsZero() || at.Before(m.expected) {
		m.expected = at
	}
	m.mu.Unlock()
	select {
	case m.kick <- struct{}{}:
	default:
	}
}

// Run promotes due jobs until ctx ends: at once, then whenever the next job falls due
// (at least Tick apart), at least every IdleInterval. Errors are logged and retried.
func (m *Mover) Run(ctx context.Context) error {
	next := time.Now()
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-m.kick:
			if at := m.expectedAfter(time.Now()); !at.IsZero() && at.Before(next) {
				next = at
				timer.Reset(time.Until(next))
			}
			continue
		case <-timer.C:
		}
		now := time.Now()
		next = now.Add(m.idle)
		due, err := m.nextDue(ctx)
		if err == nil && !due.IsZero() && !due.After(now) {
			_, err = m.Promote(ctx)
			if err == nil {
				due, err = m.nextDue(ctx)
			}
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			m.log.Warn("promoting due flush jobs", slog.Any("error", err))
		} else if !due.IsZero() && due.Before(next) {
			next = due
		}
		if at := m.expectedAfter(now); !at.IsZero() && at.Before(next) {
			next = at
		}
		next = later(next, now.Add(m.tick))
		timer.Reset(time.Until(next))
	}
}

// expectedAfter returns the earliest expected due time, no sooner than one tick after now
// (the enqueuing transaction commits meanwhile); zero when none. An expectation that has
// come is dropped: the look that follows covers it.
func (m *Mover) expectedAfter(now time.Time) time.Time {
	m.mu.Lock()
	defer m.mu.Unlock()
	at := m.expected
	if at.IsZero() {
		return at
	}
	if !at.After(now) {
		m.expected = time.Time{}
	}
	return later(at, now.Add(m.tick))
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// nextDue returns when the earliest scheduled flush job falls due (zero when none).
func (m *Mover) nextDue(ctx context.Context) (time.Time, error) {
	var at *time.Time
	if err := m.pool.QueryRow(ctx, riverJobNextFlushSQL, Queue).Scan(&at); err != nil {
		return time.Time{}, fmt.Errorf("looking up the next due flush job: %w", err)
	}
	if at == nil {
		return time.Time{}, nil
	}
	return *at, nil
}

// Promote makes every due, still scheduled flush job available and wakes the flush
// queue's workers. It returns how many.
func (m *Mover) Promote(ctx context.Context) (int, error) {
	var n int
	err := pgx.BeginFunc(ctx, m.pool, func(tx pgx.Tx) error {
		// Reads River's table (state, queue, scheduled_at: its fetch index); changes go
		// through River's API.
		rows, err := tx.Query(ctx, riverJobDueFlushesSQL, Queue)
		if err != nil {
			return err
		}
		ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
		if err != nil {
			return err
		}
		for _, id := range ids {
			if _, err := m.client.JobRetryTx(ctx, tx, id); err != nil {
				return fmt.Errorf("promoting flush job %d: %w", id, err)
			}
		}
		n = len(ids)
		if n > 0 {
			return notifyQueueTx(ctx, tx)
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("promoting due flush jobs: %w", err)
	}
	return n, nil
}

// notifyQueueTx sends, at tx's commit, the notification with which River announces new
// available jobs of the flush queue (what InsertTx sends; JobRetryTx sends none), so that
// its workers fetch at once instead of at the queue's next poll.
func notifyQueueTx(ctx context.Context, tx pgx.Tx) error {
	if _, err := tx.Exec(ctx, riverInsertNotifySQL, migrate.Schema+"."+riverInsertTopic,
		fmt.Sprintf(`{"queue": %q}`, Queue)); err != nil {
		return fmt.Errorf("notifying the flush queue: %w", err)
	}
	return nil
}

// riverInsertTopic is the channel (after the schema and a dot) on which River's workers
// listen for new available jobs: River's notifier.NotificationTopicInsert, internal to
// River. TestPromotedJobRunsBeforeTheQueuePolls breaks if River renames it.
const riverInsertTopic = "river_insert"
