package capture_test

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/tocsin/tocsin/internal/capture"
	"github.com/tocsin/tocsin/internal/pgcluster"
	"github.com/tocsin/tocsin/internal/pgtest"
	"github.com/tocsin/tocsin/internal/routes"
)

// TestPostgresCrashBeforeFlushLosesNothing crashes PostgreSQL while the consumer's last
// commit, which does not wait for the WAL flush, is still only in memory: the crash
// forgets that commit (its outbox rows and its applied LSN), so the slot must not have been
// confirmed past the source transaction, which the server then sends again. The change
// ends in the outbox exactly once.
//
// The WAL writer runs every 10s and nothing else commits (no sequencer, no autovacuum), so
// the consumer's commit stays unflushed long enough to crash before it reaches the disk;
// the test checks that it did not, and that the crash really lost it. The first attempt
// usually finds its commit flushed anyway: the WAL writer's first flush after start-up
// takes everything.
func TestPostgresCrashBeforeFlushLosesNothing(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	cluster, url := pgtest.NewCluster(t, pgcluster.Config{Durable: true,
		Settings: map[string]string{"wal_writer_delay": "10s", "autovacuum": "off"}})
	pool, err := pgxpool.New(ctx, url)
	require.NoError(t, err)
	t.Cleanup(pool.Close) // registered first, so it runs after the consumer has stopped
	b := &bundle{ctx: ctx, db: &pgtest.DB{Pool: pool, URL: url}, pool: pool}
	b.exec(t, schema)
	b.apply(t, strings.ReplaceAll(routesYAML, "CAPTURE", string(routes.CaptureReplication)))

	runCtx, cancel := context.WithCancel(ctx)
	c := capture.New(pool, capture.Config{DatabaseURL: url, RetryInterval: 50 * time.Millisecond,
		StandbyInterval: 50 * time.Millisecond, StatusInterval: 50 * time.Millisecond},
		slog.New(slog.NewTextHandler(io.Discard, nil)))
	done := make(chan struct{})
	go func() { _ = c.Run(runCtx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })

	// Each insert routes three outbox rows: item-owner, item-team (grouped) and item-audit.
	rowsOf := func(id int) []int64 {
		var ids []int64
		rows, err := pool.Query(ctx, `SELECT id FROM tocsin.outbox WHERE key = jsonb_build_object('id', $1::int) ORDER BY id`, id)
		if err != nil {
			return nil // the server is restarting
		}
		defer rows.Close()
		for rows.Next() {
			var x int64
			if rows.Scan(&x) != nil {
				return nil
			}
			ids = append(ids, x)
		}
		if rows.Err() != nil {
			return nil
		}
		return ids
	}
	slot, err := routes.SlotName(ctx, pool)
	require.NoError(t, err)
	lost := false
	for attempt := 1; attempt <= 5 && !lost; attempt++ {
		id := attempt
		// before is a WAL position inside the source transaction, before its commit record:
		// a slot confirmed beyond it would not send the transaction again.
		var before string
		tx, err := pool.Begin(ctx)
		require.NoError(t, err)
		_, err = tx.Exec(ctx, `INSERT INTO item (id, owner, team, status) VALUES ($1, 'o', 1, 'open')`, id)
		require.NoError(t, err)
		require.NoError(t, tx.QueryRow(ctx, `SELECT pg_current_wal_insert_lsn()::text`).Scan(&before))
		require.NoError(t, tx.Commit(ctx))
		var applied []int64
		eventually(t, time.Minute, "the change in the outbox", func() bool {
			applied = rowsOf(id)
			return len(applied) == 3
		})
		// Only the consumer's commit wrote WAL since the source transaction's durable commit.
		// While it is not flushed, the slot stays confirmed before the source transaction,
		// whatever the status updates (every 50ms) say.
		watchEnd := time.Now().Add(500 * time.Millisecond)
		unflushed := true
		for unflushed && time.Now().Before(watchEnd) {
			var confirmedBefore bool
			require.NoError(t, pool.QueryRow(ctx, `
				SELECT pg_current_wal_flush_lsn() < pg_current_wal_insert_lsn(),
				       (SELECT confirmed_flush_lsn <= $2::pg_lsn FROM pg_replication_slots WHERE slot_name = $1)`,
				slot, before).Scan(&unflushed, &confirmedBefore))
			if unflushed {
				require.True(t, confirmedBefore, "the slot was confirmed past a source transaction whose outbox rows are not flushed")
			}
			time.Sleep(10 * time.Millisecond)
		}
		if !unflushed {
			t.Logf("attempt %d: the WAL writer flushed the consumer's commit before the crash; again", attempt)
			continue
		}
		require.NoError(t, cluster.Restart(ctx))
		var after []int64
		eventually(t, time.Minute, "the change back in the outbox after the crash", func() bool {
			after = rowsOf(id)
			return len(after) == 3
		})
		lost = after[0] != applied[0]
		t.Logf("attempt %d: outbox rows %v before the crash, %v after", attempt, applied, after)
	}
	require.True(t, lost, "the crash never caught the consumer's commit unflushed")

	// One more change after the crash: every change is in the outbox exactly once.
	b.exec(t, `INSERT INTO item (id, owner, team, status) VALUES (100, 'o', 1, 'open')`)
	eventually(t, time.Minute, "the change after the crash", func() bool { return len(rowsOf(100)) == 3 })
	require.Zero(t, b.count(t, `SELECT count(*) FROM (
		SELECT recipient, key FROM tocsin.outbox GROUP BY 1, 2 HAVING count(*) > 1) d`), "no duplicates")
	require.Equal(t, 3*b.count(t, `SELECT count(*) FROM item`), b.count(t, `SELECT count(*) FROM tocsin.outbox`), "no loss")
}
