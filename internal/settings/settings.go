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
	_ "embed"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tocsin/tocsin/internal/sqlfile"
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

func (c *Config) withDefaults() {
	if c.Interval <= 0 || c.Interval > time.Second {
		c.Interval = IntervalDefault
	}
}

// New returns a Watcher that assumes push is on until its first read.
func New(pool *pgxpool.Pool, cfg Config, log *slog.Logger) *Watcher {
	cfg.withDefaults()
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

// Switch names a runtime switch.
type Switch string

// The runtime switches.
const (
	// SwitchPush off ends open streams with push-disabled and answers new ones 204;
	// polling is unaffected.
	SwitchPush Switch = "push"
	// SwitchCapture off makes every route trigger return at once (changes made meanwhile
	// are not captured); replication capture consumes without writing.
	SwitchCapture Switch = "capture"
)

// ErrUnknownSwitch is returned by ParseSwitch for a name that is not a switch.
var ErrUnknownSwitch = errors.New("unknown runtime switch")

// ParseSwitch returns the switch called name ("push" or "capture").
func ParseSwitch(name string) (Switch, error) {
	switch sw := Switch(name); sw {
	case SwitchPush, SwitchCapture:
		return sw, nil
	}
	return "", fmt.Errorf("%w %q (push or capture)", ErrUnknownSwitch, name)
}

var (
	//go:embed queries.sql
	queriesSQL     string
	queries        = sqlfile.Parse("settings/queries.sql", queriesSQL)
	settingPushSQL = queries.Get("setting_push")
	settingSetSQL  = queries.Get("setting_set")
)

// Querier runs the switches' statements (a pool, a connection or a transaction).
type Querier interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// Set turns sw on or off. It commits with db's transaction (at once on a pool): every
// node's Watcher sees it within its Interval, and route triggers on their next write.
func Set(ctx context.Context, db Querier, sw Switch, on bool) error {
	if _, err := ParseSwitch(string(sw)); err != nil {
		return err
	}
	if _, err := db.Exec(ctx, settingSetSQL, string(sw), on); err != nil {
		return fmt.Errorf("switching %s to %t: %w", sw, on, err)
	}
	return nil
}

// SettingPush reads the push switch: on unless tocsin.setting says false.
func SettingPush(ctx context.Context, db Querier) (bool, error) {
	var on bool
	err := db.QueryRow(ctx, settingPushSQL).Scan(&on)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return true, nil
	case err != nil:
		return false, fmt.Errorf("reading the push switch: %w", err)
	}
	return on, nil
}
