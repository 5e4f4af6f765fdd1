package app_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/tocsin/tocsin/internal/app"
	"github.com/tocsin/tocsin/internal/pgtest"
)

// parkLongPoll parks a long poll of recipient's feed from now on b's node and returns once the
// hub holds it; the function it returns waits for the answer and checks it is one event.
func parkLongPoll(t *testing.T, b *bundle, recipient string) (answered func(msg string)) {
	t.Helper()
	type result struct {
		status int
		page   page
		err    error
	}
	res := make(chan result, 1)
	go func() {
		status, p, err := getFeedErr(http.DefaultClient, b.base, token(t, recipient), "after=now&wait=50")
		res <- result{status, p, err}
	}()
	require.Eventually(t, func() bool { return b.node.Hub.Waiting() == 1 }, 30*time.Second, 5*time.Millisecond)
	return func(msg string) {
		t.Helper()
		r := <-res
		require.NoError(t, r.err)
		require.Equal(t, http.StatusOK, r.status)
		require.Len(t, r.page.Events, 1, msg)
	}
}

// A node's hub hears of its own sequencer's batches in process: with no doorbell and a
// fallback an hour away, a parked long poll still gets an event written by the
// application's own SQL (which wakes nothing in the node) as soon as it is sequenced.
func TestOwnBatchesReachTheHubWithoutTheDoorbell(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.New(t)
	b := startNodeWith(t, db, app.Options{WithoutDoorbell: true}, "--long-poll-max", "60s", "--fallback-interval", "1h")
	answered := parkLongPoll(t, b, "alice")
	_, err := db.Pool.Exec(ctx, `SELECT tocsin.publish('alice', 'chat', '{"n": 1}')`)
	require.NoError(t, err)
	answered("the long poll was answered by the in-process ring, not at the end of its wait")
}

// sequencerLockKey is the sequencer's leadership lock ("tocsin-seq", internal/sequencer).
const sequencerLockKey int64 = 0x746f6373696e2d73

// While a node's own sequencer leads, its doorbell holds no connection: its hub hears of
// every batch in process. When another session takes the lead, the doorbell listens again
// and the other leader's batches reach a long poll parked on this node (the fallback is an
// hour away).
func TestDoorbellListensOnlyWhileAnotherNodeLeads(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.New(t)
	b := startNode(t, db, "--roles", "api,sequencer", "--long-poll-max", "60s", "--fallback-interval", "1h")

	sessions := func(name string) (pids []uint32) {
		rows, err := db.Pool.Query(ctx, `SELECT pid FROM pg_stat_activity
			WHERE datname = current_database() AND application_name = $1`, name)
		require.NoError(t, err)
		pids, err = pgx.CollectRows(rows, pgx.RowTo[uint32])
		require.NoError(t, err)
		return pids
	}
	require.Eventually(t, func() bool { return len(sessions("tocsin-sequencer")) == 1 }, 30*time.Second, 5*time.Millisecond)
	require.Eventually(t, func() bool { return len(sessions("tocsin-doorbell")) == 0 }, 30*time.Second, 5*time.Millisecond,
		"the leader's node lets its doorbell go")

	// Another session takes the lead: the node's sequencer session dies, and this test
	// takes the lock before the node's sequencer tries again.
	other, err := db.Pool.Acquire(ctx)
	require.NoError(t, err)
	defer other.Release()
	_, err = db.Pool.Exec(ctx, `SELECT pg_terminate_backend($1)`, sessions("tocsin-sequencer")[0])
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		var won bool
		require.NoError(t, other.QueryRow(ctx, `SELECT pg_try_advisory_lock($1)`, sequencerLockKey).Scan(&won))
		return won
	}, 30*time.Second, time.Millisecond)
	defer func() { _, _ = other.Exec(ctx, `SELECT pg_advisory_unlock($1)`, sequencerLockKey) }()
	require.Eventually(t, func() bool { return len(sessions("tocsin-doorbell")) == 1 }, 30*time.Second, 5*time.Millisecond,
		"with another leader the node listens again")

	answered := parkLongPoll(t, b, "alice")
	_, err = db.Pool.Exec(ctx, `SELECT tocsin.publish('alice', 'chat', '{"n": 1}')`)
	require.NoError(t, err)
	var moved int
	require.NoError(t, other.QueryRow(ctx, `SELECT moved FROM tocsin.sequence_batch_alone(10, '30 seconds', 50)`).Scan(&moved))
	require.Equal(t, 1, moved)
	answered("the other leader's batch rang this node's doorbell")
}
