// Package stream writes a recipient's feed to a client as Server-Sent Events: how the
// bytes reach the client, not what the client is owed (the hub's Follower decides that).
//
// A stream:
//   - flushes its headers at once (text/event-stream, Cache-Control: no-cache,
//     X-Accel-Buffering: no; never compressed), then an opening frame with a jittered
//     retry: hint and the cursor it starts from;
//   - writes each event as "id: <cursor>\nevent: <kind>\ndata: <JSON>\n\n", the JSON being
//     the same Event object GET /v1/feed returns; no value can inject a field (frame.go);
//   - sets a write deadline before every write, so a stalled client is cut off;
//   - sends a heartbeat comment after HeartbeatInterval without writes;
//   - ends cleanly with a final frame: "reconnect" at its jittered maximum lifetime, at the
//     expiry of the token it was opened with, and on shutdown (at a random moment of the
//     drain window, so that clients do not all reconnect at once); "push-disabled" when
//     push is switched off. A slow consumer (feed.ErrSlowConsumer) is cut off without one.
//
// Whatever ends a stream, its client resumes from the last id it received (Last-Event-ID)
// with nothing lost and nothing repeated.
package stream

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"time"

	"github.com/tocsin/tocsin/internal/feed"
)

// Defaults for Config.
const (
	HeartbeatIntervalDefault = 15 * time.Second
	MaxLifetimeDefault       = 10 * time.Minute
	WriteTimeoutDefault      = 10 * time.Second
	RetryIntervalDefault     = 2 * time.Second
	DrainWindowDefault       = 5 * time.Second
)

// Config configures streams.
type Config struct {
	// HeartbeatInterval is the longest silence before a heartbeat comment.
	HeartbeatInterval time.Duration
	// MaxLifetime is how long a stream lives (±10%, at random) before it asks its client to
	// reconnect, which spreads load over the nodes and bounds a token's reach.
	MaxLifetime time.Duration
	// WriteTimeout bounds each write; a client that does not take the bytes in time is cut.
	WriteTimeout time.Duration
	// RetryInterval is the reconnection delay hinted to clients (±50%, at random).
	RetryInterval time.Duration
	// DrainWindow is the window over which streams end on shutdown.
	DrainWindow time.Duration
	// DeliveredFunc, when set, is called with the events of each successful write
	// (metrics).
	DeliveredFunc func(events []feed.Event)
}

func (c Config) withDefaults() Config {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&c.HeartbeatInterval, HeartbeatIntervalDefault)
	def(&c.MaxLifetime, MaxLifetimeDefault)
	def(&c.WriteTimeout, WriteTimeoutDefault)
	def(&c.RetryInterval, RetryIntervalDefault)
	def(&c.DrainWindow, DrainWindowDefault)
	return c
}

// Source is the followed feed (a hub Follower). Next reports feed.ErrSlowConsumer and
// feed.ErrClosed as such; any other error ends the stream with an error frame.
type Source interface {
	Next(ctx context.Context) ([]feed.Event, error)
	Wake() <-chan struct{}
	Cursor() string
}

// Session is what one stream serves.
type Session struct {
	// Source yields the events. Serve does not close it.
	Source Source
	// EncodeFunc renders an event's data: the API's JSON Event object.
	EncodeFunc func(feed.Event) ([]byte, error)
	// TokenExpiresAt ends the stream (zero: never).
	TokenExpiresAt time.Time
	// PushOff is closed when push is switched off (nil: never).
	PushOff <-chan struct{}
	// Drain is closed when the node starts shutting down (nil: never).
	Drain <-chan struct{}
}

// Serve writes s to w until the stream ends, and says why it ended. err is set only for
// failures worth logging (not a client going away). Counters, when not nil, are updated.
func Serve(ctx context.Context, w http.ResponseWriter, cfg Config, s Session, counters *Counters) (EndReason, error) {
	cfg = cfg.withDefaults()
	if counters != nil {
		counters.open.Add(1)
		defer counters.open.Add(-1)
	}
	st := &state{w: w, rc: http.NewResponseController(w), cfg: cfg, counters: counters}
	reason, err := st.run(ctx, s)
	if counters != nil {
		counters.endedOf(reason).Add(1)
	}
	return reason, err
}

type state struct {
	w        http.ResponseWriter
	rc       *http.ResponseController
	cfg      Config
	counters *Counters
	buf      []byte
	hb       *time.Timer
}

func (st *state) run(ctx context.Context, s Session) (EndReason, error) {
	h := st.w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	h.Del("Content-Length")
	st.w.WriteHeader(http.StatusOK)
	if err := st.write(appendOpening(st.buf[:0], jitter(st.cfg.RetryInterval, 0.5), s.Source.Cursor())); err != nil {
		return EndWriteFailed, nil
	}

	st.hb = time.NewTimer(st.cfg.HeartbeatInterval)
	defer st.hb.Stop()
	lifetime := time.NewTimer(jitter(st.cfg.MaxLifetime, 0.1))
	defer lifetime.Stop()
	var expiry <-chan time.Time
	if !s.TokenExpiresAt.IsZero() {
		t := time.NewTimer(time.Until(s.TokenExpiresAt))
		defer t.Stop()
		expiry = t.C
	}
	drain := s.Drain
	var drainTimer <-chan time.Time

	for {
		events, err := s.Source.Next(ctx)
		switch {
		case errors.Is(err, feed.ErrSlowConsumer):
			return EndSlowConsumer, nil
		case ctx.Err() != nil:
			return EndClientGone, nil
		case errors.Is(err, feed.ErrCursorExpired):
			return st.end(EndCursorExpired)
		case errors.Is(err, feed.ErrClosed):
			return st.end(EndShutdown)
		case err != nil:
			_, _ = st.end(EndError)
			return EndError, fmt.Errorf("following the feed: %w", err)
		}
		wake := s.Source.Wake()
		if len(events) > 0 {
			if err := st.writeEvents(events, s.EncodeFunc); err != nil {
				if errors.Is(err, errEncode) {
					return EndError, err
				}
				return EndWriteFailed, nil
			}
			if st.cfg.DeliveredFunc != nil {
				st.cfg.DeliveredFunc(events)
			}
			wake = alwaysReady // look at the other signals, then read on
		}
		select {
		case <-wake:
		case <-st.hb.C:
			if err := st.write(appendHeartbeat(st.buf[:0])); err != nil {
				return EndWriteFailed, nil
			}
		case <-lifetime.C:
			return st.end(EndLifetime)
		case <-expiry:
			return st.end(EndTokenExpired)
		case <-s.PushOff:
			return st.end(EndPushDisabled)
		case <-drain:
			drain = nil
			drainTimer = time.After(rand.N(st.cfg.DrainWindow))
		case <-drainTimer:
			return st.end(EndShutdown)
		case <-ctx.Done():
			return EndClientGone, nil
		}
	}
}

var alwaysReady = func() <-chan struct{} { c := make(chan struct{}); close(c); return c }()

var errEncode = errors.New("encoding an event")

func (st *state) writeEvents(events []feed.Event, encode func(feed.Event) ([]byte, error)) error {
	b := st.buf[:0]
	for _, e := range events {
		data, err := encode(e)
		if err != nil {
			return fmt.Errorf("%w %q: %w", errEncode, e.ID, err)
		}
		b = appendEvent(b, e.ID, e.Kind, data)
	}
	st.buf = b
	if err := st.write(b); err != nil {
		return err
	}
	if st.counters != nil {
		st.counters.events.Add(int64(len(events)))
	}
	return nil
}

// end writes the final frame for reason; the client reconnects (or, for push-disabled,
// falls back to polling) from its last event id.
func (st *state) end(reason EndReason) (EndReason, error) {
	name, data := "reconnect", `{"reason":"`+string(reason)+`"}`
	if reason == EndPushDisabled {
		name, data = "push-disabled", `{}`
	}
	if err := st.write(appendEvent(st.buf[:0], "", name, []byte(data))); err != nil {
		return EndWriteFailed, nil
	}
	return reason, nil
}

// write writes b and flushes it within the write timeout, then pushes the heartbeat back.
func (st *state) write(b []byte) error {
	if err := st.rc.SetWriteDeadline(time.Now().Add(st.cfg.WriteTimeout)); err != nil && !errors.Is(err, http.ErrNotSupported) {
		return err
	}
	if _, err := st.w.Write(b); err != nil {
		return err
	}
	if err := st.rc.Flush(); err != nil {
		return err
	}
	if st.hb != nil {
		st.hb.Reset(st.cfg.HeartbeatInterval)
	}
	return nil
}

// jitter returns d spread uniformly over d±frac·d.
func jitter(d time.Duration, frac float64) time.Duration {
	spread := time.Duration(float64(d) * frac)
	if spread <= 0 {
		return d
	}
	return d - spread + rand.N(2*spread+1)
}
