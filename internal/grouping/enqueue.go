package grouping

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"

	"github.com/tocsin/tocsin/internal/sequencer"
)

// Enqueuer enqueues flush jobs for the sequencer (sequencer.Enqueuer). It needs a River
// client but not a started one: a sequencer-only node inserts with an idle client.
type Enqueuer struct {
	client *river.Client[pgx.Tx]
	// DueFunc, when set, is told when each scheduled flush job falls due (this node's
	// Mover.Expect), so that the Mover need not poll for it. It must not block.
	DueFunc func(at time.Time)
}

// NewEnqueuer returns an Enqueuer inserting through client.
func NewEnqueuer(client *river.Client[pgx.Tx]) *Enqueuer { return &Enqueuer{client: client} }

var _ sequencer.Enqueuer = (*Enqueuer)(nil)

// EnqueueFlushesTx inserts one flush job per window in tx: scheduled for the window's end,
// or available now when the window is full. A window that already has a live job keeps it
// (unique); if that job is still scheduled and the window is now full, it is made
// available at once. Its row is locked by the insert's ON CONFLICT until tx ends, so it
// cannot have been completed meanwhile.
func (e *Enqueuer) EnqueueFlushesTx(ctx context.Context, tx pgx.Tx, flushes []sequencer.Flush) error {
	params := make([]river.InsertManyParams, 0, len(flushes))
	seen := make(map[FlushArgs]bool, len(flushes))
	var (
		full    []bool
		anyFull bool
		due     time.Time
	)
	for _, f := range flushes {
		args := FlushArgs{Recipient: f.Recipient, Route: f.Route, GroupKey: f.GroupKey}
		if seen[args] { // one batch must not hold a unique key twice
			continue
		}
		seen[args] = true
		opts := &river.InsertOpts{ScheduledAt: f.ClosesAt}
		isFull := f.Count >= f.MaxCount
		if isFull {
			opts, anyFull = nil, true // available now
		} else if due.IsZero() || f.ClosesAt.Before(due) {
			due = f.ClosesAt
		}
		params = append(params, river.InsertManyParams{Args: args, InsertOpts: opts})
		full = append(full, isFull)
	}
	res, err := e.client.InsertManyTx(ctx, tx, params)
	if err != nil {
		return fmt.Errorf("inserting flush jobs: %w", err)
	}
	for i, r := range res {
		if full[i] && r.UniqueSkippedAsDuplicate && r.Job.State == rivertype.JobStateScheduled {
			if _, err := e.client.JobRetryTx(ctx, tx, r.Job.ID); err != nil {
				return fmt.Errorf("making flush job %d available: %w", r.Job.ID, err)
			}
		}
	}
	if anyFull {
		// River notifies its own inserts at most once per queue per fetch cooldown, and
		// JobRetryTx not at all: wake the flush queue's workers for every full window.
		if err := notifyQueueTx(ctx, tx); err != nil {
			return err
		}
	}
	if !due.IsZero() && e.DueFunc != nil {
		e.DueFunc(due)
	}
	return nil
}

// enqueueNowTx inserts flush jobs that are available at once (sweep, leftovers).
func enqueueNowTx(ctx context.Context, client *river.Client[pgx.Tx], tx pgx.Tx, windows []FlushArgs) (int, error) {
	if len(windows) == 0 {
		return 0, nil
	}
	params := make([]river.InsertManyParams, len(windows))
	for i, w := range windows {
		params[i] = river.InsertManyParams{Args: w}
	}
	res, err := client.InsertManyTx(ctx, tx, params)
	if err != nil {
		return 0, fmt.Errorf("inserting %d flush jobs: %w", len(windows), err)
	}
	n := 0
	for _, r := range res {
		if !r.UniqueSkippedAsDuplicate {
			n++
		}
	}
	return n, nil
}
