package grouping

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
)

// Mover makes flush jobs available as soon as their window ends, instead of at River's
// next 5 s scheduler tick. Any number of Movers may run: each takes the due jobs it can
// lock (FOR UPDATE SKIP LOCKED) and promotes them with River's JobRetryTx while it holds
// them, so it never touches a job that has started, completed or been promoted already.
type Mover struct {
	pool   *pgxpool.Pool
	client *river.Client[pgx.Tx]
	tick   time.Duration
	log    *slog.Logger
}

// NewMover returns a Mover that looks for due jobs every Config.Tick.
func NewMover(pool *pgxpool.Pool, client *river.Client[pgx.Tx], cfg Config, log *slog.Logger) *Mover {
	return &Mover{pool: pool, client: client, tick: cfg.withDefaults().Tick, log: log}
}

// Run promotes due jobs every tick until ctx ends. Errors are logged and retried.
func (m *Mover) Run(ctx context.Context) error {
	t := time.NewTicker(m.tick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if _, err := m.Promote(ctx); err != nil && ctx.Err() == nil {
			m.log.Warn("promoting due flush jobs", slog.Any("error", err))
		}
	}
}

// Promote makes every due, still scheduled flush job available. It returns how many.
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
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("promoting due flush jobs: %w", err)
	}
	return n, nil
}
