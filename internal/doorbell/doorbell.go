// Package doorbell listens for the sequencer's one-per-batch NOTIFY and tells this node's
// hub the feed's new head.
//
// A NOTIFY is lost while the listening connection is down. The listener therefore reports
// every (re)connection through RingFunc with head 0, meaning "the head is unknown: look it
// up"; the hub also has a fallback timer of its own. The doorbell is a latency device only:
// the feed, read by position, stays the source of truth.
//
// While this node's own sequencer leads (SetLocal), every batch there is reaches the hub
// in process, so the listener lets its connection go: the leader's node pays nothing for
// the doorbell. When leadership ends, the listener listens again and rings 0, so that
// batches of a new leader elsewhere that rang before it listened are looked up.
package doorbell

import (
	"context"
	_ "embed"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tocsin/tocsin/internal/sqlfile"
)

// ApplicationName names the listening session in pg_stat_activity.
const ApplicationName = "tocsin-doorbell"

// Channel is the NOTIFY channel the sequencer rings (see tocsin.sequence_batch).
const Channel = "tocsin_doorbell"

var (
	//go:embed queries.sql
	queriesSQL        string
	queries           = sqlfile.Parse("doorbell/queries.sql", queriesSQL)
	doorbellListenSQL = queries.Get("doorbell_listen")
)

// Config configures a Listener.
type Config struct {
	// DatabaseURL is where to LISTEN. The listener holds one connection of its own.
	DatabaseURL string
	// RingFunc receives each new head, or 0 after a (re)connection. It must not block long.
	RingFunc func(head int64)
	// ReconnectFunc, when set, is called after each reconnection (metrics).
	ReconnectFunc func()
	// RetryInterval is the pause before reconnecting. Default RetryIntervalDefault.
	RetryInterval time.Duration
}

// RetryIntervalDefault is the pause before reconnecting when Config gives none.
const RetryIntervalDefault = 500 * time.Millisecond

func (c *Config) withDefaults() {
	if c.RetryInterval <= 0 {
		c.RetryInterval = RetryIntervalDefault
	}
}

// Listener holds a LISTEN connection open and reconnects when it drops.
type Listener struct {
	cfg Config
	log *slog.Logger

	mu      sync.Mutex
	local   bool          // this node's sequencer leads: no connection
	changed chan struct{} // closed (and replaced) when local changes
}

// New returns a Listener.
func New(cfg Config, log *slog.Logger) *Listener {
	cfg.withDefaults()
	return &Listener{cfg: cfg, log: log, changed: make(chan struct{})}
}

// SetLocal says whether this node's own sequencer leads, and so rings the hub of every
// batch in process. While it does the listener holds no connection.
func (l *Listener) SetLocal(local bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.local != local {
		l.local = local
		close(l.changed)
		l.changed = make(chan struct{})
	}
}

func (l *Listener) state() (local bool, changed <-chan struct{}) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.local, l.changed
}

// Run listens until ctx ends.
func (l *Listener) Run(ctx context.Context) error {
	failed := false // the last connection was lost (not let go)
	for {
		local, changed := l.state()
		if local {
			select {
			case <-ctx.Done():
				return nil
			case <-changed:
				continue
			}
		}
		// The connection is let go as soon as this node's sequencer leads.
		lctx, cancel := context.WithCancel(ctx)
		go func() {
			select {
			case <-changed:
				cancel()
			case <-lctx.Done():
			}
		}()
		err := l.listen(lctx, failed)
		cancel()
		if ctx.Err() != nil {
			return nil
		}
		select {
		case <-changed: // let go: this node's sequencer leads (or led for a moment)
			failed = false
			continue
		default:
		}
		failed = true
		l.log.Warn("doorbell connection lost; reconnecting", slog.Any("error", err))
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(l.cfg.RetryInterval):
		}
	}
}

func (l *Listener) listen(ctx context.Context, reconnect bool) error {
	ccfg, err := pgx.ParseConfig(l.cfg.DatabaseURL)
	if err != nil {
		return fmt.Errorf("parsing the database URL: %w", err)
	}
	ccfg.RuntimeParams["application_name"] = ApplicationName
	conn, err := pgx.ConnectConfig(ctx, ccfg)
	if err != nil {
		return fmt.Errorf("connecting to listen: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, doorbellListenSQL); err != nil {
		return fmt.Errorf("listening on %s: %w", Channel, err)
	}
	// Whatever rang while we were away is found by looking the head up.
	l.cfg.RingFunc(0)
	if reconnect && l.cfg.ReconnectFunc != nil {
		l.cfg.ReconnectFunc()
	}
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			return fmt.Errorf("waiting for the doorbell: %w", err)
		}
		head, err := strconv.ParseInt(n.Payload, 10, 64)
		if err != nil {
			l.log.Warn("ignoring a malformed doorbell payload", slog.String("payload", n.Payload))
			continue
		}
		l.cfg.RingFunc(head)
	}
}
