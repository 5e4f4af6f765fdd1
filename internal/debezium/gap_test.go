package debezium_test

import (
	"context"
	"io"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/tocsin/tocsin/internal/debezium"
	"github.com/tocsin/tocsin/internal/feed"
	"github.com/tocsin/tocsin/internal/sequencer"
)

// TestGapAfterDeletedRecordsResetsEpoch stops the consumer, lets Kafka delete records it
// never read (DeleteRecords, as retention does: the log start offset moves past the stored
// offset) and restarts it: the feed epoch changes, so an old cursor gets 410, the partition
// resumes at the log start, and every retained event is delivered once.
func TestGapAfterDeletedRecordsResetsEpoch(t *testing.T) {
	t.Parallel()
	b := setup(t, 1, routesYAML)
	ctx, stop := context.WithCancel(b.ctx)
	cfg := b.config()
	seq := sequencer.New(b.pool, sequencer.Config{PollInterval: 5 * time.Millisecond}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	cfg.WakeFunc = seq.Wake
	first := debezium.New(b.pool, cfg, slog.New(slog.NewTextHandler(b.logs, &slog.HandlerOptions{Level: slog.LevelWarn})))
	done := make(chan struct{}, 2)
	go func() { _ = seq.Run(ctx); done <- struct{}{} }()
	go func() { _ = first.Run(ctx); done <- struct{}{} }()
	b.produce(t, inserts(0, 5)...) // offsets 0–4
	eventually(t, 30*time.Second, "the first five events in the feed", func() bool {
		return b.count(t, `SELECT coalesce(sum(next_offset), 0) FROM tocsin.debezium_offset`) == 5 &&
			b.count(t, `SELECT count(*) FROM tocsin.outbox`) == 0 && b.count(t, `SELECT count(*) FROM tocsin.feed`) == 10
	})
	stop()
	<-done
	<-done
	store := feed.NewStore(b.pool)
	before, err := store.FeedState(b.ctx)
	require.NoError(t, err)
	cursor := feed.After{Epoch: before.Epoch, Position: before.Head} // a client that read everything
	_, err = cursor.Check(before, 0)
	require.NoError(t, err)

	b.produce(t, inserts(5, 10)...) // offsets 5–14, ids 6–15
	adm := kadm.NewClient(b.prod)
	var to kadm.Offsets
	to.Add(kadm.Offset{Topic: topic, Partition: 0, At: 9}) // offsets 5–8 (ids 6–9) gone unread
	deleted, err := adm.DeleteRecords(b.ctx, to)
	require.NoError(t, err)
	require.NoError(t, deleted.Error())
	starts, err := adm.ListStartOffsets(b.ctx, topic)
	require.NoError(t, err)
	start, ok := starts.Lookup(topic, 0)
	require.True(t, ok)
	require.Equal(t, int64(9), start.Offset)

	c := b.start(t, b.config())
	eventually(t, 30*time.Second, "the retained events applied", func() bool {
		return b.count(t, `SELECT coalesce(sum(next_offset), 0) FROM tocsin.debezium_offset`) == 15 &&
			b.count(t, `SELECT count(*) FROM tocsin.outbox`) == 0
	})

	after, err := store.FeedState(b.ctx)
	require.NoError(t, err)
	require.NotEqual(t, before.Epoch, after.Epoch, "the feed epoch must change: events were lost")
	_, err = cursor.Check(after, 0)
	require.ErrorIs(t, err, feed.ErrCursorExpired)
	require.Equal(t, int64(1), c.Gaps())
	require.Contains(t, b.logs.String(), "level=ERROR")
	require.Contains(t, b.logs.String(), "topic="+topic+" partition=0 stored_offset=5 start_offset=9 epoch="+after.Epoch)

	// ids 1–5 and 10–15, each once per route (owner and audit); nothing of ids 6–9.
	require.Equal(t, 22, b.count(t, `SELECT count(*) FROM tocsin.feed`))
	require.Zero(t, b.count(t, `SELECT count(*) FROM tocsin.feed WHERE (key->>'id')::int BETWEEN 6 AND 9`))
	require.Zero(t, b.count(t, `SELECT count(*) FROM (SELECT recipient, route, key FROM tocsin.feed GROUP BY 1, 2, 3 HAVING count(*) > 1) d`))
	require.Equal(t, 11, b.count(t, `SELECT count(DISTINCT key) FROM tocsin.feed`))
}

// TestGapWhileRunningResetsEpoch deletes records while the consumer runs but has not
// fetched them yet (its fetch at the next offset is held by the broker until they are
// gone): the feed epoch changes and the retained events are delivered once.
func TestGapWhileRunningResetsEpoch(t *testing.T) {
	t.Parallel()
	b := setup(t, 1, routesYAML)
	release := make(chan struct{})
	var held atomic.Bool
	b.kafka.ControlKey(kmsg.Fetch.Int16(), func(req kmsg.Request) (kmsg.Response, error, bool) {
		b.kafka.KeepControl()
		for _, tp := range req.(*kmsg.FetchRequest).Topics {
			for _, p := range tp.Partitions {
				if p.FetchOffset == 5 && held.CompareAndSwap(false, true) {
					b.kafka.SleepControl(func() { <-release })
				}
			}
		}
		return nil, nil, false
	})
	c := b.start(t, b.config())
	b.produce(t, inserts(0, 5)...) // offsets 0–4
	eventually(t, 30*time.Second, "the first five events in the feed", func() bool {
		return b.count(t, `SELECT count(*) FROM tocsin.feed`) == 10
	})
	store := feed.NewStore(b.pool)
	before, err := store.FeedState(b.ctx)
	require.NoError(t, err)
	cursor := feed.After{Epoch: before.Epoch, Position: before.Head}
	eventually(t, 30*time.Second, "the consumer's fetch at offset 5 held", held.Load)

	b.produce(t, inserts(5, 10)...) // offsets 5–14, ids 6–15
	var to kadm.Offsets
	to.Add(kadm.Offset{Topic: topic, Partition: 0, At: 9}) // offsets 5–8 (ids 6–9) gone unread
	deleted, err := kadm.NewClient(b.prod).DeleteRecords(b.ctx, to)
	require.NoError(t, err)
	require.NoError(t, deleted.Error())
	close(release)

	eventually(t, 30*time.Second, "the retained events applied", func() bool {
		return b.count(t, `SELECT coalesce(sum(next_offset), 0) FROM tocsin.debezium_offset`) == 15 &&
			b.count(t, `SELECT count(*) FROM tocsin.outbox`) == 0
	})
	after, err := store.FeedState(b.ctx)
	require.NoError(t, err)
	require.NotEqual(t, before.Epoch, after.Epoch, "the feed epoch must change: events were lost")
	_, err = cursor.Check(after, 0)
	require.ErrorIs(t, err, feed.ErrCursorExpired)
	require.Equal(t, int64(1), c.Gaps())
	require.Equal(t, 22, b.count(t, `SELECT count(*) FROM tocsin.feed`))
	require.Zero(t, b.count(t, `SELECT count(*) FROM tocsin.feed WHERE (key->>'id')::int BETWEEN 6 AND 9`))
	require.Zero(t, b.count(t, `SELECT count(*) FROM (SELECT recipient, route, key FROM tocsin.feed GROUP BY 1, 2, 3 HAVING count(*) > 1) d`))
}
