package sequencer_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"

	"github.com/tocsin/tocsin/internal/pgtest"
	"github.com/tocsin/tocsin/internal/sequencer"
)

// The batch as a transaction of its own: on an empty outbox it takes no transaction id
// (nothing to flush at commit); with rows it commits synchronously whatever the session's
// synchronous_commit; with a grouped row it refuses the whole batch.
func TestBatchAloneSkipsAnEmptyOutboxCommitsSynchronouslyAndRefusesGroupedRows(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.New(t)
	conn, err := db.Pool.Acquire(ctx)
	require.NoError(t, err)
	defer conn.Release()
	_, err = conn.Exec(ctx, `SET synchronous_commit = off`)
	require.NoError(t, err)
	const alone = `SELECT b.head, b.moved, pg_current_xact_id_if_assigned() IS NOT NULL,
		current_setting('synchronous_commit') FROM tocsin.sequence_batch_alone(10, '30 seconds', 50) b`
	var (
		head    *int64
		moved   int
		hasXID  bool
		setting string
	)
	require.NoError(t, conn.QueryRow(ctx, alone).Scan(&head, &moved, &hasXID, &setting))
	require.Nil(t, head)
	require.Zero(t, moved)
	require.False(t, hasXID, "an empty batch writes nothing")

	_, err = conn.Exec(ctx, `SELECT tocsin.publish('alice', 'test', '{}')`)
	require.NoError(t, err)
	require.NoError(t, conn.QueryRow(ctx, alone).Scan(&head, &moved, &hasXID, &setting))
	require.NotNil(t, head)
	require.Equal(t, 1, moved)
	require.True(t, hasXID)
	require.Equal(t, "on", setting, "the batch's transaction commits synchronously")

	_, err = conn.Exec(ctx, `SELECT tocsin.publish('alice', 'test', '{}');
		INSERT INTO tocsin.outbox (recipient, topic, kind, data, group_key) VALUES ('alice', 'test', 'message', '{}', 'g')`)
	require.NoError(t, err)
	err = conn.QueryRow(ctx, alone).Scan(&head, &moved, &hasXID, &setting)
	var pgErr *pgconn.PgError
	require.ErrorAs(t, err, &pgErr)
	require.Equal(t, "TS001", pgErr.Code)
	var waiting, fed int
	require.NoError(t, conn.QueryRow(ctx, `SELECT (SELECT count(*) FROM tocsin.outbox), (SELECT count(*) FROM tocsin.feed)`).Scan(&waiting, &fed))
	require.Equal(t, 2, waiting, "a refused batch moves nothing")
	require.Equal(t, 1, fed)
}

// recordingEnqueuer writes each flush it is given through the batch's transaction (so that
// it commits or rolls back with the batch), or fails.
type recordingEnqueuer struct {
	fail    bool
	windows chan int
}

func (e *recordingEnqueuer) EnqueueFlushesTx(ctx context.Context, tx pgx.Tx, flushes []sequencer.Flush) error {
	if e.fail {
		e.windows <- -len(flushes)
		return errors.New("enqueue refused")
	}
	for _, f := range flushes {
		if _, err := tx.Exec(ctx, `INSERT INTO enqueued (recipient, group_key) VALUES ($1, $2)`, f.Recipient, f.GroupKey); err != nil {
			return err
		}
	}
	e.windows <- len(flushes)
	return nil
}

// A batch with grouped rows runs in the sequencer's own transaction with its flush jobs:
// when the enqueue fails nothing of the batch commits (the rows wait in the outbox, the
// feed does not move); when it succeeds, the flushes and the batch commit together, and
// ungrouped rows behind them still reach the feed.
func TestGroupedBatchEnqueuesItsFlushesInItsTransaction(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.New(t)
	_, err := db.Pool.Exec(ctx, `CREATE TABLE enqueued (recipient text, group_key text);
		SELECT tocsin.publish('alice', 'test', '{}');
		INSERT INTO tocsin.outbox (recipient, topic, kind, data, group_key) VALUES ('bob', 'test', 'message', '{}', 'g')`)
	require.NoError(t, err)

	run := func(e *recordingEnqueuer) (stop func()) {
		rctx, cancel := context.WithCancel(ctx)
		seq := sequencer.New(db.Pool, sequencer.Config{Enqueuer: e, RetryInterval: 20 * time.Millisecond,
			StandbyInterval: 20 * time.Millisecond}, quiet)
		done := make(chan struct{})
		go func() { defer close(done); _ = seq.Run(rctx) }()
		return func() { cancel(); <-done }
	}
	failing := &recordingEnqueuer{fail: true, windows: make(chan int, 64)}
	stop := run(failing)
	for range 2 { // the first attempt and a retry
		select {
		case n := <-failing.windows:
			require.Equal(t, -1, n)
		case <-time.After(30 * time.Second):
			t.Fatal("the grouped batch never reached the enqueuer")
		}
	}
	stop()
	counts := func() (waiting, fed, pending, enqueued int) {
		require.NoError(t, db.Pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM tocsin.outbox), (SELECT count(*) FROM tocsin.feed),
			(SELECT count(*) FROM tocsin.group_pending), (SELECT count(*) FROM enqueued)`).Scan(&waiting, &fed, &pending, &enqueued))
		return
	}
	waiting, fed, pending, enqueued := counts()
	require.Equal(t, []int{2, 0, 0, 0}, []int{waiting, fed, pending, enqueued}, "a batch whose enqueue failed left nothing behind")

	working := &recordingEnqueuer{windows: make(chan int, 64)}
	stop = run(working)
	defer stop()
	select {
	case n := <-working.windows:
		require.Equal(t, 1, n)
	case <-time.After(30 * time.Second):
		t.Fatal("the grouped batch never reached the enqueuer")
	}
	require.Eventually(t, func() bool {
		waiting, fed, pending, enqueued := counts()
		return waiting == 0 && fed == 1 && pending == 1 && enqueued == 1
	}, 30*time.Second, 10*time.Millisecond, "the batch and its flush commit together")

	// The next batches, grouped or not, keep flowing.
	_, err = db.Pool.Exec(ctx, `SELECT tocsin.publish('alice', 'test', '{}')`)
	require.NoError(t, err)
	require.Eventually(t, func() bool { _, fed, _, _ := counts(); return fed == 2 }, 30*time.Second, 10*time.Millisecond)
}
