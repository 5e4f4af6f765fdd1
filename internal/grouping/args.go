package grouping

import (
	"time"

	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"
)

// Queue is the River queue of flush jobs (see QueueConfig).
const Queue = "tocsin_groups"

// Defaults.
const (
	// TickDefault is the shortest pause between two promotions by the Mover.
	TickDefault = 100 * time.Millisecond
	// IdleIntervalDefault is the longest the Mover sleeps without a look at the next due job.
	IdleIntervalDefault = time.Second
	// QueuePollInterval is how often the flush queue's workers poll without a notification.
	QueuePollInterval = 5 * time.Second
	// SweepIntervalDefault is how often Sweep runs.
	SweepIntervalDefault = time.Minute
	// SweepGraceDefault is how long past its end a window may wait for its job before
	// Sweep enqueues another.
	SweepGraceDefault = 30 * time.Second
	// MaxWorkersDefault is the flush queue's concurrency.
	MaxWorkersDefault = 20
	// MaxKeys is the most keys a digest lists.
	MaxKeys = 10
)

// FlushArgs names one window: the job flushes recipient's pending changes of route (""
// for messages) and group key.
type FlushArgs struct {
	Recipient string `json:"recipient" river:"unique"`
	Route     string `json:"route" river:"unique"`
	GroupKey  string `json:"group_key" river:"unique"`
}

// Kind is the River job kind.
func (FlushArgs) Kind() string { return "tocsin.group_flush" }

// InsertOpts makes the job unique per window among live jobs (never `completed`, so a
// finished flush does not block the next window).
func (FlushArgs) InsertOpts() river.InsertOpts {
	return river.InsertOpts{Queue: Queue, MaxAttempts: 10, UniqueOpts: river.UniqueOpts{
		ByArgs: true,
		ByState: []rivertype.JobState{rivertype.JobStateAvailable, rivertype.JobStatePending,
			rivertype.JobStateRunning, rivertype.JobStateRetryable, rivertype.JobStateScheduled},
	}}
}
