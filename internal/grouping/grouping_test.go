package grouping_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/stretchr/testify/require"
	"golang.org/x/sync/errgroup"

	"github.com/tocsin/tocsin/internal/grouping"
	"github.com/tocsin/tocsin/internal/outbox"
	"github.com/tocsin/tocsin/internal/pgtest"
	"github.com/tocsin/tocsin/internal/sequencer"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

type bundle struct {
	db     *pgtest.DB
	client *river.Client[pgx.Tx]
	worker *grouping.FlushWorker
	mover  *grouping.Mover
}

type options struct {
	window   time.Duration // the route's window
	max      int
	noMover  bool
	tick     time.Duration // default 20 ms
	hooksFor func(w *grouping.FlushWorker)
}

// setup starts, on a fresh database, a sequencer, a River client working the flush queue
// and (unless noMover) a Mover; route "r" groups with the given window and max.
func setup(t testing.TB, o options) *bundle {
	t.Helper()
	ctx := context.Background()
	db := pgtest.New(t)
	spec, err := json.Marshal(map[string]any{"name": "r", "group": map[string]any{
		"window": o.window.String(), "window_seconds": o.window.Seconds(), "by": []string{"portfolio_id"}, "max": o.max}})
	require.NoError(t, err)
	_, err = db.Pool.Exec(ctx, `INSERT INTO tocsin.route (name, table_name, spec) VALUES ('r', 'public.comment', $1)`, spec)
	require.NoError(t, err)

	if o.tick == 0 {
		o.tick = 20 * time.Millisecond
	}
	workers := river.NewWorkers()
	w := grouping.NewFlushWorker(db.Pool, quiet, nil)
	if o.hooksFor != nil {
		o.hooksFor(w)
	}
	river.AddWorker(workers, w)
	river.AddWorker(workers, grouping.NewSweepWorker(db.Pool, grouping.Config{SweepGrace: time.Second}))
	client, err := river.NewClient(riverpgxv5.New(db.Pool), &river.Config{
		Schema:   "tocsin",
		Queues:   map[string]river.QueueConfig{grouping.Queue: grouping.QueueConfig(grouping.Config{Tick: o.tick, MaxWorkers: 10})},
		Workers:  workers,
		TestOnly: true,
		Logger:   quiet,
	})
	require.NoError(t, err)
	rctx, stop := context.WithCancel(ctx)
	require.NoError(t, client.Start(rctx))

	mover := grouping.NewMover(db.Pool, client, grouping.Config{Tick: o.tick}, quiet)
	enqueuer := grouping.NewEnqueuer(client)
	if !o.noMover {
		enqueuer.DueFunc = mover.Expect
	}
	seq := sequencer.New(db.Pool, sequencer.Config{Enqueuer: enqueuer,
		MessageGroupWindow: o.window, MessageGroupMax: o.max, RetryInterval: 50 * time.Millisecond}, quiet)
	var wg sync.WaitGroup
	wg.Go(func() { _ = seq.Run(rctx) })
	if !o.noMover {
		wg.Go(func() { _ = mover.Run(rctx) })
	}
	t.Cleanup(func() {
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = client.Stop(sctx)
		stop()
		wg.Wait()
	})
	return &bundle{db: db, client: client, worker: w, mover: mover}
}

// change writes one grouped outbox row for recipient, as route r's trigger would.
func (b *bundle) change(t testing.TB, recipient string, id int, group string) {
	t.Helper()
	require.NoError(t, b.changeErr(recipient, id, group))
}

// changeErr writes one grouped change of route r, as a route's trigger would.
func (b *bundle) changeErr(recipient string, id int, group string) error {
	ctx := context.Background()
	return pgx.BeginFunc(ctx, b.db.Pool, func(tx pgx.Tx) error {
		return outbox.InsertTx(ctx, tx, []outbox.Row{{Recipient: recipient, Route: "r", Topic: "comment",
			Kind: "notification", Op: "insert", Table: "public.comment",
			Key:  json.RawMessage(fmt.Sprintf(`{"id": %d}`, id)),
			Data: json.RawMessage(fmt.Sprintf(`{"id": %d, "body": "b%d"}`, id, id)), GroupKey: group}})
	})
}

type digestEntry struct {
	Position int64
	Group    *string
	Replaces *int64
	Digest   grouping.Digest
	Sequence time.Time
}

// digests returns recipient's digest entries in feed order.
func (b *bundle) digests(t *testing.T, recipient string) []digestEntry {
	t.Helper()
	rows, err := b.db.Pool.Query(context.Background(), `SELECT position, group_key, replaces, data, sequenced_at
		FROM tocsin.feed WHERE recipient = $1 AND kind = 'digest' ORDER BY position`, recipient)
	require.NoError(t, err)
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (d digestEntry, err error) {
		var data []byte
		if err = r.Scan(&d.Position, &d.Group, &d.Replaces, &data, &d.Sequence); err != nil {
			return d, err
		}
		return d, json.Unmarshal(data, &d.Digest)
	})
	require.NoError(t, err)
	return out
}

// waitDigests polls until recipient has n digests.
func (b *bundle) waitDigests(t *testing.T, recipient string, n int, within time.Duration) []digestEntry {
	t.Helper()
	var got []digestEntry
	require.Eventually(t, func() bool {
		got = b.digests(t, recipient)
		return len(got) >= n
	}, within, 10*time.Millisecond, "waiting for %d digests of %s", n, recipient)
	return got
}

func (b *bundle) count(t testing.TB, sql string, args ...any) int {
	t.Helper()
	var n int
	require.NoError(t, b.db.Pool.QueryRow(context.Background(), sql, args...).Scan(&n))
	return n
}

// settle waits until nothing waits in the outbox, a window or a pending row. One statement
// reads all three, so it sees one moment: a change is always in one of them (or in an
// uncommitted transaction that still shows it where it was) until its digest is in the feed.
func (b *bundle) settle(t *testing.T) {
	t.Helper()
	require.Eventually(t, func() bool {
		return b.count(t, `SELECT (SELECT count(*) FROM tocsin.group_pending) + (SELECT count(*) FROM tocsin.outbox)
			+ (SELECT count(*) FROM tocsin.group_window)`) == 0
	}, 30*time.Second, 10*time.Millisecond)
}

func TestWindowFoldsChangesIntoOneDigest(t *testing.T) {
	t.Parallel()
	b := setup(t, options{window: time.Second, max: 50})
	for i := 1; i <= 12; i++ {
		b.change(t, "alice", i, "[12]")
	}
	b.change(t, "bob", 99, "[12]")
	d := b.waitDigests(t, "alice", 1, 15*time.Second)[0]
	require.Equal(t, 12, d.Digest.Count)
	require.Equal(t, "[12]", *d.Group)
	require.Nil(t, d.Replaces)
	require.Len(t, d.Digest.Keys, grouping.MaxKeys)
	require.JSONEq(t, `{"id": 12}`, string(d.Digest.Keys[0]), "newest key first")
	require.JSONEq(t, `{"id": 12, "body": "b12"}`, string(d.Digest.Data), "the latest payload")
	require.False(t, d.Digest.LastAt.Before(d.Digest.FirstAt))
	require.Equal(t, 1, b.waitDigests(t, "bob", 1, 15*time.Second)[0].Digest.Count)
	require.Zero(t, b.count(t, `SELECT count(*) FROM tocsin.feed WHERE kind <> 'digest'`), "grouped rows never reach the feed")
	require.Zero(t, b.count(t, `SELECT count(*) FROM tocsin.group_pending`))
	require.Zero(t, b.count(t, `SELECT count(*) FROM tocsin.group_window`))
	require.Equal(t, 1, b.count(t, `SELECT unread FROM tocsin.inbox_count WHERE recipient = 'alice'`))
}

func TestFullWindowFlushesBeforeItCloses(t *testing.T) {
	t.Parallel()
	b := setup(t, options{window: time.Hour, max: 5})
	for i := 1; i <= 4; i++ {
		b.change(t, "alice", i, "[1]")
	}
	require.Eventually(t, func() bool {
		return b.count(t, `SELECT count(*) FROM tocsin.group_pending`) == 4
	}, 10*time.Second, 5*time.Millisecond)
	require.Empty(t, b.digests(t, "alice"))
	b.change(t, "alice", 5, "[1]")
	d := b.waitDigests(t, "alice", 1, 15*time.Second)[0]
	require.Equal(t, 5, d.Digest.Count)
}

// The heart of grouping: a change that arrives while a flush runs is either in that flush's
// digest or in the next one, never in both and never in none. The flush is held at its two
// critical points while a change goes through the sequencer.
func TestNoChangeLostOrCountedTwiceDuringFlush(t *testing.T) {
	t.Parallel()
	for _, at := range []string{"before the flush locks its window", "after the flush completed its job"} {
		t.Run(at, func(t *testing.T) {
			t.Parallel()
			var (
				once    sync.Once
				arrived = make(chan struct{})
				b       *bundle
			)
			hold := func(grouping.FlushArgs) {
				once.Do(func() {
					b.change(t, "alice", 100, "[7]")
					if at == "before the flush locks its window" {
						// Wait until the sequencer has moved the change in: it joined the
						// running job (a duplicate) instead of opening a window.
						require.Eventually(t, func() bool {
							return b.count(t, `SELECT count(*) FROM tocsin.outbox`) == 0
						}, 10*time.Second, 2*time.Millisecond)
					} else {
						// Wait until the sequencer's batch waits for this flush's lock.
						require.Eventually(t, func() bool {
							return b.count(t, `SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()
								AND wait_event_type = 'Lock' AND query LIKE '%sequence_batch%'`) == 1
						}, 10*time.Second, 2*time.Millisecond)
					}
					close(arrived)
				})
			}
			b = setup(t, options{window: time.Second, max: 50, hooksFor: func(w *grouping.FlushWorker) {
				if at == "before the flush locks its window" {
					grouping.SetHooks(w, hold, nil)
				} else {
					grouping.SetHooks(w, nil, hold)
				}
			}})
			for i := 1; i <= 3; i++ {
				b.change(t, "alice", i, "[7]")
			}
			<-arrived
			b.settle(t)
			got := b.digests(t, "alice")
			total := 0
			for i, d := range got {
				if i > 0 {
					require.NotNil(t, d.Replaces, "a later unread digest supersedes the earlier one")
					require.Equal(t, got[i-1].Position, *d.Replaces)
					total = d.Digest.Count // cumulative
				} else {
					total = d.Digest.Count
				}
			}
			require.Equal(t, 4, total, "every change counted exactly once")
			if at == "before the flush locks its window" {
				require.Len(t, got, 1, "the change joined the running flush")
			} else {
				require.Len(t, got, 2, "the change opened the next window")
				require.Equal(t, 3, got[0].Digest.Count)
			}
			require.Equal(t, 1, b.count(t, `SELECT unread FROM tocsin.inbox_count WHERE recipient = 'alice'`))
			require.Equal(t, 1, b.count(t, `SELECT count(*) FROM tocsin.inbox WHERE recipient = 'alice'`))
		})
	}
}

// Many writers and short windows: whatever the interleaving of changes and flushes, the
// digests of each group add up to exactly the changes made.
func TestDigestsAddUpUnderConcurrentChanges(t *testing.T) {
	t.Parallel()
	b := setup(t, options{window: time.Second, max: 7})
	var g errgroup.Group
	const writers, each = 6, 40
	for w := range writers {
		g.Go(func() error {
			for i := range each {
				if err := b.changeErr("alice", w*1000+i, []string{"[1]", "[2]", "[3]"}[i%3]); err != nil {
					return err
				}
			}
			return nil
		})
	}
	require.NoError(t, g.Wait())
	b.settle(t)
	// Nobody read anything: each group's last digest carries its whole count.
	var total int
	require.NoError(t, b.db.Pool.QueryRow(context.Background(), `SELECT coalesce(sum((f.data->>'count')::int), 0)
		FROM tocsin.inbox i JOIN tocsin.feed f USING (position) WHERE i.recipient = 'alice'`).Scan(&total))
	require.Equal(t, writers*each, total)
	require.Equal(t, 3, b.count(t, `SELECT unread FROM tocsin.inbox_count WHERE recipient = 'alice'`))
}

// A digest whose predecessor was read does not replace it; one whose predecessor is unread
// does, and the unread count stays put.
func TestDigestSupersedesOnlyUnreadDigest(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t, options{window: time.Second, max: 2})
	b.change(t, "alice", 1, "[5]")
	b.change(t, "alice", 2, "[5]")
	first := b.waitDigests(t, "alice", 1, 15*time.Second)[0]
	b.change(t, "alice", 3, "[5]")
	b.change(t, "alice", 4, "[5]")
	second := b.waitDigests(t, "alice", 2, 15*time.Second)[1]
	require.Equal(t, first.Position, *second.Replaces)
	require.Equal(t, 4, second.Digest.Count)
	require.Equal(t, first.Digest.FirstAt, second.Digest.FirstAt)
	require.Equal(t, 1, b.count(t, `SELECT unread FROM tocsin.inbox_count WHERE recipient = 'alice'`))
	require.Zero(t, b.count(t, `SELECT count(*) FROM tocsin.inbox WHERE position = $1`, first.Position))

	_, err := b.db.Pool.Exec(ctx, `UPDATE tocsin.inbox SET read_at = now(), seen_at = now() WHERE position = $1`, second.Position)
	require.NoError(t, err)
	b.change(t, "alice", 5, "[5]")
	b.change(t, "alice", 6, "[5]")
	third := b.waitDigests(t, "alice", 3, 15*time.Second)[2]
	require.Nil(t, third.Replaces)
	require.Equal(t, 2, third.Digest.Count)
	require.Equal(t, 1, b.count(t, `SELECT unread FROM tocsin.inbox_count WHERE recipient = 'alice'`))
}

// A window whose job is gone (discarded, deleted) is flushed by the sweep.
func TestSweepFlushesWindowWithoutJob(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	// The sweep's flush job waits until the second sweep is done: had it committed in
	// between, that sweep would have read the window before the commit and found no live job.
	release := make(chan struct{})
	var once sync.Once
	open := func() { once.Do(func() { close(release) }) }
	b := setup(t, options{window: time.Hour, max: 50, hooksFor: func(w *grouping.FlushWorker) {
		grouping.SetHooks(w, func(grouping.FlushArgs) { <-release }, nil)
	}})
	t.Cleanup(open) // before setup's cleanup stops the River client
	b.change(t, "alice", 1, "[9]")
	require.Eventually(t, func() bool {
		return b.count(t, `SELECT count(*) FROM tocsin.group_window`) == 1
	}, 10*time.Second, 5*time.Millisecond)
	_, err := b.db.Pool.Exec(ctx, `DELETE FROM tocsin.river_job WHERE kind = 'tocsin.group_flush'`)
	require.NoError(t, err)
	_, err = b.db.Pool.Exec(ctx, `UPDATE tocsin.group_window SET closes_at = now() - interval '1 minute'`)
	require.NoError(t, err)
	n, err := grouping.Sweep(ctx, b.db.Pool, b.client, time.Second)
	require.NoError(t, err)
	require.Equal(t, 1, n)
	n, err = grouping.Sweep(ctx, b.db.Pool, b.client, time.Second)
	require.NoError(t, err)
	require.Zero(t, n, "a window with a live job is left alone")
	open()
	require.Equal(t, 1, b.waitDigests(t, "alice", 1, 15*time.Second)[0].Digest.Count)
}
