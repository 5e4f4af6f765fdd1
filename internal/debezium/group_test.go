package debezium_test

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/tocsin/tocsin/internal/debezium"
)

// inserts returns n insert events for ids from+1 … from+n, positions increasing.
func inserts(from, n int64) []*kgo.Record {
	var out []*kgo.Record
	for id := from + 1; id <= from+n; id++ {
		out = append(out, change{op: "c", after: item(id, fmt.Sprintf("o%d", id%5), 2, "open", id, "x"),
			id: id, commit: 10 * id, lsn: 10*id + 5}.record(id%2 == 0))
	}
	return out
}

// TestGroupMembersShareAndHandOver runs two consumers in one group on a four-partition
// topic (two nodes), stops one mid-stream and checks the feed: each event exactly once,
// with no leader elected. It also checks the lag each member exports.
func TestGroupMembersShareAndHandOver(t *testing.T) {
	t.Parallel()
	b := setup(t, 4, routesYAML)
	first := b.start(t, b.config())
	ctx, stop := context.WithCancel(b.ctx)
	second := debezium.New(b.pool, b.config(), slog.New(slog.NewTextHandler(b.logs, &slog.HandlerOptions{Level: slog.LevelWarn})))
	done := make(chan struct{})
	go func() { _ = second.Run(ctx); close(done) }()

	eventually(t, 30*time.Second, "both members assigned", func() bool {
		return first.Partitions() > 0 && second.Partitions() > 0 && first.Partitions()+second.Partitions() == 4
	})
	b.produce(t, inserts(0, 400)...)
	eventually(t, 30*time.Second, "both members applying", func() bool {
		return len(first.Lag()) > 0 && len(second.Lag()) > 0
	})
	stop() // one node goes away mid-stream: its partitions move to the other
	<-done
	b.produce(t, inserts(400, 400)...)
	eventually(t, 60*time.Second, "every event", func() bool {
		return b.count(t, `SELECT count(*) FROM tocsin.feed`) >= 1600 && b.count(t, `SELECT count(*) FROM tocsin.outbox`) == 0
	})
	require.Equal(t, 1600, b.count(t, `SELECT count(*) FROM tocsin.feed`))
	require.Zero(t, b.count(t, `SELECT count(*) FROM (SELECT recipient, key FROM tocsin.feed GROUP BY 1, 2 HAVING count(*) > 1) d`))
	eventually(t, 30*time.Second, "the remaining member owning all four partitions, caught up", func() bool {
		lag := first.Lag()
		if len(lag) != 4 {
			return false
		}
		for _, l := range lag {
			if l.Lag != 0 {
				return false
			}
		}
		return true
	})
	require.Equal(t, 800, b.count(t, `SELECT sum(next_offset) FROM tocsin.debezium_offset`))
}

// TestStartLatest skips what a topic held before Tocsin first read it, and loses nothing
// after: the start offset is stored before anything is read.
func TestStartLatest(t *testing.T) {
	t.Parallel()
	b := setup(t, 2, routesYAML)
	b.produce(t, inserts(0, 10)...)
	cfg := b.config()
	cfg.StartAt = debezium.StartLatest
	b.start(t, cfg)
	eventually(t, 30*time.Second, "start offsets stored", func() bool {
		return b.count(t, `SELECT count(*) FROM tocsin.debezium_offset`) == 2
	})
	b.produce(t, inserts(10, 5)...)
	eventually(t, 30*time.Second, "the new events", func() bool { return b.count(t, `SELECT count(*) FROM tocsin.feed`) >= 10 })
	eventually(t, 30*time.Second, "an empty outbox", func() bool { return b.count(t, `SELECT count(*) FROM tocsin.outbox`) == 0 })
	require.Equal(t, 10, b.count(t, `SELECT count(*) FROM tocsin.feed`))
	require.Zero(t, b.count(t, `SELECT count(*) FROM tocsin.feed WHERE (key->>'id')::int <= 10`))
}

// TestCaptureSwitchedOff consumes and stores offsets while capture is off, writing
// nothing, and delivers again once it is back on.
func TestCaptureSwitchedOff(t *testing.T) {
	t.Parallel()
	b := setup(t, 1, routesYAML)
	_, err := b.pool.Exec(b.ctx, `UPDATE tocsin.setting SET value = 'false' WHERE key = 'capture'`)
	require.NoError(t, err)
	b.start(t, b.config())
	b.produce(t, inserts(0, 5)...)
	eventually(t, 30*time.Second, "the records consumed", func() bool {
		return b.count(t, `SELECT coalesce(sum(next_offset), 0) FROM tocsin.debezium_offset`) == 5
	})
	require.Zero(t, b.count(t, `SELECT count(*) FROM tocsin.outbox`)+b.count(t, `SELECT count(*) FROM tocsin.feed`))
	_, err = b.pool.Exec(b.ctx, `UPDATE tocsin.setting SET value = 'true' WHERE key = 'capture'`)
	require.NoError(t, err)
	b.produce(t, inserts(5, 1)...)
	eventually(t, 30*time.Second, "the new insert", func() bool { return b.count(t, `SELECT count(*) FROM tocsin.feed`) == 2 })
}

// TestLagOfQuietPartitions exports the lag of every held partition, also of those with
// nothing new since the assignment (nothing is fetched from them): a consumer that starts on
// caught-up partitions reports them at zero.
func TestLagOfQuietPartitions(t *testing.T) {
	t.Parallel()
	b := setup(t, 3, routesYAML)
	b.produce(t, inserts(0, 30)...)
	ctx, stop := context.WithCancel(b.ctx)
	first := debezium.New(b.pool, b.config(), slog.New(slog.NewTextHandler(b.logs, nil)))
	done := make(chan struct{})
	go func() { _ = first.Run(ctx); close(done) }()
	eventually(t, 30*time.Second, "every event applied", func() bool {
		return b.count(t, `SELECT coalesce(sum(next_offset), 0) FROM tocsin.debezium_offset`) == 30
	})
	stop()
	<-done

	c := b.start(t, b.config())
	eventually(t, 30*time.Second, "the lag of all three quiet partitions, zero", func() bool {
		lag := c.Lag()
		return len(lag) == 3 && lag[0].Lag+lag[1].Lag+lag[2].Lag == 0
	})
}
