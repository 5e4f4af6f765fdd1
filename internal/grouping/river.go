package grouping

import (
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
)

// Config configures grouping's River side. Zero values take the defaults.
type Config struct {
	// Tick is the shortest pause between two promotions of due flush jobs by the Mover: a
	// window's end is met within about a tick.
	Tick time.Duration
	// IdleInterval is the longest the Mover sleeps without looking up the next due flush
	// job (jobs that other nodes' sequencers enqueue are found by that look).
	IdleInterval time.Duration
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
	if c.IdleInterval <= 0 {
		c.IdleInterval = IdleIntervalDefault
	}
	c.IdleInterval = max(c.IdleInterval, c.Tick)
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

// QueueConfig is the flush queue's configuration for river.Config.Queues, with MaxWorkers
// workers. Its workers fetch when notified (River's inserts, the Mover's and the
// Enqueuer's promotions) and poll only every QueuePollInterval, in case a notification
// was lost.
func QueueConfig(cfg Config) river.QueueConfig {
	cfg = cfg.withDefaults()
	return river.QueueConfig{MaxWorkers: cfg.MaxWorkers, FetchPollInterval: QueuePollInterval,
		FetchCooldown: min(cfg.Tick, river.FetchCooldownDefault)}
}

// PeriodicJobs returns the sweep's periodic job.
func PeriodicJobs(cfg Config) []*river.PeriodicJob {
	interval := cfg.withDefaults().SweepInterval
	return []*river.PeriodicJob{river.NewPeriodicJob(river.PeriodicInterval(interval),
		func() (river.JobArgs, *river.InsertOpts) { return SweepArgs{}, nil },
		&river.PeriodicJobOpts{ID: "tocsin_group_sweep", RunOnStart: true})}
}
