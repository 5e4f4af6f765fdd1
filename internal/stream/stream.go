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
//
// On HTTP/1.1 a stream takes its connection over after the headers and costs a few
// kilobytes while it waits (see Streams); elsewhere it runs inside its handler (Serve).
package stream

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"sync"
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
	// Next returns what is there now (no events: wait on Wake).
	Next(ctx context.Context) ([]feed.Event, error)
	// Wake returns the channel that receives when Next may have more; always the same one.
	Wake() <-chan struct{}
	// Cursor is the position everything returned so far reaches.
	Cursor() string
	// SetWakeFunc sets a function called whenever Wake receives (nil: none); it must
	// return at once. A stream that waits without a goroutine is woken through it.
	SetWakeFunc(fn func())
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

// Serve writes s to w until the stream ends, on the caller's goroutine, and says why it
// ended. err is set only for failures worth logging (not a client going away). Counters,
// when not nil, are updated. It is the path for connections that cannot be taken over
// (HTTP/2, a ResponseWriter without Hijack); Streams.Serve takes HTTP/1.1 ones over.
func Serve(ctx context.Context, w http.ResponseWriter, cfg Config, s Session, counters *Counters) (EndReason, error) {
	cfg = cfg.withDefaults()
	setHeaders(w.Header(), false)
	w.WriteHeader(http.StatusOK)
	out := &responseSink{w: w, rc: http.NewResponseController(w), timeout: cfg.WriteTimeout}
	return serve(ctx, out, cfg, s, counters)
}

// setHeaders sets the stream's response headers. A stream on a connection it takes over
// closes that connection when it ends, and says so.
func setHeaders(h http.Header, taken bool) {
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	h.Del("Content-Length")
	if taken {
		h.Set("Transfer-Encoding", "chunked")
		h.Set("Connection", "close")
	}
}

// serve runs a stream to its end on the caller's goroutine.
func serve(ctx context.Context, out sink, cfg Config, s Session, counters *Counters) (EndReason, error) {
	st := newState(ctx, out, cfg, s, counters)
	reason, err, ended := st.begin(nil)
	for !ended {
		if reason, err, ended = st.pump(); ended {
			break
		}
		reason, err, ended = st.wait()
	}
	st.finish(reason)
	return reason, err
}

// sink is where a stream's frames go: the ResponseWriter, or the connection taken over.
type sink interface {
	// headroom is how many bytes each buffer handed to write starts with, free for framing.
	headroom() int
	// write sends b[headroom():] to the client within the write timeout.
	write(b []byte) error
	// heartbeat sends a heartbeat frame (allocating nothing: idle streams send most of them).
	heartbeat() error
}

// state is one stream: begin, then pump and wait in turn until one of them says the stream
// ended, then finish. It holds no buffer between writes (an idle stream costs its fields,
// not the largest batch it ever wrote) and one timer for every deadline (heartbeat,
// lifetime, token expiry, drain).
type state struct {
	ctx      context.Context
	out      sink
	cfg      Config
	counters *Counters
	s        Session

	timer      *time.Timer
	drain      <-chan struct{} // nil once the drain has begun
	hbAt       time.Time       // a heartbeat is due then; every write pushes it back
	lifetimeAt time.Time
	drainAt    time.Time // zero until the drain begins
	wrote      bool      // the last pump wrote events
	wake       <-chan struct{}
	gone       <-chan struct{} // ctx.Done()
}

func newState(ctx context.Context, out sink, cfg Config, s Session, counters *Counters) *state {
	if counters != nil {
		counters.open.Add(1)
	}
	return &state{ctx: ctx, out: out, cfg: cfg, counters: counters, s: s, drain: s.Drain,
		wake: s.Source.Wake(), gone: ctx.Done()}
}

// finish counts the stream's end.
func (st *state) finish(reason EndReason) {
	if st.timer != nil {
		st.timer.Stop()
	}
	if st.counters != nil {
		st.counters.open.Add(-1)
		st.counters.endedOf(reason).Add(1)
	}
}

// begin writes the opening frame and arms the timer: a timer whose channel wait selects
// on, or, when timerFunc is set, one that calls it.
func (st *state) begin(timerFunc func()) (EndReason, error, bool) {
	if err := st.send(appendOpening(st.buffer(), jitter(st.cfg.RetryInterval, 0.5), st.s.Source.Cursor())); err != nil {
		return EndWriteFailed, nil, true
	}
	st.lifetimeAt = time.Now().Add(jitter(st.cfg.MaxLifetime, 0.1))
	if timerFunc != nil {
		st.timer = time.AfterFunc(st.due(), timerFunc)
	} else {
		st.timer = time.NewTimer(st.due())
	}
	return "", nil, false
}

// due returns the time until the earliest deadline.
func (st *state) due() time.Duration {
	next := st.lifetimeAt
	for _, at := range [...]time.Time{st.hbAt, st.s.TokenExpiresAt, st.drainAt} {
		if !at.IsZero() && at.Before(next) {
			next = at
		}
	}
	return time.Until(next)
}

// pump writes what the source has now.
func (st *state) pump() (EndReason, error, bool) {
	st.wrote = false
	events, err := st.s.Source.Next(st.ctx)
	switch {
	case errors.Is(err, feed.ErrSlowConsumer):
		return EndSlowConsumer, nil, true
	case st.ctx.Err() != nil:
		return EndClientGone, nil, true
	case errors.Is(err, feed.ErrCursorExpired):
		return st.end(EndCursorExpired)
	case errors.Is(err, feed.ErrClosed):
		return st.end(EndShutdown)
	case err != nil:
		_, _, _ = st.end(EndError)
		return EndError, fmt.Errorf("following the feed: %w", err), true
	}
	if len(events) == 0 {
		return "", nil, false
	}
	if err := st.writeEvents(events, st.s.EncodeFunc); err != nil {
		if errors.Is(err, errEncode) {
			return EndError, err, true
		}
		return EndWriteFailed, nil, true
	}
	if st.cfg.DeliveredFunc != nil {
		st.cfg.DeliveredFunc(events)
	}
	st.wrote = true
	return "", nil, false
}

// The signals a stream waits for.
const (
	sigWake = iota
	sigTimer
	sigPushOff
	sigDrain
	sigGone
	sigNone // nothing was there (await with poll)
)

// wait waits for the next signal and handles it. After a pump that wrote, it only looks at
// the signals already there, so that the source is read again at once.
func (st *state) wait() (EndReason, error, bool) {
	var sig int
	if st.wrote {
		sig = st.poll()
	} else {
		sig = st.await()
	}
	switch sig {
	case sigTimer:
		if reason, err, ended := st.deadlines(); ended {
			return reason, err, ended
		}
		st.timer.Reset(st.due())
	case sigPushOff:
		return st.end(EndPushDisabled)
	case sigDrain:
		st.beginDrain()
		st.timer.Reset(st.due())
	case sigGone:
		return EndClientGone, nil, true
	}
	return "", nil, false
}

// turn does at once, without waiting, whatever may have become due since the last turn:
// stop (a reason to end without a final frame, "" for none), push off, the drain, a
// deadline, the source's entries; then it re-arms the timer. It is how a stream that waits
// without a goroutine is driven (taken).
func (st *state) turn(stop EndReason) (EndReason, error, bool) {
	for {
		if stop != "" {
			return stop, nil, true
		}
		switch st.poll() {
		case sigPushOff:
			return st.end(EndPushDisabled)
		case sigDrain:
			st.beginDrain()
		}
		if reason, err, ended := st.deadlines(); ended {
			return reason, err, ended
		}
		if reason, err, ended := st.pump(); ended {
			return reason, err, ended
		}
		if !st.wrote {
			break
		}
	}
	st.timer.Reset(st.due())
	return "", nil, false
}

// deadlines ends the stream when its token expired, its lifetime or its moment of the
// drain came, or writes a heartbeat when one is due.
func (st *state) deadlines() (EndReason, error, bool) {
	now := time.Now()
	switch {
	case !st.s.TokenExpiresAt.IsZero() && !now.Before(st.s.TokenExpiresAt):
		return st.end(EndTokenExpired)
	case !now.Before(st.lifetimeAt):
		return st.end(EndLifetime)
	case !st.drainAt.IsZero() && !now.Before(st.drainAt):
		return st.end(EndShutdown)
	case !now.Before(st.hbAt):
		if err := st.out.heartbeat(); err != nil {
			return EndWriteFailed, nil, true
		}
		st.hbAt = heartbeatAt(time.Now(), st.cfg.HeartbeatInterval)
	}
	return "", nil, false
}

// beginDrain picks the stream's moment in the drain window.
func (st *state) beginDrain() {
	st.drain = nil
	st.drainAt = time.Now().Add(rand.N(st.cfg.DrainWindow))
}

// await blocks until a signal arrives. It is where a held stream spends its life, so its
// frame is kept small: the goroutine's stack stays at the runtime's minimum.
func (st *state) await() int {
	select {
	case <-st.wake:
		return sigWake
	case <-st.timer.C:
		return sigTimer
	case <-st.s.PushOff:
		return sigPushOff
	case <-st.drain:
		return sigDrain
	case <-st.gone:
		return sigGone
	}
}

// poll returns a signal that is already there, or sigNone.
func (st *state) poll() int {
	select {
	case <-st.timer.C:
		return sigTimer
	case <-st.s.PushOff:
		return sigPushOff
	case <-st.drain:
		return sigDrain
	case <-st.gone:
		return sigGone
	default:
		return sigNone
	}
}

var errEncode = errors.New("encoding an event")

func (st *state) writeEvents(events []feed.Event, encode func(feed.Event) ([]byte, error)) error {
	b := st.buffer()
	for _, e := range events {
		data, err := encode(e)
		if err != nil {
			return fmt.Errorf("%w %q: %w", errEncode, e.ID, err)
		}
		b = appendEvent(b, e.ID, e.Kind, data)
	}
	if err := st.send(b); err != nil {
		return err
	}
	if st.counters != nil {
		st.counters.events.Add(int64(len(events)))
	}
	return nil
}

// end writes the final frame for reason; the client reconnects (or, for push-disabled,
// falls back to polling) from its last event id.
func (st *state) end(reason EndReason) (EndReason, error, bool) {
	name, data := "reconnect", `{"reason":"`+string(reason)+`"}`
	if reason == EndPushDisabled {
		name, data = "push-disabled", `{}`
	}
	if err := st.send(appendEvent(st.buffer(), "", name, []byte(data))); err != nil {
		return EndWriteFailed, nil, true
	}
	return reason, nil, true
}

// buffers hold frames while they are written; streams share them instead of each keeping
// its own.
var buffers = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}

// maxPooledBuffer is the largest buffer returned to the pool (a big batch is let go).
const maxPooledBuffer = 64 << 10

// buffer returns an empty frame buffer from the pool, with the sink's headroom.
func (st *state) buffer() []byte {
	return (*buffers.Get().(*[]byte))[:st.out.headroom()]
}

// send writes b (from buffer) and gives it back to the pool, then pushes the heartbeat back.
func (st *state) send(b []byte) error {
	err := st.out.write(b)
	if cap(b) <= maxPooledBuffer {
		b = b[:0]
		buffers.Put(&b)
	}
	if err != nil {
		return err
	}
	st.hbAt = heartbeatAt(time.Now(), st.cfg.HeartbeatInterval)
	return nil
}

// responseSink writes through the http.ResponseWriter: a write deadline, then a flush.
type responseSink struct {
	w       http.ResponseWriter
	rc      *http.ResponseController
	timeout time.Duration
}

func (r *responseSink) headroom() int { return 0 }

var heartbeatFrame = appendHeartbeat(nil)

func (r *responseSink) heartbeat() error { return r.write(heartbeatFrame) }

func (r *responseSink) write(b []byte) error {
	if err := r.rc.SetWriteDeadline(time.Now().Add(r.timeout)); err != nil && !errors.Is(err, http.ErrNotSupported) {
		return err
	}
	if _, err := r.w.Write(b); err != nil {
		return err
	}
	return r.rc.Flush()
}

// heartbeatAt is when a heartbeat is due after a write at now: interval later, rounded
// down to a tenth of the interval (at most a second). Streams' heartbeats then fall due
// together, a few times a second for a whole node, so the process wakes once for many of
// them instead of once for each.
func heartbeatAt(now time.Time, interval time.Duration) time.Time {
	return now.Add(interval).Truncate(min(interval/10, time.Second))
}

// jitter returns d spread uniformly over d±frac·d.
func jitter(d time.Duration, frac float64) time.Duration {
	spread := time.Duration(float64(d) * frac)
	if spread <= 0 {
		return d
	}
	return d - spread + rand.N(2*spread+1)
}
