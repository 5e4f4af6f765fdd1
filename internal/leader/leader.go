package leader

import (
	"context"
	_ "embed"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tocsin/tocsin/internal/sqlfile"
)

var (
	//go:embed queries.sql
	queriesSQL       string
	queries          = sqlfile.Parse("leader/queries.sql", queriesSQL)
	leaderTryLockSQL = queries.Get("leader_try_lock")
)

// Config configures an Elector. Zero durations take the defaults below.
type Config struct {
	// Role names the role in logs and errors ("sequencer", "capture").
	Role string
	// Key is the role's advisory lock key; every node of the role uses the same one.
	Key int64
	// StandbyInterval is how often a standby tries to take the lock.
	StandbyInterval time.Duration
	// RetryInterval is the pause after leadership ended with an error (or could not be
	// sought) before seeking it again.
	RetryInterval time.Duration
}

// sessionName is what the session that holds a role's lock is called in pg_stat_activity:
// the node's own application_name (from its database URL, "tocsin" by default) and the
// role, e.g. "tocsin-sequencer". Operators and benches tell the role's connection from the
// pool's by it, and nodes named apart ("node-a") stay apart ("node-a-sequencer").
func sessionName(conn *pgx.Conn, role string) string {
	base := conn.Config().RuntimeParams["application_name"]
	if base == "" {
		base = "tocsin"
	}
	return base + "-" + role
}

// Defaults.
const (
	StandbyIntervalDefault = time.Second
	RetryIntervalDefault   = time.Second
)

func (c *Config) withDefaults() {
	if c.StandbyInterval <= 0 {
		c.StandbyInterval = StandbyIntervalDefault
	}
	if c.RetryInterval <= 0 {
		c.RetryInterval = RetryIntervalDefault
	}
}

// LeadFunc does a role's work while its process is leader. conn is the connection that
// holds the lock: the LeadFunc runs its leader-only work on it and must not keep it after
// returning. It returns when ctx ends (nil) or when it cannot go on (an error).
type LeadFunc func(ctx context.Context, conn *pgx.Conn) error

// Elector takes part in one role's leader election.
type Elector struct {
	cfg  Config
	pool *pgxpool.Pool
	log  *slog.Logger
}

// New returns an Elector that takes its connections from pool.
func New(pool *pgxpool.Pool, cfg Config, log *slog.Logger) *Elector {
	cfg.withDefaults()
	return &Elector{cfg: cfg, pool: pool, log: log}
}

// Run seeks leadership and runs lead each time it is won, until ctx ends; it then returns
// nil. A LeadFunc that returns an error (or nil before ctx ends) gives leadership up: the
// lock is released, the error logged, and leadership sought again after RetryInterval.
func (e *Elector) Run(ctx context.Context, lead LeadFunc) error {
	for {
		err := e.Lead(ctx, lead)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			e.log.Warn(e.cfg.Role+" stopped leading", slog.Any("error", err))
		}
		t := time.NewTimer(e.cfg.RetryInterval)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

// Lead waits until this process holds the lock on a dedicated connection, runs lead once
// on it, then closes the connection (releasing the lock) and returns lead's error. It
// returns nil without running lead when ctx ends first.
func (e *Elector) Lead(ctx context.Context, lead LeadFunc) error {
	conn, err := e.pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("acquiring the %s connection: %w", e.cfg.Role, err)
	}
	// The connection carries a session lock: never hand it back to the pool.
	raw := conn.Hijack()
	defer func() { _ = raw.Close(context.WithoutCancel(ctx)) }()

	name := sessionName(raw, e.cfg.Role)
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		var won bool
		if err := raw.QueryRow(ctx, leaderTryLockSQL, e.cfg.Key, name).Scan(&won, nil); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("trying for %s leadership: %w", e.cfg.Role, err)
		}
		if won {
			break
		}
		t.Reset(e.cfg.StandbyInterval)
	}
	e.log.Info(e.cfg.Role + " is leader")
	return lead(ctx, raw)
}
