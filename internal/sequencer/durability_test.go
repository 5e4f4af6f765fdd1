package sequencer_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/tocsin/tocsin/internal/feed"
	"github.com/tocsin/tocsin/internal/hub"
	"github.com/tocsin/tocsin/internal/pgcluster"
	"github.com/tocsin/tocsin/internal/pgtest"
)

// PostgreSQL is killed with kill -9 in the middle of a burst, with synchronous_commit off
// as the server's default. The WAL writer is stopped first, so that everything committed
// asynchronously since then is still in shared memory when the kill comes and is lost — as
// a crash loses the last asynchronous commits, only every time. A client that followed the
// feed up to the crash gets, in the end, every entry the feed holds exactly once and
// nothing else (no phantom of a lost batch, no gap where a lost position was reused) — or
// a 410 telling it to refetch. (Without the batch's synchronous commit and the history
// check, the client keeps events of lost batches: checked by hand, 3 runs out of 3.)
func TestLostCommitsNeverReachAClient(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	_, url := pgtest.NewCluster(t, pgcluster.Config{Settings: map[string]string{
		// Room for the whole burst in WAL buffers: no backend has to write them out.
		"synchronous_commit": "off", "wal_buffers": "256MB", "shared_buffers": "512MB"}})
	pool, err := pgxpool.New(ctx, url)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	setup(t, pool, url)
	h := hub.New(feed.NewStore(pool), hub.Config{}, quiet)

	var (
		mu       sync.Mutex
		received []int
		cursor   string
		expired  bool
	)
	// poll reads the feed from the client's cursor once; false when nothing came.
	poll := func() bool {
		events, next, err := h.Poll(ctx, "alice", cursor, 100, 0)
		mu.Lock()
		defer mu.Unlock()
		switch {
		case errors.Is(err, feed.ErrCursorExpired):
			expired = true
			return false
		case err != nil:
			return false
		}
		received = append(received, ids(t, events)...)
		cursor = next
		return len(events) > 0
	}
	count := func() int { mu.Lock(); defer mu.Unlock(); return len(received) }

	var (
		stop    atomic.Bool
		writers sync.WaitGroup
		next    atomic.Int64
		ackMu   sync.Mutex
		acked   []int // publish calls whose COMMIT was acknowledged
	)
	for range 4 {
		writers.Go(func() {
			for !stop.Load() {
				id := int(next.Add(1))
				if _, err := pool.Exec(ctx, `SELECT tocsin.publish('alice', 'test', jsonb_build_object('id', $1::int))`, id); err != nil {
					time.Sleep(10 * time.Millisecond)
					continue
				}
				ackMu.Lock()
				acked = append(acked, id)
				ackMu.Unlock()
			}
		})
	}
	// Follow the burst closely, so that the client holds the newest positions at the kill.
	require.Eventually(t, func() bool { poll(); return count() > 100 }, 30*time.Second, time.Millisecond)
	var walWriter int
	require.NoError(t, pool.QueryRow(ctx, `SELECT pid FROM pg_stat_activity WHERE backend_type = 'walwriter'`).Scan(&walWriter))
	require.NoError(t, syscall.Kill(walWriter, syscall.SIGSTOP))
	require.Eventually(t, func() bool { poll(); return count() > 300 }, 30*time.Second, time.Millisecond)
	// kill -9 of a server process: PostgreSQL ends every backend, forgets its shared
	// memory (and the WAL not yet written) and recovers from the WAL on disk.
	require.NoError(t, syscall.Kill(walWriter, syscall.SIGKILL))
	before := count()
	time.Sleep(200 * time.Millisecond) // the burst goes on through the recovery
	stop.Store(true)
	writers.Wait()
	require.Eventually(t, func() bool {
		var n int
		return pool.QueryRow(ctx, `SELECT count(*) FROM tocsin.outbox`).Scan(&n) == nil && n == 0
	}, 60*time.Second, 5*time.Millisecond)
	for poll() {
	}
	if expired {
		t.Logf("the client got 410 after %d events", before)
		return
	}

	var truth []int
	rows, err := pool.Query(ctx, `SELECT (data->>'id')::int FROM tocsin.feed WHERE recipient = 'alice' ORDER BY position`)
	require.NoError(t, err)
	for rows.Next() {
		var id int
		require.NoError(t, rows.Scan(&id))
		truth = append(truth, id)
	}
	require.NoError(t, rows.Err())
	inFeed := map[int]bool{}
	for _, id := range truth {
		inFeed[id] = true
	}
	lost := 0
	for _, id := range acked {
		if !inFeed[id] {
			lost++
		}
	}
	t.Logf("received %d before the kill, %d in all; %d commits acknowledged, %d of them lost by the kill",
		before, len(received), len(acked), lost)
	require.Equal(t, truth, received, "the client's events are exactly the feed's, in order")
}

// killLeader terminates the sequencer's leader connection; the sequencer takes leadership
// again on a new one, and checks the feed's history first.
func killLeader(t *testing.T, pool *pgxpool.Pool) {
	t.Helper()
	require.Eventually(t, func() bool {
		var n int
		_ = pool.QueryRow(context.Background(), `SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity
			WHERE datname = current_database() AND query LIKE 'SELECT tocsin.outbox_wait%' AND pid <> pg_backend_pid()) k`).Scan(&n)
		return n == 1
	}, 10*time.Second, 5*time.Millisecond)
}

func feedState(t *testing.T, pool *pgxpool.Pool) (epoch string, timeline *int32) {
	t.Helper()
	require.NoError(t, pool.QueryRow(context.Background(), `SELECT epoch, timeline FROM tocsin.feed_state`).Scan(&epoch, &timeline))
	return epoch, timeline
}

// The epoch changes when the feed's history may have diverged — the head below what the
// sequencer committed, or another WAL timeline than the one recorded — and only then.
func TestEpochChangesWhenHistoryMayHaveDiverged(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.New(t)
	b := setup(t, db.Pool, db.URL)
	h := hub.New(feed.NewStore(db.Pool), hub.Config{}, quiet)
	for i := range 10 {
		require.NoError(t, b.publish(ctx, i, "alice", 0))
	}
	events := follow(ctx, t, h, "alice", 10)
	require.Len(t, events, 10)
	epoch, timeline := feedState(t, db.Pool)
	require.NotNil(t, timeline, "the timeline is recorded when the sequencer takes leadership")

	// An ordinary change of leader changes nothing.
	killLeader(t, db.Pool)
	require.NoError(t, b.publish(ctx, 10, "alice", 0))
	events = append(events, follow(ctx, t, h, "alice", 11)[10:]...)
	again, _ := feedState(t, db.Pool)
	require.Equal(t, epoch, again)

	// The last batches are lost (as a crash without synchronous commit would lose them).
	_, err := db.Pool.Exec(ctx, `WITH d AS (DELETE FROM tocsin.feed WHERE position > $1)
		UPDATE tocsin.feed_state SET position = $1`, events[5].Position)
	require.NoError(t, err)
	killLeader(t, db.Pool)
	require.Eventually(t, func() bool { e, _ := feedState(t, db.Pool); return e != epoch }, 10*time.Second, 5*time.Millisecond)
	_, _, err = h.Poll(ctx, "alice", events[5].ID, 10, 0)
	require.ErrorIs(t, err, feed.ErrCursorExpired, "a cursor of the old history gets 410")

	// A standby was promoted: the recorded timeline is not the server's.
	epoch, _ = feedState(t, db.Pool)
	_, err = db.Pool.Exec(ctx, `UPDATE tocsin.feed_state SET timeline = timeline + 1`)
	require.NoError(t, err)
	killLeader(t, db.Pool)
	require.Eventually(t, func() bool { e, _ := feedState(t, db.Pool); return e != epoch }, 10*time.Second, 5*time.Millisecond)
	_, tl := feedState(t, db.Pool)
	require.Equal(t, *timeline, *tl, "the server's own timeline is recorded again")
}

// The batch commits synchronously whatever the session's synchronous_commit: positions it
// hands out survive a crash.
func TestBatchCommitsSynchronously(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.New(t)
	_, err := db.Pool.Exec(ctx, `SELECT tocsin.publish('alice', 'test', '{}')`)
	require.NoError(t, err)
	conn, err := db.Pool.Acquire(ctx)
	require.NoError(t, err)
	defer conn.Release()
	_, err = conn.Exec(ctx, `SET synchronous_commit = off`)
	require.NoError(t, err)
	tx, err := conn.Begin(ctx)
	require.NoError(t, err)
	defer func() { _ = tx.Rollback(ctx) }()
	var moved int
	var setting string
	require.NoError(t, tx.QueryRow(ctx, `SELECT moved FROM tocsin.sequence_batch(10, '30 seconds', 50)`).Scan(&moved))
	require.Equal(t, 1, moved)
	require.NoError(t, tx.QueryRow(ctx, `SELECT current_setting('synchronous_commit')`).Scan(&setting))
	require.Equal(t, "on", setting, "the batch's transaction commits synchronously")
}
