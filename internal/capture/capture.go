package capture

import (
	"context"
	_ "embed"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tocsin/tocsin/internal/leader"
	"github.com/tocsin/tocsin/internal/routes"
	"github.com/tocsin/tocsin/internal/sqlfile"
)

var (
	//go:embed queries.sql
	queriesSQL                      string
	queries                         = sqlfile.Parse("capture/queries.sql", queriesSQL)
	replicationStateAppliedSQL      = queries.Get("replication_state_applied")
	replicationStateReadSQL         = queries.Get("replication_state_read")
	captureCommitAsyncSQL           = queries.Get("capture_commit_async")
	walPositionsSQL                 = queries.Get("wal_positions")
	walFlushSQL                     = queries.Get("wal_flush")
	replicationStateResetPendingSQL = queries.Get("replication_state_reset_pending")
	replicationStateResetDoneSQL    = queries.Get("replication_state_reset_done")
	feedEpochSetSQL                 = queries.Get("feed_epoch_set")
	replicationSlotHealthSQL        = queries.Get("replication_slot_health")
	replicationStreamStartSQL       = queries.Get("replication_stream_start")
	routeReplicationSpecsSQL        = queries.Get("route_replication_specs")
	routeSpecSQL                    = queries.Get("route_spec")
	pgTypeDescribeSQL               = queries.Get("pg_type_describe")
)

// Config configures a Consumer. Zero values take the defaults below.
type Config struct {
	// DatabaseURL is the database to stream from; the replication connection adds
	// replication=database to it.
	DatabaseURL string
	// WakeFunc, when set, is called after outbox rows commit (the sequencer's Wake).
	WakeFunc func()
	// AppliedFunc, when set, is called after each source transaction's outbox rows commit
	// (tests, benchmarks, metrics).
	AppliedFunc func(Applied)
	// SlotWALWarnBytes is the WAL the slot may retain before Ready fails and a warning is
	// logged (TOCSIN_SLOT_WAL_WARN_BYTES).
	SlotWALWarnBytes int64
	// StatusInterval is the longest time between two standby status updates.
	StatusInterval time.Duration
	// StandbyInterval is how often a standby tries to take leadership.
	StandbyInterval time.Duration
	// IdleInterval is how often a leader with no replication route looks for one.
	IdleInterval time.Duration
	// RetryInterval is the pause after an error before trying again.
	RetryInterval time.Duration
	// MonitorInterval is how often the slot's retained WAL is measured.
	MonitorInterval time.Duration
	// FlushRows is how many outbox rows are buffered before they are written (inside the
	// open transaction): it bounds memory for transactions of any size.
	FlushRows int
	// BatchRows makes the consumer commit once its transaction holds this many rows, even
	// when more changes are waiting.
	BatchRows int
}

// Defaults.
const (
	SlotWALWarnBytesDefault = 1 << 30
	StatusIntervalDefault   = time.Second
	StandbyIntervalDefault  = time.Second
	IdleIntervalDefault     = 5 * time.Second
	RetryIntervalDefault    = time.Second
	MonitorIntervalDefault  = 10 * time.Second
	FlushRowsDefault        = 1000
	BatchRowsDefault        = 10000
)

// Applied describes one source transaction whose outbox rows committed, with the moments
// it went through on its way (for the lag breakdown of `tocsin bench replication`).
type Applied struct {
	CommitLSN  pglogrepl.LSN
	CommitTime time.Time // the source transaction's commit time (server clock)
	Rows       int
	// SentAt is when the server sent the transaction's commit message (server clock).
	SentAt time.Time
	// ReceivedAt is when the consumer read that message from the replication connection.
	ReceivedAt time.Time
	// WriteAt is when the consumer began writing the batch holding the transaction's rows
	// (the last rows inserted and the Tocsin commit).
	WriteAt time.Time
	// CommittedAt is when that Tocsin transaction had committed: its rows visible to the
	// sequencer (on disk at the latest with the sequencer's next batch, which commits
	// durably).
	CommittedAt time.Time
}

// leaderLockKey is the advisory lock that makes a consumer the leader ("tocsin-c").
const leaderLockKey int64 = 0x746f6373696e2d63

// Consumer reads the replication routes' changes from the WAL and writes their outbox rows.
type Consumer struct {
	cfg  Config
	pool *pgxpool.Pool
	log  *slog.Logger

	mu     sync.Mutex
	status Status
	warned bool
}

func (c *Config) withDefaults(pool *pgxpool.Pool) {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&c.StatusInterval, StatusIntervalDefault)
	def(&c.StandbyInterval, StandbyIntervalDefault)
	def(&c.IdleInterval, IdleIntervalDefault)
	def(&c.RetryInterval, RetryIntervalDefault)
	def(&c.MonitorInterval, MonitorIntervalDefault)
	if c.SlotWALWarnBytes <= 0 {
		c.SlotWALWarnBytes = SlotWALWarnBytesDefault
	}
	if c.FlushRows <= 0 {
		c.FlushRows = FlushRowsDefault
	}
	if c.BatchRows <= 0 {
		c.BatchRows = BatchRowsDefault
	}
	if c.DatabaseURL == "" {
		c.DatabaseURL = pool.Config().ConnString()
	}
}

// New returns a Consumer working through pool.
func New(pool *pgxpool.Pool, cfg Config, log *slog.Logger) *Consumer {
	cfg.withDefaults(pool)
	return &Consumer{cfg: cfg, pool: pool, log: log}
}

// Run takes part in leader election and, while leader, streams until ctx ends. It also
// measures the slot every MonitorInterval, leader or not.
func (c *Consumer) Run(ctx context.Context) error {
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.monitor(ctx)
	}()
	defer func() { <-done }()
	return leader.New(c.pool, leader.Config{Role: "capture", Key: leaderLockKey,
		StandbyInterval: c.cfg.StandbyInterval, RetryInterval: c.cfg.RetryInterval}, c.log).Run(ctx, c.lead)
}

// lead streams on conn, the connection that holds leadership, while at least one
// replication route exists.
func (c *Consumer) lead(ctx context.Context, conn *pgx.Conn) error {
	defer c.setLeader(false, false)
	c.setLeader(true, false)
	idleLogged := false
	for {
		routed, err := routes.HasReplicationRoutes(ctx, conn)
		if err != nil {
			return err
		}
		if !routed {
			if !idleLogged {
				c.log.Info("capture idle: no replication route")
				idleLogged = true
			}
			if !sleep(ctx, c.cfg.IdleInterval) {
				return nil
			}
			continue
		}
		idleLogged = false
		slot, err := c.ensureSlot(ctx, conn)
		if err != nil {
			return err
		}
		if err := c.stream(ctx, conn, slot); err != nil {
			return err
		}
		if ctx.Err() != nil {
			return nil
		}
	}
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
