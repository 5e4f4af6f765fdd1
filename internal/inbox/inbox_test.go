package inbox_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"
	"golang.org/x/sync/errgroup"

	"github.com/tocsin/tocsin/internal/feed"
	"github.com/tocsin/tocsin/internal/inbox"
	"github.com/tocsin/tocsin/internal/pgtest"
	"github.com/tocsin/tocsin/internal/sequencer"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

type bundle struct {
	db    *pgtest.DB
	store *inbox.Store
	seq   *sequencer.Sequencer
}

func setup(t *testing.T) *bundle {
	t.Helper()
	db := pgtest.New(t)
	seq := sequencer.New(db.Pool, sequencer.Config{RetryInterval: 50 * time.Millisecond}, quiet)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = seq.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return &bundle{db: db, store: inbox.NewStore(db.Pool, seq.Wake), seq: seq}
}

func (b *bundle) publish(t *testing.T, recipient string, n int) {
	t.Helper()
	_, err := b.db.Pool.Exec(context.Background(), `SELECT tocsin.publish($1, 'note', jsonb_build_object('n', $2::int))`, recipient, n)
	require.NoError(t, err)
}

// settle waits until the sequencer has moved everything.
func (b *bundle) settle(t *testing.T) {
	t.Helper()
	require.Eventually(t, func() bool {
		var n int
		return b.db.Pool.QueryRow(context.Background(), `SELECT count(*) FROM tocsin.outbox`).Scan(&n) == nil && n == 0
	}, 20*time.Second, 2*time.Millisecond)
}

func ids(entries []inbox.Entry) []string {
	out := make([]string, len(entries))
	for i, e := range entries {
		out[i] = e.ID
	}
	return out
}

// lastInboxEvent returns the data of recipient's newest `inbox` feed entry.
func (b *bundle) lastInboxEvent(t *testing.T, recipient string) map[string]any {
	t.Helper()
	var data []byte
	require.NoError(t, b.db.Pool.QueryRow(context.Background(), `SELECT data FROM tocsin.feed
		WHERE recipient = $1 AND kind = 'inbox' ORDER BY position DESC LIMIT 1`, recipient).Scan(&data))
	var m map[string]any
	require.NoError(t, json.Unmarshal(data, &m))
	return m
}

func TestListMarkAndCount(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t)
	for i := range 5 {
		b.publish(t, "alice", i)
	}
	b.publish(t, "bob", 9)
	// A change entry never enters the inbox.
	_, err := b.db.Pool.Exec(ctx, `INSERT INTO tocsin.outbox (recipient, topic, kind) VALUES ('alice', 'x', 'change')`)
	require.NoError(t, err)
	b.settle(t)

	c, err := b.store.Counts(ctx, "alice")
	require.NoError(t, err)
	require.Equal(t, inbox.Counts{Unread: 5, Unseen: 5}, c)

	page1, next, err := b.store.List(ctx, "alice", inbox.FilterUnread, "", 2)
	require.NoError(t, err)
	require.Len(t, page1, 2)
	require.JSONEq(t, `{"n": 4}`, string(page1[0].Data), "newest first")
	page2, next2, err := b.store.List(ctx, "alice", inbox.FilterUnread, next, 10)
	require.NoError(t, err)
	require.Len(t, page2, 3)
	require.Empty(t, next2)
	require.Less(t, page2[0].Position, page1[1].Position)

	// Read two by id: counts drop, an inbox event carries the new counts.
	changed, c, err := b.store.Mark(ctx, "alice", inbox.ActionRead, inbox.Selection{IDs: ids(page1)})
	require.NoError(t, err)
	require.Equal(t, 2, changed)
	require.Equal(t, inbox.Counts{Unread: 3, Unseen: 3}, c)
	b.settle(t)
	ev := b.lastInboxEvent(t, "alice")
	require.Equal(t, "read", ev["action"])
	require.Equal(t, map[string]any{"unread": float64(3), "unseen": float64(3)}, ev["counts"])

	// Idempotent: nothing changes, no event.
	var events int
	require.NoError(t, b.db.Pool.QueryRow(ctx, `SELECT count(*) FROM tocsin.feed WHERE kind = 'inbox'`).Scan(&events))
	changed, c, err = b.store.Mark(ctx, "alice", inbox.ActionRead, inbox.Selection{IDs: ids(page1)})
	require.NoError(t, err)
	require.Zero(t, changed)
	require.Equal(t, inbox.Counts{Unread: 3, Unseen: 3}, c)
	// Bob's entries are not alice's to mark.
	bobs, _, err := b.store.List(ctx, "bob", inbox.FilterAll, "", 10)
	require.NoError(t, err)
	changed, _, err = b.store.Mark(ctx, "alice", inbox.ActionArchive, inbox.Selection{IDs: ids(bobs)})
	require.NoError(t, err)
	require.Zero(t, changed)
	b.settle(t)
	var after int
	require.NoError(t, b.db.Pool.QueryRow(ctx, `SELECT count(*) FROM tocsin.feed WHERE kind = 'inbox'`).Scan(&after))
	require.Equal(t, events, after)

	// Seen up to the newest: unseen drops to zero, unread stays.
	_, c, err = b.store.Mark(ctx, "alice", inbox.ActionSeen, inbox.Selection{UpTo: page1[0].ID})
	require.NoError(t, err)
	require.Equal(t, inbox.Counts{Unread: 3, Unseen: 0}, c)
	unseen, _, err := b.store.List(ctx, "alice", inbox.FilterUnseen, "", 10)
	require.NoError(t, err)
	require.Empty(t, unseen)

	// Archive one unread: it leaves "all" and the counts.
	_, c, err = b.store.Mark(ctx, "alice", inbox.ActionArchive, inbox.Selection{IDs: []string{page2[0].ID}})
	require.NoError(t, err)
	require.Equal(t, inbox.Counts{Unread: 2, Unseen: 0}, c)
	all, _, err := b.store.List(ctx, "alice", inbox.FilterAll, "", 10)
	require.NoError(t, err)
	require.Len(t, all, 4)
	archived, _, err := b.store.List(ctx, "alice", inbox.FilterArchived, "", 10)
	require.NoError(t, err)
	require.Equal(t, []string{page2[0].ID}, ids(archived))
	require.NotNil(t, archived[0].ArchivedAt)

	// Ids of another generation are refused.
	_, _, err = b.store.Mark(ctx, "alice", inbox.ActionRead, inbox.Selection{IDs: []string{"zzzz-1"}})
	require.ErrorIs(t, err, feed.ErrCursorExpired)
	_, _, err = b.store.Mark(ctx, "alice", inbox.ActionRead, inbox.Selection{})
	require.ErrorIs(t, err, inbox.ErrInvalid)
}

// The counts never drift from a recount: while entries arrive and clients mark them in
// every way at once, any snapshot shows counters equal to a count of the rows.
func TestCountsExactUnderConcurrency(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t)
	recipients := []string{"alice", "bob"}
	var (
		stop   atomic.Bool
		checks atomic.Int64
	)
	// recount compares the counters with a count of the rows, in tx's snapshot. It returns
	// an error rather than failing the test: it also runs on a worker goroutine.
	recount := func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `
			SELECT r, coalesce(c.unread, 0), coalesce(c.unseen, 0),
			       (SELECT count(*) FROM tocsin.inbox i WHERE i.recipient = r AND read_at IS NULL AND archived_at IS NULL),
			       (SELECT count(*) FROM tocsin.inbox i WHERE i.recipient = r AND seen_at IS NULL AND archived_at IS NULL)
			FROM unnest($1::text[]) r LEFT JOIN tocsin.inbox_count c ON c.recipient = r`, recipients)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var (
				r                    string
				unread, unseen, u, s int
			)
			if err := rows.Scan(&r, &unread, &unseen, &u, &s); err != nil {
				return err
			}
			if u != unread || s != unseen {
				return fmt.Errorf("counts of %s drifted: unread %d (rows %d), unseen %d (rows %d)", r, unread, u, unseen, s)
			}
		}
		if err := rows.Err(); err != nil {
			return err
		}
		checks.Add(1)
		return nil
	}
	// Workers stop at the first error and report it; the test goroutine asserts.
	var g errgroup.Group
	for w := range 4 {
		g.Go(func() error {
			for i := 0; !stop.Load(); i++ {
				if _, err := b.db.Pool.Exec(ctx, `SELECT tocsin.publish($1, 'note', jsonb_build_object('n', $2::int))`,
					recipients[(w+i)%2], i); err != nil {
					return err
				}
			}
			return nil
		})
	}
	for range 4 {
		g.Go(func() error {
			actions := []inbox.Action{inbox.ActionSeen, inbox.ActionRead, inbox.ActionArchive}
			for !stop.Load() {
				r := recipients[rand.IntN(2)]
				entries, _, err := b.store.List(ctx, r, inbox.FilterAll, "", 20)
				if err != nil {
					return err
				}
				if len(entries) == 0 {
					continue
				}
				sel := inbox.Selection{IDs: []string{entries[rand.IntN(len(entries))].ID}}
				if rand.IntN(4) == 0 {
					sel = inbox.Selection{UpTo: entries[rand.IntN(len(entries))].ID}
				}
				if _, _, err = b.store.Mark(ctx, r, actions[rand.IntN(3)], sel); err != nil {
					return err
				}
			}
			return nil
		})
	}
	g.Go(func() error {
		for !stop.Load() {
			if err := pgx.BeginTxFunc(ctx, b.db.Pool, pgx.TxOptions{IsoLevel: pgx.RepeatableRead}, recount); err != nil {
				return err
			}
		}
		return nil
	})
	deadline := time.Now().Add(3 * time.Second)
	giveUp := time.Now().Add(60 * time.Second) // a failed worker stops counting checks
	for (checks.Load() < 50 || time.Now().Before(deadline)) && time.Now().Before(giveUp) {
		time.Sleep(10 * time.Millisecond) // the test's own duration, not a wait for async work
	}
	stop.Store(true)
	require.NoError(t, g.Wait())
	b.settle(t)
	require.NoError(t, pgx.BeginTxFunc(ctx, b.db.Pool, pgx.TxOptions{IsoLevel: pgx.RepeatableRead}, recount))
	// The newest inbox event of each recipient, if nothing came after it, carries the
	// final counts.
	for _, r := range recipients {
		var stamped []byte
		var last bool
		require.NoError(t, b.db.Pool.QueryRow(ctx, `SELECT f.data->'counts',
			NOT EXISTS (SELECT 1 FROM tocsin.feed g WHERE g.recipient = $1 AND g.position > f.position)
			FROM tocsin.feed f WHERE f.recipient = $1 AND f.kind = 'inbox' ORDER BY f.position DESC LIMIT 1`, r).Scan(&stamped, &last))
		if last {
			c, err := b.store.Counts(ctx, r)
			require.NoError(t, err)
			var got inbox.Counts
			require.NoError(t, json.Unmarshal(stamped, &got))
			require.Equal(t, c, got)
		}
	}
	t.Logf("%d consistent snapshots", checks.Load())
}

// An inbox event's counts are those at its own feed position: entries sequenced after it,
// even in the same batch, are not in them.
func TestInboxEventCountsAreAtItsPosition(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t)
	// One transaction: the three rows commit together and are sequenced in one batch.
	require.NoError(t, pgx.BeginFunc(ctx, b.db.Pool, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `SELECT tocsin.publish('alice', 'note', '{"n": 1}');
			INSERT INTO tocsin.outbox (recipient, topic, kind, data) VALUES ('alice', 'inbox', 'inbox', '{"action": "read"}');
			SELECT tocsin.publish('alice', 'note', '{"n": 2}')`)
		return err
	}))
	b.settle(t)
	ev := b.lastInboxEvent(t, "alice")
	require.Equal(t, map[string]any{"unread": float64(1), "unseen": float64(1)}, ev["counts"])
	c, err := b.store.Counts(ctx, "alice")
	require.NoError(t, err)
	require.Equal(t, inbox.Counts{Unread: 2, Unseen: 2}, c)
}
