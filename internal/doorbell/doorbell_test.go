package doorbell_test

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tocsin/tocsin/internal/doorbell"
	"github.com/tocsin/tocsin/internal/feed"
	"github.com/tocsin/tocsin/internal/hub"
	"github.com/tocsin/tocsin/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// gate forwards TCP connections to PostgreSQL and can cut them all and refuse new ones:
// a network failure between the listener and the database, on demand.
type gate struct {
	ln     net.Listener
	target string
	open   atomic.Bool
	mu     sync.Mutex
	conns  []net.Conn
}

func newGate(t *testing.T, dbURL string) (*gate, string) {
	t.Helper()
	u, err := url.Parse(dbURL)
	require.NoError(t, err)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	g := &gate{ln: ln, target: u.Host}
	g.open.Store(true)
	go g.serve()
	t.Cleanup(func() { ln.Close(); g.cut() })
	u.Host = ln.Addr().String()
	return g, u.String()
}

func (g *gate) serve() {
	for {
		c, err := g.ln.Accept()
		if err != nil {
			return
		}
		if !g.open.Load() {
			c.Close()
			continue
		}
		up, err := net.Dial("tcp", g.target)
		if err != nil {
			c.Close()
			continue
		}
		g.mu.Lock()
		g.conns = append(g.conns, c, up)
		g.mu.Unlock()
		go func() { _, _ = io.Copy(up, c); up.Close() }()
		go func() { _, _ = io.Copy(c, up); c.Close() }()
	}
}

// cut closes every forwarded connection.
func (g *gate) cut() {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, c := range g.conns {
		c.Close()
	}
	g.conns = nil
}

// rings records what a Listener rang.
type rings struct {
	mu    sync.Mutex
	heads []int64
}

func (r *rings) ring(head int64) {
	r.mu.Lock()
	r.heads = append(r.heads, head)
	r.mu.Unlock()
}

func (r *rings) get() []int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]int64(nil), r.heads...)
}

// listening counts the sessions listening for the doorbell, named as the listener names
// its own (pg_stat_activity tells it from the pool's sessions).
func listening(t *testing.T, db *pgtest.DB) int {
	var n int
	require.NoError(t, db.Pool.QueryRow(context.Background(), `SELECT count(*) FROM pg_stat_activity
		WHERE datname = current_database() AND query = 'LISTEN `+doorbell.Channel+`'
		  AND application_name = $1`, doorbell.ApplicationName).Scan(&n))
	return n
}

// sequence does what a sequencer batch does for the doorbell: one feed entry for
// recipient, the head moved, one NOTIFY with the new head, in one transaction.
func sequence(t *testing.T, db *pgtest.DB, recipient string) int64 {
	t.Helper()
	var head int64
	require.NoError(t, db.Pool.QueryRow(context.Background(), `
		WITH s AS (UPDATE tocsin.feed_state SET position = position + 1 RETURNING position),
		     f AS (INSERT INTO tocsin.feed (position, recipient, topic, kind, created_at)
		           SELECT position, $1, 'note', 'message', now() FROM s)
		SELECT position, pg_notify('`+doorbell.Channel+`', position::text) FROM s`, recipient).Scan(&head, new(any)))
	return head
}

func runListener(t *testing.T, cfg doorbell.Config) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- doorbell.New(cfg, quiet).Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
	})
}

// Every committed batch rings once with its head; the first connection rings 0 (the head
// is unknown until looked up) without counting as a reconnection; a malformed payload is
// ignored.
func TestRingsEachBatchHead(t *testing.T) {
	t.Parallel()
	db := pgtest.New(t)
	var r rings
	var reconnects atomic.Int32
	runListener(t, doorbell.Config{DatabaseURL: db.URL, RingFunc: r.ring, ReconnectFunc: func() { reconnects.Add(1) }})
	require.Eventually(t, func() bool { return listening(t, db) == 1 }, 10*time.Second, 5*time.Millisecond)

	_, err := db.Pool.Exec(context.Background(), `SELECT pg_notify($1, 'not a number')`, doorbell.Channel)
	require.NoError(t, err)
	h1 := sequence(t, db, "alice")
	h2 := sequence(t, db, "bob")
	require.Eventually(t, func() bool { return len(r.get()) == 3 }, 10*time.Second, 5*time.Millisecond)
	require.Equal(t, []int64{0, h1, h2}, r.get())
	require.Zero(t, reconnects.Load())
}

// The doorbell's connection is cut and a batch commits while it is down: its NOTIFY is
// lost. The listener reconnects, rings 0, and the hub looks the head up and delivers the
// entry to the long poll that was waiting all along. No fallback timer is involved.
func TestLostNotifyIsFoundAfterTheListenerReconnects(t *testing.T) {
	t.Parallel()
	db := pgtest.New(t)
	g, proxied := newGate(t, db.URL)

	h := hub.New(feed.NewStore(db.Pool), hub.Config{FallbackInterval: time.Hour}, quiet)
	hctx, stopHub := context.WithCancel(context.Background())
	hubDone := make(chan error, 1)
	go func() { hubDone <- h.Run(hctx) }()
	defer func() { stopHub(); <-hubDone }()

	var r rings
	var reconnects atomic.Int32
	runListener(t, doorbell.Config{DatabaseURL: proxied, RetryInterval: 5 * time.Millisecond,
		RingFunc: func(head int64) { r.ring(head); h.Ring(head) }, ReconnectFunc: func() { reconnects.Add(1) }})
	require.Eventually(t, func() bool { return listening(t, db) == 1 }, 10*time.Second, 5*time.Millisecond)

	type result struct {
		events []feed.Event
		err    error
	}
	polled := make(chan result, 1)
	go func() {
		ev, _, err := h.Poll(context.Background(), "alice", "now", 10, time.Minute)
		polled <- result{ev, err}
	}()
	require.Eventually(t, func() bool { return h.Waiting() == 1 }, 10*time.Second, 5*time.Millisecond)

	// The network fails; the server notices and ends the listening session.
	g.open.Store(false)
	g.cut()
	require.Eventually(t, func() bool { return listening(t, db) == 0 }, 10*time.Second, 5*time.Millisecond)
	head := sequence(t, db, "alice") // its NOTIFY reaches nobody
	require.NotContains(t, r.get(), head)
	require.Equal(t, 1, h.Waiting(), "nothing told the hub")

	g.open.Store(true)
	var res result
	select {
	case res = <-polled:
	case <-time.After(20 * time.Second):
		t.Fatal("the waiting long poll never got the entry")
	}
	require.NoError(t, res.err)
	require.Len(t, res.events, 1)
	require.Equal(t, head, res.events[0].Position)
	require.NotContains(t, r.get(), head, "the NOTIFY was lost: the entry came through the look-up")
	require.Equal(t, int32(1), reconnects.Load())
	require.Equal(t, []int64{0, 0}, r.get(), "a 0 (look the head up) at each connection")
}

// While this node's sequencer leads, the listener holds no connection (its hub hears of
// every batch in process); when leadership ends it listens again, rings 0 so that a batch
// of another node's that committed meanwhile is looked up, and rings each later batch.
// Letting go is not a reconnection.
func TestListenerLetsGoWhileTheLocalSequencerLeads(t *testing.T) {
	t.Parallel()
	db := pgtest.New(t)
	var r rings
	var reconnects atomic.Int32
	ctx, cancel := context.WithCancel(context.Background())
	l := doorbell.New(doorbell.Config{DatabaseURL: db.URL, RingFunc: r.ring, ReconnectFunc: func() { reconnects.Add(1) }}, quiet)
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	require.Eventually(t, func() bool { return listening(t, db) == 1 && len(r.get()) == 1 }, 10*time.Second, 5*time.Millisecond)

	l.SetLocal(true)
	require.Eventually(t, func() bool { return listening(t, db) == 0 }, 10*time.Second, 5*time.Millisecond)
	unheard := sequence(t, db, "alice")
	l.SetLocal(true) // no change
	l.SetLocal(false)
	require.Eventually(t, func() bool { return listening(t, db) == 1 && len(r.get()) == 2 }, 10*time.Second, 5*time.Millisecond)
	heard := sequence(t, db, "bob")
	require.Eventually(t, func() bool { return len(r.get()) == 3 }, 10*time.Second, 5*time.Millisecond)
	require.Equal(t, []int64{0, 0, heard}, r.get(), "the batch rung while let go is looked up (0), not rung")
	require.Less(t, unheard, heard)

	// A flip faster than the listener still ends in a fresh LISTEN that rings 0.
	l.SetLocal(true)
	l.SetLocal(false)
	require.Eventually(t, func() bool { return len(r.get()) == 4 && listening(t, db) == 1 }, 10*time.Second, 5*time.Millisecond)
	h := sequence(t, db, "carol")
	require.Eventually(t, func() bool { return len(r.get()) == 5 }, 10*time.Second, 5*time.Millisecond)
	require.Equal(t, []int64{0, 0, heard, 0, h}, r.get())
	require.Zero(t, reconnects.Load(), "letting go is not a reconnection")
	cancel()
	require.NoError(t, <-done)
}
