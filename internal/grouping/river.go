package grouping

import (
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
)

// Config configures grouping's River side. Zero values take the defaults.
type Config struct {
	// Tick is how often Mover promotes due flush jobs and the flush queue polls.
	Tick time.Duration
	// SweepInterval is how often Sweep runs; SweepGrace how long past its end a window
	// may wait for its job before Sweep enqueues another.
	SweepInterval time.Duration
	SweepGrace    time.Duration
	// MaxWorkers is the flush queue's concurrency.
	MaxWorkers int
	// WakeFunc, when set, is called after a flush wrote a digest (the local sequencer's
	// Wake).
	WakeFunc func()
}

func (c Config) withDefaults() Config {
	if c.Tick <= 0 {
		c.Tick = TickDefault
	}
	if c.SweepInterval <= 0 {
		c.SweepInterval = SweepIntervalDefault
	}
	if c.SweepGrace <= 0 {
		c.SweepGrace = SweepGraceDefault
	}
	if c.MaxWorkers <= 0 {
		c.MaxWorkers = MaxWorkersDefault
	}
	return c
}

// AddWorkers registers the flush and sweep workers.
func AddWorkers(workers *river.Workers, pool *pgxpool.Pool, cfg Config, log *slog.Logger) {
	river.AddWorker(workers, NewFlushWorker(pool, log, cfg.WakeFunc))
	river.AddWorker(workers, NewSweepWorker(pool, cfg))
}

// QueueConfig is the flush queue's configuration for river.Config.Queues: it polls every
// Tick, with MaxWorkers workers.
func QueueConfig(cfg Config) river.QueueConfig {
	cfg = cfg.withDefaults()
	return river.QueueConfig{MaxWorkers: cfg.MaxWorkers, FetchPollInterval: cfg.Tick,
		FetchCooldown: min(cfg.Tick, river.FetchCooldownDefault)}
}

// PeriodicJobs returns the sweep's periodic job.
func PeriodicJobs(cfg Config) []*river.PeriodicJob {
	interval := cfg.withDefaults().SweepInterval
	return []*river.PeriodicJob{river.NewPeriodicJob(river.PeriodicInterval(interval),
		func() (river.JobArgs, *river.InsertOpts) { return SweepArgs{}, nil },
		&river.PeriodicJobOpts{ID: "tocsin_group_sweep", RunOnStart: true})}
}
