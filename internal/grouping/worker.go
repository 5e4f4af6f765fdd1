package grouping

import (
	"context"
	_ "embed"
	"encoding/json"
	"fmt"
	"log/slog"
	"sort"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"

	"github.com/tocsin/tocsin/internal/outbox"
	"github.com/tocsin/tocsin/internal/sqlfile"
)

var (
	//go:embed queries.sql
	queriesSQL            string
	queries               = sqlfile.Parse("grouping/queries.sql", queriesSQL)
	groupWindowLockSQL    = queries.Get("group_window_lock")
	groupPendingTakeSQL   = queries.Get("group_pending_take")
	groupWindowCloseSQL   = queries.Get("group_window_close")
	groupWindowOverdueSQL = queries.Get("group_window_overdue")
	riverJobDueFlushesSQL = queries.Get("river_job_due_flushes")
	riverJobNextFlushSQL  = queries.Get("river_job_next_flush")
	riverInsertNotifySQL  = queries.Get("river_insert_notify")
)

// Digest is the data of a feed entry of kind `digest`.
type Digest struct {
	Count   int               `json:"count"`
	FirstAt time.Time         `json:"first_at"`
	LastAt  time.Time         `json:"last_at"`
	Keys    []json.RawMessage `json:"keys"` // the newest distinct keys first, at most MaxKeys
	Data    json.RawMessage   `json:"data"` // the newest change's payload
}

// FlushWorker folds a window's pending changes into one `digest` outbox row.
type FlushWorker struct {
	river.WorkerDefaults[FlushArgs]
	pool *pgxpool.Pool
	log  *slog.Logger
	// wakeFunc, when set, tells the local sequencer a digest is waiting.
	wakeFunc func()
	// Test hooks: beforeFunc runs before the flush transaction, completedFunc inside it
	// right after the job was completed.
	beforeFunc, completedFunc func(FlushArgs)
}

// NewFlushWorker returns the worker. wakeFunc may be nil.
func NewFlushWorker(pool *pgxpool.Pool, log *slog.Logger, wakeFunc func()) *FlushWorker {
	return &FlushWorker{pool: pool, log: log, wakeFunc: wakeFunc}
}

type pendingRow struct {
	id        int64
	topic     string
	table     *string
	key       json.RawMessage
	data      json.RawMessage
	createdAt time.Time
}

// Work flushes the window in one transaction: lock the window row, complete this job (so
// that a change arriving from now on enqueues a fresh job instead of joining this one),
// take the pending rows, write the digest to the outbox, close the window.
func (w *FlushWorker) Work(ctx context.Context, job *river.Job[FlushArgs]) error {
	a := job.Args
	if w.beforeFunc != nil {
		w.beforeFunc(a)
	}
	var n int
	err := pgx.BeginFunc(ctx, w.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, groupWindowLockSQL, a.Recipient, a.Route, a.GroupKey); err != nil {
			return fmt.Errorf("locking the window: %w", err)
		}
		if _, err := river.JobCompleteTx[*riverpgxv5.Driver](ctx, tx, job); err != nil {
			return fmt.Errorf("completing flush job %d: %w", job.ID, err)
		}
		if w.completedFunc != nil {
			w.completedFunc(a)
		}
		// A separate statement after the completion: its snapshot holds every change that
		// joined this job.
		rows, err := tx.Query(ctx, groupPendingTakeSQL, a.Recipient, a.Route, a.GroupKey)
		if err != nil {
			return fmt.Errorf("taking pending changes: %w", err)
		}
		pending, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (p pendingRow, err error) {
			err = r.Scan(&p.id, &p.topic, &p.table, &p.key, &p.data, &p.createdAt)
			return p, err
		})
		if err != nil {
			return fmt.Errorf("taking pending changes: %w", err)
		}
		if _, err := tx.Exec(ctx, groupWindowCloseSQL, a.Recipient, a.Route, a.GroupKey); err != nil {
			return fmt.Errorf("closing the window: %w", err)
		}
		n = len(pending)
		if n == 0 {
			return nil
		}
		return writeDigest(ctx, tx, a, pending)
	})
	if err != nil {
		return fmt.Errorf("flushing group %q of %q (route %q): %w", a.GroupKey, a.Recipient, a.Route, err)
	}
	if n > 0 && w.wakeFunc != nil {
		w.wakeFunc()
	}
	w.log.Debug("group flushed", slog.String("recipient", a.Recipient), slog.String("route", a.Route),
		slog.String("group_key", a.GroupKey), slog.Int("count", n))
	return nil
}

// writeDigest inserts the digest of pending (in id order, which is sequencing order).
func writeDigest(ctx context.Context, tx pgx.Tx, a FlushArgs, pending []pendingRow) error {
	sort.Slice(pending, func(i, j int) bool { return pending[i].id < pending[j].id })
	last := pending[len(pending)-1]
	d := Digest{Count: len(pending), FirstAt: pending[0].createdAt, LastAt: last.createdAt, Data: last.data,
		Keys: []json.RawMessage{}}
	seen := map[string]bool{}
	for i := len(pending) - 1; i >= 0 && len(d.Keys) < MaxKeys; i-- {
		k := pending[i].key
		if len(k) == 0 || seen[string(k)] {
			continue
		}
		seen[string(k)] = true
		d.Keys = append(d.Keys, k)
	}
	for _, p := range pending {
		d.FirstAt, d.LastAt = minTime(d.FirstAt, p.createdAt), maxTime(d.LastAt, p.createdAt)
	}
	if d.Data == nil {
		d.Data = json.RawMessage("null")
	}
	body, err := json.Marshal(d)
	if err != nil {
		return fmt.Errorf("encoding the digest: %w", err)
	}
	row := outbox.Row{Recipient: a.Recipient, Route: a.Route, Topic: last.topic, Kind: "digest", Data: body,
		GroupKey: a.GroupKey}
	if last.table != nil {
		row.Table = *last.table
	}
	if err := outbox.InsertTx(ctx, tx, []outbox.Row{row}); err != nil {
		return fmt.Errorf("writing the digest: %w", err)
	}
	return nil
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}
