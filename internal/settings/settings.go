// Package settings watches the runtime switches in tocsin.setting (`tocsin switch push
// on|off`) on behalf of the whole node.
//
// One Watcher per node reads the table every Interval (at most a second, so a switch
// reaches every node within one second) with one small query, whatever the number of
// clients. Between reads the switch is an atomic load, and a change of push to off closes
// a channel that every open stream selects on: ending them all costs nothing per stream.
// A read that fails keeps the last known value (push stays as it was).
package settings

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// IntervalDefault is how often the switches are read. It must stay at most one second.
const IntervalDefault = 500 * time.Millisecond

// Config configures a Watcher.
type Config struct {
	// Interval is how often tocsin.setting is read. Default IntervalDefault.
	Interval time.Duration
	// PushFunc, when set, is called with each change of the push switch (metrics, logs).
	PushFunc func(on bool)
}

// Watcher holds the node's view of the runtime switches.
type Watcher struct {
	cfg  Config
	pool *pgxpool.Pool
	log  *slog.Logger

	mu      sync.Mutex
	push    bool
	pushOff chan struct{} // closed while push is off; replaced when it turns on
}

// New returns a Watcher that assumes push is on until its first read.
func New(pool *pgxpool.Pool, cfg Config, log *slog.Logger) *Watcher {
	if cfg.Interval <= 0 || cfg.Interval > time.Second {
		cfg.Interval = IntervalDefault
	}
	return &Watcher{cfg: cfg, pool: pool, log: log, push: true, pushOff: make(chan struct{})}
}

// Push reports whether push is on, and a channel that is closed when push is (or goes) off.
func (w *Watcher) Push() (on bool, off <-chan struct{}) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.push, w.pushOff
}

// Refresh reads the switches once.
func (w *Watcher) Refresh(ctx context.Context) error {
	on, err := SettingPush(ctx, w.pool)
	if err != nil {
		return err
	}
	w.setPush(on)
	return nil
}

// Run reads the switches every Interval until ctx ends.
func (w *Watcher) Run(ctx context.Context) error {
	t := time.NewTicker(w.cfg.Interval)
	defer t.Stop()
	failing := false
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		err := w.Refresh(ctx)
		switch {
		case err != nil && ctx.Err() == nil && !failing:
			w.log.Warn("cannot read the runtime switches; keeping the last values", slog.Any("error", err))
			failing = true
		case err == nil && failing:
			w.log.Info("runtime switches readable again")
			failing = false
		}
	}
}

func (w *Watcher) setPush(on bool) {
	w.mu.Lock()
	if on == w.push {
		w.mu.Unlock()
		return
	}
	w.push = on
	if on {
		w.pushOff = make(chan struct{})
	} else {
		close(w.pushOff)
	}
	w.mu.Unlock()
	w.log.Info("push switched", slog.Bool("push", on))
	if w.cfg.PushFunc != nil {
		w.cfg.PushFunc(on)
	}
}

// SettingPush reads the push switch: on unless tocsin.setting says false.
func SettingPush(ctx context.Context, db interface {
	QueryRow(context.Context, string, ...any) pgx.Row
}) (bool, error) {
	var on bool
	err := db.QueryRow(ctx, `SELECT value <> 'false'::jsonb FROM tocsin.setting WHERE key = 'push'`).Scan(&on)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return true, nil
	case err != nil:
		return false, fmt.Errorf("reading the push switch: %w", err)
	}
	return on, nil
}
