package hub

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tocsin/tocsin/internal/feed"
)

// The tests in this file force the rare branches the hub's guarantee rests on, with store
// hooks that change the feed between a client's read and its registration, or while a
// fan-out read is in flight. Each asserts both that the branch ran and that the client
// still gets every entry exactly once.

// pollResult is what a Poll running in another goroutine returned.
type pollResult struct {
	events []feed.Event
	cursor string
	err    error
}

func pollAsync(h *Hub, ctx context.Context, recipient, after string, wait time.Duration) <-chan pollResult {
	res := make(chan pollResult, 1)
	go func() {
		ev, c, err := h.Poll(ctx, recipient, after, 100, wait)
		res <- pollResult{ev, c, err}
	}()
	return res
}

func receive[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(10 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
		panic("unreachable")
	}
}

func positions(events []feed.Event) []int64 {
	out := make([]int64, len(events))
	for i, e := range events {
		out[i] = e.Position
	}
	return out
}

// eventually polls cond until it holds or 10 s pass. Unlike require.Eventually it may run
// on any goroutine (hooks run on the client's or the hub's): it reports failure with
// t.Errorf, never FailNow.
func eventually(t *testing.T, cond func() bool, what string) {
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Errorf("timed out waiting until %s", what)
			return
		}
		time.Sleep(time.Millisecond)
	}
}

// waitHead waits until the hub has moved its head to at least head.
func waitHead(t *testing.T, h *Hub, head int64) {
	eventually(t, func() bool { return h.headNow() >= head }, "the hub's head moves")
}

// An entry is sequenced, and the hub moves past it, after a long poll read its feed but
// before it registered: the registration is refused, the poll reads again and gets it.
func TestPollRegistrationRefusedReadsAgain(t *testing.T) {
	t.Parallel()
	h, store := startHub(t, 100)
	head := store.append("alice", 2)
	waitHead(t, h, 0)
	var reads atomic.Int32
	store.setAfterRead(func(string) {
		if reads.Add(1) == 1 {
			h.Ring(store.append("alice", 1)) // nobody waits: the hub just moves its head
			waitHead(t, h, head+1)
		}
	})
	r := receive(t, pollAsync(h, t.Context(), "alice", feed.Cursor{Epoch: "abcd", Position: head}.String(), time.Minute), "the poll")
	require.NoError(t, r.err)
	require.Equal(t, []int64{head + 1}, positions(r.events))
	require.Equal(t, int32(2), reads.Load(), "refused once, then read again")
	require.Zero(t, h.Waiting())
}

// The same race for a stream: the follower's registration is refused after an empty and
// after a non-empty backlog page; it reads on and gets every entry once, in order.
func TestFollowerRegistrationRefusedReadsAgain(t *testing.T) {
	t.Parallel()
	h, store := startHub(t, 100)
	store.append("alice", 3)
	waitHead(t, h, 0)
	var reads atomic.Int32
	store.setAfterRead(func(string) {
		if n := reads.Add(1); n <= 2 {
			head := store.append("alice", 1)
			h.Ring(head)
			waitHead(t, h, head)
		}
	})
	f, err := h.Follow(t.Context(), "alice", "", 0)
	require.NoError(t, err)
	defer f.Close()
	var got []feed.Event
	for len(got) < 5 {
		ev, err := f.Next(t.Context())
		require.NoError(t, err)
		got = append(got, ev...)
	}
	require.Equal(t, []int64{1, 2, 3, 4, 5}, positions(got))
	require.GreaterOrEqual(t, reads.Load(), int32(3))
	require.Equal(t, 1, h.Waiting(), "registered at last")

	store.setAfterRead(nil)
	h.Ring(store.append("alice", 1))
	waitWake(t, f)
	ev, err := f.Next(t.Context())
	require.NoError(t, err)
	require.Equal(t, []int64{6}, positions(ev))
}

// A client registers while a fan-out read is in flight, with a read older than what that
// fan-out delivers: it is of a newer generation than the read, so it is told to read again
// (a generation resync) and gets its entry from its own read.
func TestGenerationResyncWhenRegisteredDuringFanout(t *testing.T) {
	t.Parallel()
	h, store := startHub(t, 100)
	waitHead(t, h, 0)
	ctx := t.Context()
	alice := pollAsync(h, ctx, "alice", "now", time.Minute)
	require.Eventually(t, func() bool { return h.Waiting() == 1 }, 10*time.Second, time.Millisecond)

	// bob's read is held between its read and its registration.
	inRead, release := make(chan struct{}), make(chan struct{})
	var bobReads atomic.Int32
	store.setAfterRead(func(recipient string) {
		if recipient == "bob" && bobReads.Add(1) == 1 {
			close(inRead)
			<-release
		}
	})
	bob := pollAsync(h, ctx, "bob", "now", time.Minute)
	receive(t, inRead, "bob's read")

	// The fan-out read starts for alice only; bob registers during it.
	var once sync.Once
	store.setRange(func() {
		once.Do(func() {
			close(release)
			eventually(t, func() bool { return h.Waiting() == 2 }, "bob registers")
		})
	})
	store.append("alice", 1)
	h.Ring(store.append("bob", 1))

	a := receive(t, alice, "alice's poll")
	require.NoError(t, a.err)
	require.Equal(t, []int64{1}, positions(a.events))
	b := receive(t, bob, "bob's poll")
	require.NoError(t, b.err)
	require.Equal(t, []int64{2}, positions(b.events))
	require.Equal(t, int32(2), bobReads.Load(), "bob was resynced and read again")
}

// With more waiting recipients than RecipientFilterMax, the fan-out read takes the whole
// range: each waiter still gets only its own entries, and a client that registers while
// the read is in flight is served from it, without reading again (the read holds its
// entries too).
func TestUnfilteredFanoutServesLateRegistrations(t *testing.T) {
	t.Parallel()
	store := &memStore{epoch: "abcd"}
	h, _ := runHubConfig(t, store, Config{FallbackInterval: time.Hour, PageLimit: 100, RecipientFilterMax: 1})
	waitHead(t, h, 0)
	ctx := t.Context()
	alice := pollAsync(h, ctx, "alice", "now", time.Minute)
	carol := pollAsync(h, ctx, "carol", "now", time.Minute)
	require.Eventually(t, func() bool { return h.Waiting() == 2 }, 10*time.Second, time.Millisecond)

	inRead, release := make(chan struct{}), make(chan struct{})
	var bobReads atomic.Int32
	store.setAfterRead(func(recipient string) {
		if recipient == "bob" && bobReads.Add(1) == 1 {
			close(inRead)
			<-release
		}
	})
	bob := pollAsync(h, ctx, "bob", "now", time.Minute)
	receive(t, inRead, "bob's read")
	var once sync.Once
	store.setRange(func() {
		once.Do(func() {
			close(release)
			eventually(t, func() bool { return h.Waiting() == 3 }, "bob registers")
		})
	})
	store.append("alice", 1)
	store.append("dave", 1) // nobody waits for dave
	store.append("carol", 1)
	h.Ring(store.append("bob", 1))

	for _, tc := range []struct {
		name string
		ch   <-chan pollResult
		want int64
	}{{"alice", alice, 1}, {"carol", carol, 3}, {"bob", bob, 4}} {
		r := receive(t, tc.ch, tc.name+"'s poll")
		require.NoError(t, r.err)
		require.Equal(t, []int64{tc.want}, positions(r.events), tc.name)
	}
	require.Positive(t, store.rangeAll.Load(), "the fan-out read named no recipient")
	require.Equal(t, int32(1), bobReads.Load(), "bob was served by the fan-out, not resynced")
	require.Zero(t, h.Waiting())
}

// The feed goes backwards (a reset: restored, slot lost): every waiter is told to read
// again and learns that its cursor expired; a follower first gets what was queued for it.
func TestResetResyncsEveryWaiter(t *testing.T) {
	t.Parallel()
	store := &memStore{epoch: "abcd"}
	head := store.append("alice", 5)
	h, _ := runHub(t, store, 100)
	waitHead(t, h, head)
	ctx := t.Context()
	cursor := feed.Cursor{Epoch: "abcd", Position: head}.String()

	queued, err := h.Follow(ctx, "alice", cursor, 0)
	require.NoError(t, err)
	defer queued.Close()
	idle, err := h.Follow(ctx, "alice", cursor, 0)
	require.NoError(t, err)
	defer idle.Close()
	for _, f := range []*Follower{queued, idle} {
		ev, err := f.Next(ctx)
		require.NoError(t, err)
		require.Empty(t, ev)
	}
	h.Ring(store.append("alice", 1))
	waitWake(t, idle)
	ev, err := idle.Next(ctx)
	require.NoError(t, err)
	require.Equal(t, []int64{head + 1}, positions(ev))
	waitWake(t, queued) // its entry stays queued

	poll := pollAsync(h, ctx, "alice", feed.Cursor{Epoch: "abcd", Position: head + 1}.String(), time.Minute)
	require.Eventually(t, func() bool { return h.Waiting() == 3 }, 10*time.Second, time.Millisecond)

	store.reset("efgh", "alice", 2)
	h.Ring(0) // a reconnected doorbell: the head is unknown, look it up

	r := receive(t, poll, "the poll")
	require.ErrorIs(t, r.err, feed.ErrCursorExpired)
	waitWake(t, idle)
	_, err = idle.Next(ctx)
	require.ErrorIs(t, err, feed.ErrCursorExpired)

	ev, err = queued.Next(ctx)
	require.NoError(t, err, "what was queued before the reset is handed over first")
	require.Equal(t, []int64{head + 1}, positions(ev))
	_, err = queued.Next(ctx)
	require.ErrorIs(t, err, feed.ErrCursorExpired)
	require.Zero(t, h.Waiting())
}

// A follower whose position falls below its recipient's retention horizon while it pages
// through its backlog is told its cursor expired: never a silent gap.
func TestFollowerPastRetentionHorizonExpires(t *testing.T) {
	t.Parallel()
	h, store := startHub(t, 2)
	store.append("alice", 6)
	f, err := h.Follow(t.Context(), "alice", "", 0)
	require.NoError(t, err)
	defer f.Close()
	require.Equal(t, []int64{1, 2}, positions(f.pending), "the oldest never expires")
	store.mu.Lock()
	store.horizon = map[string]int64{"alice": 4} // retention removed 3 and 4 meanwhile
	store.mu.Unlock()
	ev, err := f.Next(t.Context())
	require.NoError(t, err)
	require.Len(t, ev, 2)
	_, err = f.Next(t.Context())
	require.ErrorIs(t, err, feed.ErrCursorExpired)

	_, err = h.Follow(t.Context(), "alice", "abcd-3", 0)
	require.ErrorIs(t, err, feed.ErrCursorExpired, "a stream from below the horizon is refused at once")
}

// When the hub stops, waiting long polls answer with their cursor, followers get ErrClosed,
// and later waiters are not served.
func TestStopEndsEveryWaiter(t *testing.T) {
	t.Parallel()
	store := &memStore{epoch: "abcd"}
	h := New(store, Config{FallbackInterval: time.Hour}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.Run(ctx) }()
	waitHead(t, h, 0)

	f, err := h.Follow(t.Context(), "alice", "now", 0)
	require.NoError(t, err)
	_, err = f.Next(t.Context())
	require.NoError(t, err)
	poll := pollAsync(h, t.Context(), "alice", "abcd-0", time.Minute)
	require.Eventually(t, func() bool { return h.Waiting() == 2 }, 10*time.Second, time.Millisecond)

	cancel()
	require.NoError(t, receive(t, done, "Run"))
	r := receive(t, poll, "the poll")
	require.NoError(t, r.err)
	require.Empty(t, r.events)
	require.Equal(t, "abcd-0", r.cursor)
	waitWake(t, f)
	_, err = f.Next(t.Context())
	require.ErrorIs(t, err, feed.ErrClosed)
	f.Close()

	r = receive(t, pollAsync(h, t.Context(), "alice", "abcd-0", time.Minute), "a poll after the stop")
	require.NoError(t, r.err)
	require.Equal(t, "abcd-0", r.cursor)
	_, err = h.Follow(t.Context(), "alice", "abcd-0", 0)
	require.ErrorIs(t, err, feed.ErrClosed)
}

// A lost doorbell (no Ring at all) delays a waiting client by at most one fallback tick;
// a fan-out read that fails is retried. Nothing is lost either way.
func TestFallbackFindsMissedDoorbellAndRetriesFailedReads(t *testing.T) {
	t.Parallel()
	store := &memStore{epoch: "abcd", rangeErrs: 1}
	h := New(store, Config{FallbackInterval: 5 * time.Millisecond}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.Run(ctx) }()
	defer func() { cancel(); <-done }()
	waitHead(t, h, 0)

	poll := pollAsync(h, t.Context(), "alice", "now", time.Minute)
	require.Eventually(t, func() bool { return h.Waiting() == 1 }, 10*time.Second, time.Millisecond)
	store.append("alice", 1) // sequenced, but its doorbell is lost
	r := receive(t, poll, "the poll")
	require.NoError(t, r.err)
	require.Equal(t, []int64{1}, positions(r.events))
	store.mu.Lock()
	require.Zero(t, store.rangeErrs, "the first fan-out read failed and was retried")
	store.mu.Unlock()
}

// Short polls answer at once; a long poll that times out answers with its cursor, one whose
// context ends answers with the context's error; "" and "now" become cursors at the head.
func TestPollAnswers(t *testing.T) {
	t.Parallel()
	h, store := startHub(t, 100)
	store.append("bob", 3)
	ev, c, err := h.Poll(t.Context(), "alice", "", 10, 0)
	require.NoError(t, err)
	require.Empty(t, ev)
	require.Equal(t, "abcd-3", c, "omitted after: a cursor at the head")
	ev, c, err = h.Poll(t.Context(), "bob", "", 2, 0)
	require.NoError(t, err)
	require.Equal(t, []int64{1, 2}, positions(ev))
	require.Equal(t, "abcd-2", c)

	ev, c, err = h.Poll(t.Context(), "alice", "now", 10, 10*time.Millisecond)
	require.NoError(t, err)
	require.Empty(t, ev)
	require.Equal(t, "abcd-3", c)

	ctx, cancel := context.WithCancel(t.Context())
	res := pollAsync(h, ctx, "alice", "abcd-3", time.Minute)
	require.Eventually(t, func() bool { return h.Waiting() == 1 }, 10*time.Second, time.Millisecond)
	cancel()
	r := receive(t, res, "the cancelled poll")
	require.ErrorIs(t, r.err, context.Canceled)
	require.Zero(t, h.Waiting())

	_, _, err = h.Poll(t.Context(), "alice", "zzzz-1", 10, 0)
	require.ErrorIs(t, err, feed.ErrCursorExpired)
	_, _, err = h.Poll(t.Context(), "alice", "bad", 10, 0)
	require.ErrorIs(t, err, feed.ErrCursorMalformed)
	store.mu.Lock()
	store.stateErrs = 1
	store.mu.Unlock()
	_, _, err = h.Poll(t.Context(), "alice", "now", 10, 0)
	require.Error(t, err)
}
