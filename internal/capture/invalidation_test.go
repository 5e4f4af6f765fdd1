package capture_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/tocsin/tocsin/internal/capture"
	"github.com/tocsin/tocsin/internal/feed"
	"github.com/tocsin/tocsin/internal/hub"
	"github.com/tocsin/tocsin/internal/pgcluster"
	"github.com/tocsin/tocsin/internal/pgtest"
	"github.com/tocsin/tocsin/internal/sequencer"
)

// syncBuffer is a log sink safe for concurrent writers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestSlotInvalidationResetsEpoch stops the consumer, pushes WAL past
// max_slot_wal_keep_size so the slot is invalidated, and requires the recovery: Ready
// fails meanwhile, the slot is recreated with a loud log, old cursors get cursor-expired,
// and capture works again.
func TestSlotInvalidationResetsEpoch(t *testing.T) {
	t.Parallel()
	_, url := pgtest.NewCluster(t, pgcluster.Config{Settings: map[string]string{"max_slot_wal_keep_size": "1MB"}})
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, url)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	b := &bundle{ctx: ctx, db: &pgtest.DB{Pool: pool, URL: url}, pool: pool}
	_, err = pool.Exec(ctx, schema)
	require.NoError(t, err)
	b.apply(t, strings.ReplaceAll(routesYAML, "CAPTURE", "replication"))

	// First life: one change goes through; remember its cursor.
	life, stop := context.WithCancel(ctx)
	seq := sequencer.New(pool, sequencer.Config{}, slog.New(slog.DiscardHandler))
	c := capture.New(pool, capture.Config{DatabaseURL: url, RetryInterval: 50 * time.Millisecond, WakeFunc: seq.Wake},
		slog.New(slog.DiscardHandler))
	done := make(chan struct{}, 2)
	go func() { _ = c.Run(life); done <- struct{}{} }()
	go func() { _ = seq.Run(life); done <- struct{}{} }()
	b.exec(t, `INSERT INTO item (id, owner) VALUES (1, 'alice')`)
	eventually(t, time.Minute, "the first change in the feed", func() bool {
		return b.count(t, `SELECT count(*) FROM tocsin.feed WHERE recipient = 'alice'`) > 0
	})
	stop()
	<-done
	<-done
	st, err := feed.NewStore(pool).FeedState(ctx)
	require.NoError(t, err)
	oldCursor := st.Cursor(st.Head).String()

	// Capture is down: changes go unread while WAL moves past the limit.
	eventually(t, time.Minute, "the slot to be invalidated", func() bool {
		b.exec(t, `INSERT INTO item (id, owner) SELECT g, 'bob' FROM generate_series(1000 + (random() * 1e6)::int, 1000 + (random() * 1e6)::int + 500) g ON CONFLICT DO NOTHING`)
		b.exec(t, `SELECT pg_switch_wal()`)
		b.exec(t, `CHECKPOINT`)
		return b.count(t, `SELECT count(*) FROM pg_replication_slots WHERE wal_status = 'lost'`) == 1
	})
	require.ErrorIs(t, c.Ready(ctx), capture.ErrSlotUnhealthy)

	// Second life: recovery.
	var logs syncBuffer
	b.start(t, capture.Config{RetryInterval: 50 * time.Millisecond}, slog.New(slog.NewTextHandler(&logs, nil)))
	eventually(t, time.Minute, "a new feed epoch", func() bool {
		now, err := feed.NewStore(pool).FeedState(ctx)
		require.NoError(t, err)
		return now.Epoch != st.Epoch
	})
	require.Contains(t, logs.String(), "REPLICATION SLOT LOST")
	require.Contains(t, logs.String(), "level=ERROR")

	h := hub.New(feed.NewStore(pool), hub.Config{}, slog.New(slog.DiscardHandler))
	_, _, err = h.Poll(ctx, "alice", oldCursor, 10, 0)
	require.True(t, errors.Is(err, feed.ErrCursorExpired), "old cursor: %v", err)

	b.exec(t, `INSERT INTO item (id, owner) VALUES (2, 'carol')`)
	eventually(t, time.Minute, "capture after recovery", func() bool {
		return b.count(t, `SELECT count(*) FROM tocsin.feed WHERE recipient = 'carol'`) == 1
	})
	require.NoError(t, c.Ready(ctx))
}

func (b *bundle) exec(t testing.TB, sql string, args ...any) {
	t.Helper()
	_, err := b.pool.Exec(b.ctx, sql, args...)
	require.NoError(t, err)
}
