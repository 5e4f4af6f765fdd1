package stream

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// Streams serves one node's streams and counts them.
//
// On HTTP/1.1 a stream takes its connection over once the response headers are out
// (http.Hijacker): it writes the chunked framing itself, keeps nothing of the request (no
// *http.Request, no request context, no gin context, none of net/http's per-connection
// buffers and goroutines) and, while it waits, is no goroutine at all (see taken). That
// is what makes a held stream cost a few kilobytes instead of tens. A closed peer is
// noticed as soon as its FIN or RST arrives (EPOLLRDHUP on Linux, a one-byte read
// elsewhere), not at the next failed heartbeat. http.Server.Shutdown does not see such
// connections: Wait does.
//
// HTTP/2 and ResponseWriters that cannot be taken over are served as before, on the
// request's goroutine (Serve).
type Streams struct {
	cfg      Config
	counters Counters

	mu        sync.Mutex
	held      map[*taken]struct{}
	watched   map[<-chan struct{}]struct{} // channels a goroutine waits on (watchLocked)
	emptiedCh chan struct{}                // closed when held becomes empty (Wait)
	cut       bool                         // Wait gave up: no more streams
}

// NewStreams returns the streams of a node served with cfg.
func NewStreams(cfg Config) *Streams {
	return &Streams{cfg: cfg.withDefaults(), held: map[*taken]struct{}{}, watched: map[<-chan struct{}]struct{}{}}
}

// Counters returns the streams' counters.
func (ss *Streams) Counters() *Counters { return &ss.counters }

// Serve writes the headers of a stream to w and serves s until it ends, then calls done
// (exactly once) with why it ended; err is set only for failures worth logging. ctx is the
// request's context, used only while the stream stays on the request's goroutine.
//
// When takeOver is true (an HTTP/1.1 request) and w can be hijacked, Serve returns as
// soon as the headers are out and the stream lives on without the request; otherwise it
// returns when the stream has ended. Either way, the caller must not touch w afterwards.
func (ss *Streams) Serve(ctx context.Context, w http.ResponseWriter, takeOver bool, s Session, done func(EndReason, error)) {
	rc := http.NewResponseController(w)
	setHeaders(w.Header(), takeOver)
	w.WriteHeader(http.StatusOK)
	if takeOver {
		if err := rc.Flush(); err != nil {
			done(EndWriteFailed, nil)
			return
		}
		conn, _, err := rc.Hijack() // the bufio.ReadWriter is let go with the rest
		if err == nil {
			ss.serveTaken(conn, s, done)
			return
		}
		if !errors.Is(err, http.ErrNotSupported) {
			done(EndWriteFailed, nil)
			return
		}
	}
	out := &responseSink{w: w, rc: rc, timeout: ss.cfg.WriteTimeout}
	done(serve(ctx, out, ss.cfg, s, &ss.counters))
}

func (ss *Streams) serveTaken(conn net.Conn, s Session, done func(EndReason, error)) {
	t := &taken{ss: ss, conn: conn, done: done}
	t.st = newState(context.Background(), &connSink{conn: conn, timeout: ss.cfg.WriteTimeout, now: newWriteNow(conn)}, ss.cfg, s, &ss.counters)
	t.running.Store(true) // begin runs first
	ss.mu.Lock()
	if ss.cut {
		ss.mu.Unlock()
		_ = conn.Close()
		t.st.finish(EndShutdown)
		done(EndShutdown, nil)
		return
	}
	ss.held[t] = struct{}{}
	ss.watchLocked(s.PushOff)
	ss.watchLocked(s.Drain)
	ss.mu.Unlock()
	t.unwatch = watchPeer(conn, t.peerGone)
	go t.begin()
}

// watchLocked starts, once per channel, a goroutine that kicks every held stream when ch
// closes (push switched off, drain): each then looks at its own channels.
func (ss *Streams) watchLocked(ch <-chan struct{}) {
	if ch == nil {
		return
	}
	if _, ok := ss.watched[ch]; ok {
		return
	}
	ss.watched[ch] = struct{}{}
	go func() {
		<-ch
		ss.mu.Lock()
		defer ss.mu.Unlock()
		delete(ss.watched, ch)
		for t := range ss.held {
			t.kick()
		}
	}()
}

// taken is a stream on a connection taken over. While it waits it is no goroutine at all,
// only its state and one timer: its follower's wake, its timer, the push switch, the drain
// and its peer's FIN each kick it, and a kick runs turns on a fresh goroutine until
// nothing is left to do. One turn runs at a time.
type taken struct {
	ss      *Streams
	conn    net.Conn
	st      *state
	done    func(EndReason, error)
	unwatch func()

	running atomic.Bool // a goroutine is turning (stays true once the stream ended)
	again   atomic.Bool // kicked since the current turn began
	gone    atomic.Bool // the peer closed the connection
	cut     atomic.Bool // Wait gave up: end now
}

// kick makes the stream take a turn soon; it never blocks.
func (t *taken) kick() {
	t.again.Store(true)
	if t.running.CompareAndSwap(false, true) {
		go t.turns()
	}
}

// fired is the timer's function: it already runs on a goroutine of its own.
func (t *taken) fired() {
	t.again.Store(true)
	if t.running.CompareAndSwap(false, true) {
		t.turns()
	}
}

func (t *taken) peerGone() {
	t.gone.Store(true)
	t.kick()
}

func (t *taken) begin() {
	if reason, err, ended := t.st.begin(t.fired); ended {
		t.end(reason, err)
		return
	}
	t.st.s.Source.SetWakeFunc(t.kick)
	t.turns()
}

// turns takes turns while kicks keep coming; t.running is true.
func (t *taken) turns() {
	for {
		t.again.Store(false)
		var stop EndReason
		switch {
		case t.cut.Load():
			stop = EndShutdown
		case t.gone.Load():
			stop = EndClientGone
		}
		if reason, err, ended := t.st.turn(stop); ended {
			t.end(reason, err)
			return
		}
		t.running.Store(false)
		if !t.again.Load() || !t.running.CompareAndSwap(false, true) {
			return
		}
	}
}

func (t *taken) end(reason EndReason, err error) {
	t.unwatch()
	t.st.s.Source.SetWakeFunc(nil)
	t.st.finish(reason)
	if reason != EndWriteFailed && reason != EndClientGone && reason != EndSlowConsumer && !t.cut.Load() {
		t.st.out.(*connSink).finish()
	}
	_ = t.conn.Close()
	t.done(reason, err)
	t.ss.mu.Lock()
	delete(t.ss.held, t)
	if len(t.ss.held) == 0 && t.ss.emptiedCh != nil {
		close(t.ss.emptiedCh)
		t.ss.emptiedCh = nil
	}
	t.ss.mu.Unlock()
}

// Wait waits until every stream running on a connection it took over has ended (they end
// over the drain window once Session.Drain is closed). When ctx ends first, it ends them
// at once, closing their connections, refuses any later one, and returns ctx's error.
func (ss *Streams) Wait(ctx context.Context) error {
	select {
	case <-ss.emptied():
		return nil
	case <-ctx.Done():
	}
	ss.mu.Lock()
	ss.cut = true
	for t := range ss.held {
		t.cut.Store(true)
		_ = t.conn.Close() // fails a write in progress
		t.kick()
	}
	ss.mu.Unlock()
	<-ss.emptied()
	return ctx.Err()
}

// emptied returns a channel closed once no stream is held.
func (ss *Streams) emptied() <-chan struct{} {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if len(ss.held) == 0 {
		return closedChan
	}
	if ss.emptiedCh == nil {
		ss.emptiedCh = make(chan struct{})
	}
	return ss.emptiedCh
}

var closedChan = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

// connSink writes chunked frames on a connection taken over.
type connSink struct {
	conn    net.Conn
	timeout time.Duration
	now     *writeNow // nil: every write is guarded by the deadline
}

// chunkHeadroom holds a chunk's size line: up to 8 hex digits and CRLF.
const chunkHeadroom = 10

func (c *connSink) headroom() int { return chunkHeadroom }

// write frames b[chunkHeadroom:] as one chunk ("<size hex>\r\n<data>\r\n") and writes it
// with one system call.
func (c *connSink) write(b []byte) error {
	n := len(b) - chunkHeadroom
	if n <= 0 {
		return nil // an empty chunk would end the response
	}
	i := chunkHeadroom - 2
	b[i], b[i+1] = '\r', '\n'
	for v := n; v > 0; v >>= 4 {
		i--
		b[i] = "0123456789abcdef"[v&0xf]
	}
	b = append(b, '\r', '\n')
	return c.send(b[i:])
}

// send writes b within the write timeout. What the socket takes at once goes out without
// a deadline (writeNow); only a write that has to wait for room is guarded by one.
func (c *connSink) send(b []byte) error {
	n, err := c.now.write(b)
	if err != nil {
		return err
	}
	if b = b[n:]; len(b) == 0 {
		return nil
	}
	if err := c.conn.SetWriteDeadline(time.Now().Add(c.timeout)); err != nil {
		return err
	}
	if _, err := c.conn.Write(b); err != nil {
		return err
	}
	// Clear the deadline: an armed one would wake the process when it passes, for nothing.
	return c.conn.SetWriteDeadline(time.Time{})
}

// heartbeatChunk is a heartbeat frame as one chunk.
var heartbeatChunk = fmt.Appendf(nil, "%x\r\n%s\r\n", len(heartbeatFrame), heartbeatFrame)

func (c *connSink) heartbeat() error { return c.send(heartbeatChunk) }

// lastChunk ends a chunked response.
var lastChunk = []byte("0\r\n\r\n")

// finish ends the response cleanly, so that the client sees a complete body.
func (c *connSink) finish() {
	if c.conn.SetWriteDeadline(time.Now().Add(c.timeout)) == nil {
		_, _ = c.conn.Write(lastChunk)
	}
}
