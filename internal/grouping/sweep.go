package grouping

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
)

// SweepArgs are the arguments of the periodic sweep job.
type SweepArgs struct{}

// Kind is the River job kind.
func (SweepArgs) Kind() string { return "tocsin.group_sweep" }

// SweepWorker enqueues a flush for every window overdue by more than its grace, and for
// pending changes left without a window. Windows that still have a live job are skipped
// by uniqueness, so the sweep is idempotent.
type SweepWorker struct {
	river.WorkerDefaults[SweepArgs]
	pool  *pgxpool.Pool
	grace time.Duration
}

// NewSweepWorker returns the worker; windows get Config.SweepGrace past their end.
func NewSweepWorker(pool *pgxpool.Pool, cfg Config) *SweepWorker {
	return &SweepWorker{pool: pool, grace: cfg.withDefaults().SweepGrace}
}

// Work runs one sweep.
func (w *SweepWorker) Work(ctx context.Context, _ *river.Job[SweepArgs]) error {
	client := river.ClientFromContext[pgx.Tx](ctx)
	_, err := Sweep(ctx, w.pool, client, w.grace)
	return err
}

// Sweep enqueues flush jobs for the overdue windows that have none. It returns how many
// jobs it inserted.
func Sweep(ctx context.Context, pool *pgxpool.Pool, client *river.Client[pgx.Tx], grace time.Duration) (int, error) {
	var n int
	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, groupWindowOverdueSQL, grace)
		if err != nil {
			return err
		}
		windows, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (a FlushArgs, err error) {
			err = r.Scan(&a.Recipient, &a.Route, &a.GroupKey)
			return a, err
		})
		if err != nil {
			return err
		}
		n, err = enqueueNowTx(ctx, client, tx, windows)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("sweeping group windows: %w", err)
	}
	return n, nil
}
