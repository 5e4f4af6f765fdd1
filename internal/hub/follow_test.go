package hub

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tocsin/tocsin/internal/feed"
)

// memStore is an in-memory feed: enough to drive the hub's hand-over without a database
// (the database paths are covered end to end in internal/app).
type memStore struct {
	mu      sync.Mutex
	epoch   string
	events  []feed.Event
	horizon map[string]int64
	// stateErrs makes that many FeedState calls fail; states counts the calls.
	stateErrs, states int
	// rangeErrs makes that many FeedListRange calls fail.
	rangeErrs int
	// afterReadFunc, when set, runs after FeedListAfter has read (its result is fixed) and
	// before it returns: between a client's read and its registration with the hub.
	afterReadFunc func(recipient string)
	// rangeFunc, when set, runs when the hub's fan-out read starts, before it reads.
	rangeFunc func()
	// rangeAll counts the fan-out reads of every recipient (recipients nil).
	rangeAll atomic.Int32
}

func (m *memStore) append(recipient string, n int) int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	for range n {
		pos := int64(len(m.events) + 1)
		m.events = append(m.events, feed.Event{Position: pos, Recipient: recipient,
			ID: feed.Cursor{Epoch: m.epoch, Position: pos}.String(), Kind: "message"})
	}
	return int64(len(m.events))
}

// reset starts a new feed generation holding n entries of recipient: the head goes back.
func (m *memStore) reset(epoch, recipient string, n int) int64 {
	m.mu.Lock()
	m.epoch, m.events = epoch, nil
	m.mu.Unlock()
	return m.append(recipient, n)
}

func (m *memStore) FeedState(context.Context) (feed.State, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.states++
	if m.stateErrs > 0 {
		m.stateErrs--
		return feed.State{}, errors.New("feed state unavailable")
	}
	return feed.State{Epoch: m.epoch, Head: int64(len(m.events))}, nil
}

func (m *memStore) FeedListAfter(_ context.Context, recipient string, after int64, limit int) ([]feed.Event, feed.State, int64, error) {
	m.mu.Lock()
	var out []feed.Event
	for _, e := range m.events {
		if e.Recipient == recipient && e.Position > after && len(out) < limit {
			out = append(out, e)
		}
	}
	st, horizon, hook := feed.State{Epoch: m.epoch, Head: int64(len(m.events))}, m.horizon[recipient], m.afterReadFunc
	m.mu.Unlock()
	if hook != nil {
		hook(recipient)
	}
	return out, st, horizon, nil
}

func (m *memStore) FeedListRange(_ context.Context, from, to int64, recipients []string, limit int) ([]feed.Event, error) {
	if recipients == nil {
		m.rangeAll.Add(1)
	}
	m.mu.Lock()
	hook := m.rangeFunc
	if m.rangeErrs > 0 {
		m.rangeErrs--
		m.mu.Unlock()
		return nil, errors.New("feed range unavailable")
	}
	m.mu.Unlock()
	if hook != nil {
		hook()
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []feed.Event
	for _, e := range m.events {
		if e.Position > from && e.Position <= to && len(out) < limit {
			if recipients == nil {
				out = append(out, e)
			}
			for _, r := range recipients {
				if r == e.Recipient {
					out = append(out, e)
				}
			}
		}
	}
	return out, nil
}

func (m *memStore) setAfterRead(f func(recipient string)) {
	m.mu.Lock()
	m.afterReadFunc = f
	m.mu.Unlock()
}

func (m *memStore) setRange(f func()) {
	m.mu.Lock()
	m.rangeFunc = f
	m.mu.Unlock()
}

func startHub(t *testing.T, pageLimit int) (*Hub, *memStore) {
	t.Helper()
	return runHub(t, &memStore{epoch: "abcd"}, pageLimit)
}

func runHub(t *testing.T, store *memStore, pageLimit int) (*Hub, *memStore) {
	t.Helper()
	return runHubConfig(t, store, Config{FallbackInterval: time.Hour, PageLimit: pageLimit})
}

func runHubConfig(t *testing.T, store *memStore, cfg Config) (*Hub, *memStore) {
	t.Helper()
	h := New(store, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = h.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return h, store
}

func waitWake(t *testing.T, f *Follower) {
	t.Helper()
	select {
	case <-f.Wake():
	case <-time.After(10 * time.Second):
		t.Fatal("the follower was never woken")
	}
}

// A follower that leaves entries queued while more arrive is dropped with
// ErrSlowConsumer; a follower that keeps up gets every entry, and the hub never waits.
func TestFollowerSlowConsumer(t *testing.T) {
	t.Parallel()
	h, store := startHub(t, 100)
	ctx := t.Context()
	slow, err := h.Follow(ctx, "alice", "now", 4)
	require.NoError(t, err)
	defer slow.Close()
	fast, err := h.Follow(ctx, "alice", "now", 4)
	require.NoError(t, err)
	defer fast.Close()
	for _, f := range []*Follower{slow, fast} {
		ev, err := f.Next(ctx) // the (empty) first page; registers
		require.NoError(t, err)
		require.Empty(t, ev)
	}

	var got []feed.Event
	for batch := range 3 {
		// A batch larger than the bound is accepted by an empty queue.
		h.Ring(store.append("alice", 6))
		waitWake(t, fast)
		ev, err := fast.Next(ctx)
		require.NoError(t, err)
		require.Len(t, ev, 6, "batch %d", batch)
		got = append(got, ev...)
		if batch == 0 {
			waitWake(t, slow) // the slow one's queue now holds the first batch
		}
	}
	for i, e := range got {
		require.Equal(t, int64(i+1), e.Position)
	}
	_, err = slow.Next(ctx)
	require.ErrorIs(t, err, feed.ErrSlowConsumer)
	require.Equal(t, 1, h.Waiting(), "the slow follower is no longer registered")
}

// A follower reads its backlog page by page, then is handed live entries, each exactly once.
func TestFollowerBacklogThenLive(t *testing.T) {
	t.Parallel()
	h, store := startHub(t, 10)
	ctx := t.Context()
	store.append("alice", 25)
	store.append("bob", 5)
	f, err := h.Follow(ctx, "alice", "", 0)
	require.NoError(t, err)
	defer f.Close()
	require.Equal(t, "", f.Cursor(), "no known position before the backlog is read")

	var got []feed.Event
	for len(got) < 25 {
		ev, err := f.Next(ctx)
		require.NoError(t, err)
		got = append(got, ev...)
	}
	require.Equal(t, "abcd-30", f.Cursor(), "caught up to the head")
	h.Ring(store.append("alice", 3))
	for len(got) < 28 {
		ev, err := f.Next(ctx)
		require.NoError(t, err)
		if len(ev) == 0 {
			waitWake(t, f)
		}
		got = append(got, ev...)
	}
	for i, e := range got {
		require.Equal(t, "alice", e.Recipient)
		if i > 0 {
			require.Greater(t, e.Position, got[i-1].Position)
		}
	}
	require.Len(t, got, 28)
}

func TestFollowRefusesBadCursors(t *testing.T) {
	t.Parallel()
	h, store := startHub(t, 10)
	store.append("alice", 3)
	_, err := h.Follow(t.Context(), "alice", "zzzz-1", 0)
	require.ErrorIs(t, err, feed.ErrCursorExpired)
	_, err = h.Follow(t.Context(), "alice", "abcd-99", 0)
	require.ErrorIs(t, err, feed.ErrCursorExpired)
	_, err = h.Follow(t.Context(), "alice", "garbage", 0)
	require.ErrorIs(t, err, feed.ErrCursorMalformed)
}

// EndWaits answers parked long polls with an empty page and their cursor, and later ones at
// once; followers stay.
func TestEndWaits(t *testing.T) {
	t.Parallel()
	h, store := startHub(t, 10)
	ctx := t.Context()
	f, err := h.Follow(ctx, "alice", "now", 0)
	require.NoError(t, err)
	defer f.Close()
	_, err = f.Next(ctx)
	require.NoError(t, err)

	type result struct {
		events []feed.Event
		cursor string
		err    error
	}
	res := make(chan result, 1)
	go func() {
		ev, c, err := h.Poll(ctx, "alice", "abcd-0", 10, time.Hour)
		res <- result{ev, c, err}
	}()
	require.Eventually(t, func() bool { return h.Waiting() == 2 }, 10*time.Second, time.Millisecond)
	h.EndWaits()
	r := <-res
	require.NoError(t, r.err)
	require.Empty(t, r.events)
	require.Equal(t, "abcd-0", r.cursor)
	require.Equal(t, 1, h.Waiting(), "the follower is still registered")
	// A later long poll answers at once, without reading the feed (a drain costs no query
	// per reconnecting client), even with entries after its cursor: it asks again.
	store.append("alice", 2)
	var reads atomic.Int32
	store.setAfterRead(func(string) { reads.Add(1) })
	ev, c, err := h.Poll(ctx, "alice", "abcd-0", 10, time.Hour)
	require.NoError(t, err)
	require.Empty(t, ev)
	require.Equal(t, "abcd-0", c, "a later long poll answers at once")
	require.Zero(t, reads.Load(), "no read")
	// A short poll still reads.
	ev, _, err = h.Poll(ctx, "alice", "abcd-0", 10, 0)
	require.NoError(t, err)
	require.Len(t, ev, 2)
	require.Equal(t, int32(1), reads.Load())
}

// A fan-out never reads below the lowest head its subscribers read up to. Here the hub
// could not learn the head at start and missed the doorbell while nobody waited; a
// follower then joins at the head of a long history, and the next entry still takes one
// read, not a page-by-page walk through that history.
func TestFanoutSkipsHistoryNobodyIsOwed(t *testing.T) {
	t.Parallel()
	store := &memStore{epoch: "abcd", stateErrs: 1}
	h, _ := runHub(t, store, 100)
	var reads atomic.Int64
	h.ReadFunc = func(int) { reads.Add(1) }
	require.Eventually(t, func() bool {
		store.mu.Lock()
		defer store.mu.Unlock()
		return store.states == 1
	}, 10*time.Second, time.Millisecond, "the hub looks the head up at start")
	ctx := t.Context()
	head := store.append("alice", 10_000)
	f, err := h.Follow(ctx, "alice", feed.Cursor{Epoch: "abcd", Position: head}.String(), 0)
	require.NoError(t, err)
	defer f.Close()
	ev, err := f.Next(ctx)
	require.NoError(t, err)
	require.Empty(t, ev)

	h.Ring(store.append("alice", 1))
	waitWake(t, f)
	ev, err = f.Next(ctx)
	require.NoError(t, err)
	require.Len(t, ev, 1)
	require.Equal(t, head+1, ev[0].Position)
	require.Equal(t, int64(1), reads.Load())
}
