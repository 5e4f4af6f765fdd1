package sequencer_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"
	"golang.org/x/sync/errgroup"

	"github.com/tocsin/tocsin/internal/feed"
	"github.com/tocsin/tocsin/internal/hub"
	"github.com/tocsin/tocsin/internal/pgcluster"
	"github.com/tocsin/tocsin/internal/pgtest"
	"github.com/tocsin/tocsin/internal/sequencer"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// write is one application transaction, as the writers saw it.
type write struct {
	id        int
	recipient string
	startSeq  int64 // clock value before the transaction began
	commitSeq int64 // clock value after COMMIT returned
}

type bundle struct {
	pool  *pgxpool.Pool
	url   string
	clock atomic.Int64
	mu    sync.Mutex
	done  []write
}

func setup(t *testing.T, pool *pgxpool.Pool, url string) *bundle {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	seq := sequencer.New(pool, sequencer.Config{PollInterval: 2 * time.Millisecond, BatchLimit: 50,
		RetryInterval: 50 * time.Millisecond}, quiet)
	done := make(chan struct{})
	go func() { defer close(done); _ = seq.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return &bundle{pool: pool, url: url}
}

// publish runs one transaction publishing message id to recipient, holding it open for hold.
func (b *bundle) publish(ctx context.Context, id int, recipient string, hold time.Duration) error {
	w := write{id: id, recipient: recipient, startSeq: b.clock.Add(1)}
	err := pgx.BeginFunc(ctx, b.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT tocsin.publish($1, 'test', jsonb_build_object('id', $2::int))`, recipient, id); err != nil {
			return err
		}
		time.Sleep(hold)
		return nil
	})
	if err != nil {
		return err
	}
	w.commitSeq = b.clock.Add(1)
	b.mu.Lock()
	b.done = append(b.done, w)
	b.mu.Unlock()
	return nil
}

// follow reads recipient's feed by cursor until it holds want events or the deadline passes.
func follow(ctx context.Context, t *testing.T, h *hub.Hub, recipient string, want int) []feed.Event {
	t.Helper()
	var got []feed.Event
	cursor := ""
	deadline := time.Now().Add(60 * time.Second)
	for len(got) < want && time.Now().Before(deadline) {
		events, next, err := h.Poll(ctx, recipient, cursor, 7, 500*time.Millisecond)
		require.NoError(t, err)
		got = append(got, events...)
		cursor = next
	}
	return got
}

func ids(t *testing.T, events []feed.Event) []int {
	out := make([]int, len(events))
	for i, e := range events {
		var d struct{ ID int }
		require.NoError(t, json.Unmarshal(e.Data, &d))
		out[i] = d.ID
	}
	return out
}

// checkExactlyOnceInCommitOrder is the invariant: every event routed to recipient, once,
// none of anyone else's, and A before B whenever A committed before B began.
func checkExactlyOnceInCommitOrder(t *testing.T, b *bundle, recipient string, events []feed.Event) {
	t.Helper()
	want := map[int]write{}
	for _, w := range b.done {
		if w.recipient == recipient {
			want[w.id] = w
		}
	}
	got := ids(t, events)
	seen := map[int]int{}
	for i, id := range got {
		require.Equal(t, recipient, events[i].Recipient)
		_, mine := want[id]
		require.True(t, mine, "event %d is not %s's", id, recipient)
		seen[id]++
		require.Equal(t, 1, seen[id], "event %d delivered twice", id)
	}
	require.Len(t, seen, len(want), "events lost")
	for i := range got {
		for j := i + 1; j < len(got); j++ {
			later, earlier := want[got[i]], want[got[j]]
			require.False(t, earlier.commitSeq < later.startSeq,
				"event %d (committed before %d began) came after it", earlier.id, later.id)
		}
		if i > 0 {
			require.Greater(t, events[i].Position, events[i-1].Position)
		}
	}
}

func TestNoLossNoDuplicatesUnderConcurrentWritersAndLongTransaction(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.New(t)
	b := setup(t, db.Pool, db.URL)
	h := hub.New(feed.NewStore(db.Pool), hub.Config{FallbackInterval: 50 * time.Millisecond}, quiet)
	hctx, stop := context.WithCancel(ctx)
	defer stop()
	go func() { _ = h.Run(hctx) }()

	recipients := []string{"alice", "bob", "carol"}
	const writers, perWriter = 8, 40
	var g errgroup.Group
	// One long transaction starts first, takes the smallest ids and commits last.
	g.Go(func() error { return b.publish(ctx, 0, "alice", 3*time.Second) })
	time.Sleep(50 * time.Millisecond)
	var id atomic.Int64
	for range writers {
		g.Go(func() error {
			for range perWriter {
				n := int(id.Add(1))
				hold := time.Duration(rand.IntN(4000)) * time.Microsecond
				if err := b.publish(ctx, n, recipients[rand.IntN(len(recipients))], hold); err != nil {
					return err
				}
			}
			return nil
		})
	}

	// Readers follow their cursors while the writes happen.
	results := make([][]feed.Event, len(recipients))
	var readers sync.WaitGroup
	var expected atomic.Pointer[map[string]int] // set once every write has committed
	for i, r := range recipients {
		readers.Go(func() {
			var got []feed.Event
			cursor := ""
			want := -1
			for want < 0 || len(got) < want {
				if m := expected.Load(); m != nil {
					want = (*m)[r]
				}
				events, next, err := h.Poll(ctx, r, cursor, 5, 200*time.Millisecond)
				if err != nil {
					t.Errorf("poll: %v", err)
					return
				}
				got = append(got, events...)
				cursor = next
			}
			results[i] = got
		})
	}
	require.NoError(t, g.Wait())
	counts := map[string]int{}
	for _, w := range b.done {
		counts[w.recipient]++
	}
	expected.Store(&counts)
	readers.Wait()
	for i, r := range recipients {
		checkExactlyOnceInCommitOrder(t, b, r, results[i])
	}
	// The long transaction's event came last for alice though its id is the smallest.
	require.Equal(t, 0, ids(t, results[0])[len(results[0])-1])
}

// The sequencer's connection is killed again and again while it works: each kill aborts a
// batch mid-way, leadership is lost and retaken, and nothing is lost or repeated.
func TestNoLossNoDuplicatesWhenSequencerIsKilledMidBatch(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.New(t)
	b := setup(t, db.Pool, db.URL)

	stopKills := make(chan struct{})
	var kills atomic.Int64
	go func() {
		for {
			select {
			case <-stopKills:
				return
			case <-time.After(time.Duration(5+rand.IntN(20)) * time.Millisecond):
			}
			// Match the sequencer's batch statement by its start: this query's own text
			// holds the pattern, and it must never match itself on another connection.
			var n int64
			_ = db.Pool.QueryRow(ctx, `SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity
				WHERE datname = current_database() AND query LIKE 'SELECT head, moved%' AND pid <> pg_backend_pid()) k`).Scan(&n)
			kills.Add(n)
		}
	}()
	var g errgroup.Group
	for w := range 6 {
		g.Go(func() error {
			for i := range 50 {
				if err := b.publish(ctx, w*1000+i, "alice", 0); err != nil {
					return err
				}
			}
			return nil
		})
	}
	require.NoError(t, g.Wait())
	require.Eventually(t, func() bool {
		var n int
		_ = db.Pool.QueryRow(ctx, `SELECT count(*) FROM tocsin.outbox`).Scan(&n)
		return n == 0
	}, 30*time.Second, 10*time.Millisecond)
	close(stopKills)
	t.Logf("sequencer connections killed: %d", kills.Load())
	require.Positive(t, kills.Load(), "the test never managed to kill a batch")

	h := hub.New(feed.NewStore(db.Pool), hub.Config{}, quiet)
	checkExactlyOnceInCommitOrder(t, b, "alice", follow(ctx, t, h, "alice", 300))
}

// PostgreSQL itself crashes (immediate stop) and restarts during a burst of writes.
func TestNoLossNoDuplicatesAcrossPostgresRestart(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	// Commits must be durable here: with synchronous_commit off, PostgreSQL itself forgets
	// acknowledged commits when it crashes, and the test would blame Tocsin.
	cluster, url := pgtest.NewCluster(t, pgcluster.Config{Settings: map[string]string{"synchronous_commit": "on"}})
	pool, err := pgxpool.New(ctx, url)
	require.NoError(t, err)
	t.Cleanup(pool.Close) // registered first, so it runs after the sequencer has stopped
	b := setup(t, pool, url)

	var (
		mu      sync.Mutex
		inDoubt = map[int]bool{} // writes the crash interrupted: committed or not, unknown
		// restarted is closed when the restart returned; writers go on after it, so the
		// burst surrounds the crash.
		restarted = make(chan struct{})
	)
	var g errgroup.Group
	for w := range 4 {
		g.Go(func() error {
			after := 0
			for i := 0; after < 20 && i < 100_000; i++ {
				sinceRestart := false
				select {
				case <-restarted:
					sinceRestart = true
				default:
				}
				id := w*100_000 + i
				if err := b.publish(ctx, id, "alice", time.Millisecond); err != nil {
					mu.Lock()
					inDoubt[id] = true
					mu.Unlock()
					time.Sleep(20 * time.Millisecond)
				} else if sinceRestart {
					after++
				}
			}
			return nil
		})
	}
	// The crash comes once the burst is well under way and the sequencer has moved some of it.
	require.Eventually(t, func() bool {
		var head int64
		return pool.QueryRow(ctx, `SELECT position FROM tocsin.feed_state`).Scan(&head) == nil && head >= 40
	}, 30*time.Second, 5*time.Millisecond)
	var startedBefore time.Time
	require.NoError(t, pool.QueryRow(ctx, `SELECT pg_postmaster_start_time()`).Scan(&startedBefore))
	crashSeq := b.clock.Add(1)
	require.NoError(t, cluster.Restart(ctx))
	restartSeq := b.clock.Add(1)
	close(restarted)
	require.NoError(t, g.Wait())

	// The restart really happened, in the middle of the burst: writes committed before it
	// and after it, and writers saw it fail their transactions.
	var startedAfter time.Time
	require.NoError(t, pool.QueryRow(ctx, `SELECT pg_postmaster_start_time()`).Scan(&startedAfter))
	require.True(t, startedAfter.After(startedBefore), "PostgreSQL did not restart")
	var before, after int
	for _, w := range b.done {
		if w.commitSeq < crashSeq {
			before++
		}
		if w.startSeq > restartSeq {
			after++
		}
	}
	require.Positive(t, before, "no write committed before the crash")
	require.GreaterOrEqual(t, after, 4*20, "the writers did not go on after the restart")
	require.NotEmpty(t, inDoubt, "no write was interrupted: the crash missed the burst")

	// Wait until the sequencer has drained the outbox, then read everything by cursor.
	require.Eventually(t, func() bool {
		var n int
		return pool.QueryRow(ctx, `SELECT count(*) FROM tocsin.outbox`).Scan(&n) == nil && n == 0
	}, 30*time.Second, 20*time.Millisecond)
	h := hub.New(feed.NewStore(pool), hub.Config{}, quiet)
	var got []feed.Event
	for cursor := ""; ; {
		events, next, err := h.Poll(ctx, "alice", cursor, 13, 0)
		require.NoError(t, err)
		if len(events) == 0 {
			break
		}
		got = append(got, events...)
		cursor = next
	}
	committed := map[int]bool{}
	for _, w := range b.done {
		committed[w.id] = true
	}
	seen := map[int]bool{}
	for _, id := range ids(t, got) {
		require.False(t, seen[id], "event %d delivered twice", id)
		require.True(t, committed[id] || inDoubt[id], "event %d was never written", id)
		seen[id] = true
	}
	for id := range committed {
		require.True(t, seen[id], "committed event %d lost", id)
	}
	t.Logf("committed %d (%d before the crash, %d after the restart), in doubt %d, delivered %d",
		len(committed), before, after, len(inDoubt), len(seen))
}
