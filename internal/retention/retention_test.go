package retention_test

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tocsin/tocsin/internal/feed"
	"github.com/tocsin/tocsin/internal/hub"
	"github.com/tocsin/tocsin/internal/pgtest"
	"github.com/tocsin/tocsin/internal/retention"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// Pruning never opens a silent gap: a cursor below an entry that retention removed gets
// ErrCursorExpired; a recipient who lost nothing keeps its old cursor; kinds keep their own
// retention.
func TestPruneRecordsHorizonsSoGapsAreExpiredCursors(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.New(t)
	// Feed: 1 alice change (old), 2 bob notification (old), 3 alice notification (old), 4 alice change (new).
	_, err := db.Pool.Exec(ctx, `
		INSERT INTO tocsin.feed (position, recipient, topic, kind, created_at, sequenced_at) VALUES
		  (1, 'alice', 't', 'change',       now(), now() - interval '2 days'),
		  (2, 'bob',   't', 'notification', now(), now() - interval '2 days'),
		  (3, 'alice', 't', 'notification', now(), now() - interval '2 days'),
		  (4, 'alice', 't', 'change',       now(), now());
		UPDATE tocsin.feed_state SET position = 4`)
	require.NoError(t, err)
	h := hub.New(feed.NewStore(db.Pool), hub.Config{}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	st, err := feed.NewStore(db.Pool).FeedState(ctx)
	require.NoError(t, err)
	cursor := func(pos int64) string { return st.Cursor(pos).String() }

	n, err := retention.Prune(ctx, db.Pool, retention.Config{ChangeTTL: 24 * time.Hour, InboxTTL: 90 * 24 * time.Hour, BatchLimit: 100}, time.Now())
	require.NoError(t, err)
	require.Equal(t, 1, n, "only the old change entry is past its retention")

	_, _, err = h.Poll(ctx, "alice", cursor(0), 10, 0)
	require.ErrorIs(t, err, feed.ErrCursorExpired, "alice missed entry 1")
	events, _, err := h.Poll(ctx, "alice", cursor(1), 10, 0)
	require.NoError(t, err)
	require.Len(t, events, 2)
	_, _, err = h.Poll(ctx, "bob", cursor(0), 10, 0)
	require.NoError(t, err, "bob lost nothing: his old cursor stays valid")
	events, _, err = h.Poll(ctx, "alice", "", 10, 0)
	require.NoError(t, err)
	require.Len(t, events, 2, "omitted after starts at the oldest retained entry")

	// Later the notifications expire too; the horizon only grows.
	_, err = retention.Prune(ctx, db.Pool, retention.Config{ChangeTTL: 24 * time.Hour, InboxTTL: time.Hour, BatchLimit: 100}, time.Now())
	require.NoError(t, err)
	_, _, err = h.Poll(ctx, "alice", cursor(1), 10, 0)
	require.ErrorIs(t, err, feed.ErrCursorExpired)
	_, _, err = h.Poll(ctx, "bob", cursor(0), 10, 0)
	require.ErrorIs(t, err, feed.ErrCursorExpired)
	events, _, err = h.Poll(ctx, "alice", cursor(3), 10, 0)
	require.NoError(t, err)
	require.Len(t, events, 1)
}

// Pruned inbox entries leave the inbox and its counts; expired idempotency keys go.
func TestPruneRemovesInboxStateAndIdempotencyKeys(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.New(t)
	_, err := db.Pool.Exec(ctx, `
		INSERT INTO tocsin.feed (position, recipient, topic, kind, created_at, sequenced_at) VALUES
		  (1, 'alice', 't', 'notification', now(), now() - interval '2 days'),
		  (2, 'alice', 't', 'notification', now(), now());
		INSERT INTO tocsin.inbox (position, recipient, kind) VALUES (1, 'alice', 'notification'), (2, 'alice', 'notification');
		UPDATE tocsin.feed_state SET position = 2;
		INSERT INTO tocsin.idempotency_key (sender, key, request_hash, response, created_at) VALUES
		  ('s', 'old', '\x00', '{}', now() - interval '2 days'), ('s', 'new', '\x00', '{}', now())`)
	require.NoError(t, err)
	n, err := retention.Prune(ctx, db.Pool, retention.Config{ChangeTTL: time.Hour, InboxTTL: 24 * time.Hour, BatchLimit: 100}, time.Now())
	require.NoError(t, err)
	require.Equal(t, 1, n)
	require.NoError(t, retention.PruneIdempotencyKeys(ctx, db.Pool, 24*time.Hour, time.Now()))
	var inbox, unread, keys int
	require.NoError(t, db.Pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM tocsin.inbox), (SELECT unread FROM tocsin.inbox_count),
		(SELECT count(*) FROM tocsin.idempotency_key)`).Scan(&inbox, &unread, &keys))
	require.Equal(t, 1, inbox)
	require.Equal(t, 1, unread)
	require.Equal(t, 1, keys)
}
