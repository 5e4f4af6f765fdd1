package grouping_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/stretchr/testify/require"

	"github.com/tocsin/tocsin/internal/grouping"
	"github.com/tocsin/tocsin/internal/pgtest"
)

// moverBundle is a database with an idle River client (no worker, no scheduler: only the
// Mover promotes) and a connection listening on River's insert channel.
type moverBundle struct {
	db     *pgtest.DB
	client *river.Client[pgx.Tx]
	listen *pgx.Conn
}

func setupMover(t *testing.T) *moverBundle {
	t.Helper()
	ctx := context.Background()
	db := pgtest.New(t)
	client, err := river.NewClient(riverpgxv5.New(db.Pool), &river.Config{Schema: "tocsin", TestOnly: true, Logger: quiet})
	require.NoError(t, err)
	listen, err := pgx.Connect(ctx, db.URL)
	require.NoError(t, err)
	t.Cleanup(func() { _ = listen.Close(context.Background()) })
	_, err = listen.Exec(ctx, `LISTEN "tocsin.river_insert"`)
	require.NoError(t, err)
	return &moverBundle{db: db, client: client, listen: listen}
}

// scheduleFlush inserts a flush job scheduled for at.
func (b *moverBundle) scheduleFlush(t *testing.T, recipient string, at time.Time) {
	t.Helper()
	_, err := b.client.Insert(context.Background(), grouping.FlushArgs{Recipient: recipient, Route: "r", GroupKey: "[1]"},
		&river.InsertOpts{ScheduledAt: at})
	require.NoError(t, err)
}

// waitWake waits for River's insert notification naming the flush queue.
func (b *moverBundle) waitWake(t *testing.T, within time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	for {
		n, err := b.listen.WaitForNotification(ctx)
		require.NoError(t, err, "no insert notification for the flush queue")
		if n.Payload == `{"queue": "tocsin_groups"}` {
			return
		}
	}
}

// The Mover's wake-up is River's own insert notification: an available job inserted
// through River is announced on the same channel with the same payload. If River renamed
// its channel, workers would wait for their next poll; this test would fail first.
func TestPromotedJobWakesTheFlushQueueLikeRiver(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setupMover(t)
	_, err := b.client.Insert(ctx, grouping.FlushArgs{Recipient: "alice", Route: "r", GroupKey: "[1]"}, nil)
	require.NoError(t, err)
	b.waitWake(t, 10*time.Second)

	b.scheduleFlush(t, "bob", time.Now().Add(time.Hour))
	_, err = b.db.Pool.Exec(ctx, `UPDATE tocsin.river_job SET scheduled_at = now() - interval '1 second' WHERE state = 'scheduled'`)
	require.NoError(t, err)
	mover := grouping.NewMover(b.db.Pool, b.client, grouping.Config{}, quiet)
	n, err := mover.Promote(ctx)
	require.NoError(t, err)
	require.Equal(t, 1, n)
	b.waitWake(t, 10*time.Second)
}

// The Mover does not poll on a tick: it sleeps until the next job falls due. A job this
// node schedules is announced by Expect; one another node schedules is found by the
// lookup at least every IdleInterval. With an idle interval of an hour, only Expect can
// wake it in time; with a short one, the lookup does.
func TestMoverWakesWhenTheNextJobFallsDue(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		idle   time.Duration
		expect bool
	}{{"told by Expect", time.Hour, true}, {"found by its lookup", 200 * time.Millisecond, false}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := setupMover(t)
			mover := grouping.NewMover(b.db.Pool, b.client, grouping.Config{Tick: 20 * time.Millisecond, IdleInterval: tc.idle}, quiet)
			ctx, stop := context.WithCancel(context.Background())
			var wg sync.WaitGroup
			wg.Go(func() { _ = mover.Run(ctx) })
			t.Cleanup(func() { stop(); wg.Wait() })

			at := time.Now().Add(500 * time.Millisecond)
			b.scheduleFlush(t, "alice", at)
			if tc.expect {
				mover.Expect(at)
			}
			b.waitWake(t, 10*time.Second)
			var state string
			require.NoError(t, b.db.Pool.QueryRow(context.Background(),
				`SELECT state FROM tocsin.river_job WHERE args->>'recipient' = 'alice'`).Scan(&state))
			require.Equal(t, "available", state)
		})
	}
}
