package feed_test

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/tocsin/tocsin/internal/feed"
	"github.com/tocsin/tocsin/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// seed writes feed entries at the given positions for recipients alternating alice, bob,
// and moves the head to the last position, as the sequencer would.
func seed(t *testing.T, db *pgtest.DB, positions ...int64) string {
	t.Helper()
	ctx := context.Background()
	for i, p := range positions {
		r := []string{"alice", "bob"}[i%2]
		_, err := db.Pool.Exec(ctx, `INSERT INTO tocsin.feed (position, recipient, topic, kind, op, table_name, key, data, created_at, group_key, replaces)
			VALUES ($1, $2, 'comment', 'change', 'insert', 'public.comment', jsonb_build_object('id', $1::bigint), '{"x":1}',
			        now(), CASE WHEN $1 % 3 = 0 THEN '[1]' END, CASE WHEN $1 = 6 THEN 3 END)`, p, r)
		require.NoError(t, err)
	}
	var epoch string
	require.NoError(t, db.Pool.QueryRow(ctx, `UPDATE tocsin.feed_state SET position = $1 RETURNING epoch`,
		positions[len(positions)-1]).Scan(&epoch))
	return epoch
}

func TestFeedListAfter(t *testing.T) {
	t.Parallel()
	db := pgtest.New(t)
	ctx := context.Background()
	s := feed.NewStore(db.Pool)
	epoch := seed(t, db, 1, 2, 3, 4, 5, 6)

	events, st, horizon, err := s.FeedListAfter(ctx, "alice", 0, 10)
	require.NoError(t, err)
	require.Equal(t, feed.State{Epoch: epoch, Head: 6}, st)
	require.Zero(t, horizon)
	require.Len(t, events, 3)
	for i, e := range events {
		require.Equal(t, int64(2*i+1), e.Position, "alice's own entries, in order")
		require.Equal(t, "alice", e.Recipient)
		require.Equal(t, st.Cursor(e.Position).String(), e.ID)
		require.JSONEq(t, `{"id":`+json.Number(e.ID[len(epoch)+1:]).String()+`}`, string(e.Key))
	}
	require.Equal(t, "[1]", *events[1].Group, "position 3 has a group")
	require.Nil(t, events[0].Group)

	events, _, _, err = s.FeedListAfter(ctx, "bob", 2, 1)
	require.NoError(t, err)
	require.Len(t, events, 1, "limit")
	require.Equal(t, int64(4), events[0].Position)

	bob, _, _, err := s.FeedListAfter(ctx, "bob", 4, 10)
	require.NoError(t, err)
	require.Equal(t, feed.Cursor{Epoch: epoch, Position: 3}.String(), *bob[0].Replaces, "replaces is a cursor too")

	// Nothing after: no events, but the state and horizon still come back.
	_, err = db.Pool.Exec(ctx, `INSERT INTO tocsin.feed_horizon (recipient, pruned_through) VALUES ('alice', 3)`)
	require.NoError(t, err)
	events, st, horizon, err = s.FeedListAfter(ctx, "alice", 6, 10)
	require.NoError(t, err)
	require.Empty(t, events)
	require.Equal(t, int64(6), st.Head)
	require.Equal(t, int64(3), horizon)

	events, st, horizon, err = s.FeedListAfter(ctx, "nobody", 0, 10)
	require.NoError(t, err)
	require.Empty(t, events)
	require.Equal(t, feed.State{Epoch: epoch, Head: 6}, st, "an unknown recipient still learns the head")
	require.Zero(t, horizon)

	st, err = s.FeedState(ctx)
	require.NoError(t, err)
	require.Equal(t, feed.State{Epoch: epoch, Head: 6}, st)
}

func TestFeedListRange(t *testing.T) {
	t.Parallel()
	db := pgtest.New(t)
	ctx := context.Background()
	s := feed.NewStore(db.Pool)
	seed(t, db, 1, 2, 3, 4, 5, 6, 7)

	events, err := s.FeedListRange(ctx, 2, 6, []string{"alice", "bob"}, 100)
	require.NoError(t, err)
	var got []int64
	for _, e := range events {
		got = append(got, e.Position)
	}
	require.Equal(t, []int64{3, 4, 5, 6}, got, "(from, to], in order")

	events, err = s.FeedListRange(ctx, 0, 7, []string{"bob", "carol"}, 100)
	require.NoError(t, err)
	for _, e := range events {
		require.Equal(t, "bob", e.Recipient, "only the given recipients")
	}
	require.Len(t, events, 3)

	events, err = s.FeedListRange(ctx, 0, 7, []string{"alice"}, 2)
	require.NoError(t, err)
	require.Len(t, events, 2, "limit")
	require.Equal(t, int64(3), events[1].Position)

	events, err = s.FeedListRange(ctx, 2, 6, nil, 100)
	require.NoError(t, err)
	require.Equal(t, []int64{3, 4, 5, 6}, positionsOf(events), "nil: every recipient's entries")
	require.NotEmpty(t, events[0].ID)
	events, err = s.FeedListRange(ctx, 0, 7, nil, 3)
	require.NoError(t, err)
	require.Equal(t, []int64{1, 2, 3}, positionsOf(events), "nil: limit")
}

func positionsOf(events []feed.Event) []int64 {
	var out []int64
	for _, e := range events {
		out = append(out, e.Position)
	}
	return out
}

// Check applied to real reads: the rules the hub uses for every transport.
func TestCheckAgainstStoreReads(t *testing.T) {
	t.Parallel()
	db := pgtest.New(t)
	ctx := context.Background()
	s := feed.NewStore(db.Pool)
	epoch := seed(t, db, 1, 2, 3, 4)

	a, err := feed.ResolveAfter(ctx, s, "now")
	require.NoError(t, err)
	require.Equal(t, feed.After{Epoch: epoch, Position: 4}, a)

	// The feed is reset (a restore, a lost slot): the epoch changes, old cursors expire.
	_, err = db.Pool.Exec(ctx, `UPDATE tocsin.feed_state SET epoch = 'reset0001'`)
	require.NoError(t, err)
	_, st, horizon, err := s.FeedListAfter(ctx, "alice", a.Position, 10)
	require.NoError(t, err)
	_, err = a.Check(st, horizon)
	require.ErrorIs(t, err, feed.ErrCursorExpired)
}
