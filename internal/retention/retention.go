// Package retention removes feed entries past their retention, as a periodic River job,
// with their inbox state, and expired publish idempotency keys. (Outbox rows need no
// retention: the sequencer deletes each one in the batch that moves it. Finished River
// jobs are River's job cleaner's: see the River retention settings.)
//
// Invariant: pruning never opens a silent gap. In the same transaction that deletes a
// recipient's entries it records, in tocsin.feed_horizon, the highest position removed for
// that recipient; a cursor below it is answered with 410 cursor-expired. A recipient who
// lost nothing keeps a valid cursor however old it is.
package retention

import (
	"context"
	_ "embed"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"

	"github.com/tocsin/tocsin/internal/sqlfile"
)

var (
	//go:embed queries.sql
	queriesSQL             string
	queries                = sqlfile.Parse("retention/queries.sql", queriesSQL)
	feedPruneSQL           = queries.Get("feed_prune")
	idempotencyKeyPruneSQL = queries.Get("idempotency_key_prune")
)

// Config says how long entries stay in the feed.
type Config struct {
	// ChangeTTL applies to entries of kind `change`.
	ChangeTTL time.Duration
	// InboxTTL applies to every other kind (notification, digest, message).
	InboxTTL time.Duration
	// BatchLimit is the most entries deleted by one statement.
	BatchLimit int
	// IdempotencyTTL is how long publish idempotency keys are kept.
	IdempotencyTTL time.Duration
}

// Defaults.
const (
	ChangeTTLDefault  = 24 * time.Hour
	InboxTTLDefault   = 90 * 24 * time.Hour
	BatchLimitDefault = 10000
	// IdempotencyTTLDefault is how long idempotency keys are kept.
	IdempotencyTTLDefault = 24 * time.Hour
	// IntervalDefault is how often the prune job runs.
	IntervalDefault = time.Minute
)

// PruneArgs are the arguments of the periodic prune job.
type PruneArgs struct{}

// Kind is the River job kind.
func (PruneArgs) Kind() string { return "tocsin.prune" }

// PruneWorker deletes expired feed entries.
type PruneWorker struct {
	river.WorkerDefaults[PruneArgs]
	pool *pgxpool.Pool
	cfg  Config
}

func (c *Config) withDefaults() {
	if c.ChangeTTL <= 0 {
		c.ChangeTTL = ChangeTTLDefault
	}
	if c.InboxTTL <= 0 {
		c.InboxTTL = InboxTTLDefault
	}
	if c.BatchLimit <= 0 {
		c.BatchLimit = BatchLimitDefault
	}
	if c.IdempotencyTTL <= 0 {
		c.IdempotencyTTL = IdempotencyTTLDefault
	}
}

// NewPruneWorker returns the worker.
func NewPruneWorker(pool *pgxpool.Pool, cfg Config) *PruneWorker {
	cfg.withDefaults()
	return &PruneWorker{pool: pool, cfg: cfg}
}

// Work prunes in batches until nothing is left to prune.
func (w *PruneWorker) Work(ctx context.Context, _ *river.Job[PruneArgs]) error {
	for {
		n, err := Prune(ctx, w.pool, w.cfg, time.Now())
		if err != nil {
			return err
		}
		if n < w.cfg.BatchLimit {
			return PruneIdempotencyKeys(ctx, w.pool, w.cfg.IdempotencyTTL, time.Now())
		}
	}
}

// Prune deletes up to cfg.BatchLimit entries that expired before now, with their inbox
// state (the inbox counts follow, by trigger), and records each recipient's horizon. It returns how many entries it deleted.
func Prune(ctx context.Context, pool *pgxpool.Pool, cfg Config, now time.Time) (int, error) {
	cfg.withDefaults() // a zero BatchLimit would prune nothing
	var n int
	err := pool.QueryRow(ctx, feedPruneSQL, now, cfg.ChangeTTL, cfg.InboxTTL, cfg.BatchLimit).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("pruning the feed: %w", err)
	}
	return n, nil
}

// PruneIdempotencyKeys deletes the publish idempotency keys older than ttl.
func PruneIdempotencyKeys(ctx context.Context, pool *pgxpool.Pool, ttl time.Duration, now time.Time) error {
	if _, err := pool.Exec(ctx, idempotencyKeyPruneSQL,
		now, ttl); err != nil {
		return fmt.Errorf("pruning idempotency keys: %w", err)
	}
	return nil
}
