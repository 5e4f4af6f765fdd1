package debezium_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/tocsin/tocsin/internal/debezium"
	"github.com/tocsin/tocsin/internal/sequencer"
)

// childEnv switches the test binary into a Tocsin capture process (sequencer + Debezium
// consumer) on the database it names, reading the brokers of childBrokersEnv, for the
// crash test to kill.
const (
	childEnv        = "TOCSIN_DEBEZIUM_TEST_CHILD_URL"
	childBrokersEnv = "TOCSIN_DEBEZIUM_TEST_CHILD_BROKERS"
)

func runChild(url, brokers string) {
	ctx := context.Background()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	pool, err := pgxpool.New(ctx, url)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	seq := sequencer.New(pool, sequencer.Config{}, log)
	c := debezium.New(pool, debezium.Config{
		Kafka:       debezium.Kafka{Brokers: debezium.ParseBrokers(brokers), InstanceID: "crash-child"},
		TopicPrefix: prefix, WakeFunc: seq.Wake, MaxPollRecords: 37,
		RefreshInterval: 200 * time.Millisecond, RetryInterval: 50 * time.Millisecond}, log)
	go func() { _ = seq.Run(ctx) }()
	_ = c.Run(ctx)
	os.Exit(0)
}

// TestCrashNoLossNoDuplicate SIGKILLs a capture process again and again while change
// events stream into a four-partition topic, Debezium resending a stretch after each of
// its own "restarts" on the way; the feed ends with every event exactly once.
func TestCrashNoLossNoDuplicate(t *testing.T) {
	t.Parallel()
	b := setup(t, 4, routesYAML)
	start := func() *exec.Cmd {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), childEnv+"="+b.db.URL, childBrokersEnv+"="+b.brokers[0])
		cmd.Stderr = os.Stderr
		require.NoError(t, cmd.Start())
		return cmd
	}
	// The producer streams inserts in batches until stopped; every fifth batch Debezium
	// "restarts" and sends the previous batch again first.
	const batch = 40
	stop := make(chan struct{})
	var produced int64
	var wg sync.WaitGroup
	var mu sync.Mutex
	wg.Add(1)
	go func() {
		defer wg.Done()
		var prev []*kgo.Record
		for n := 0; ; n++ {
			select {
			case <-stop:
				return
			default:
			}
			var recs []*kgo.Record
			if n%5 == 4 {
				for _, r := range prev {
					recs = append(recs, &kgo.Record{Key: r.Key, Value: r.Value})
				}
			}
			var fresh []*kgo.Record
			for i := range int64(batch) {
				id := int64(n)*batch + i + 1
				fresh = append(fresh, change{op: "c", after: item(id, fmt.Sprintf("o%d", id%7), 2, "open", id, "x"),
					id: id, commit: 10 * id, lsn: 10*id + 5}.record(n%2 == 0))
			}
			recs = append(recs, fresh...)
			time.Sleep(5 * time.Millisecond) // Debezium's pace, roughly: a few thousand events a second
			if err := b.prod.ProduceSync(b.ctx, recs...).FirstErr(); err != nil {
				t.Error(err)
				return
			}
			prev = fresh
			mu.Lock()
			produced = int64(n+1) * batch
			mu.Unlock()
		}
	}()
	feedCount := func() int { return b.count(t, `SELECT count(*) FROM tocsin.feed`) }
	kills := 0
	for kills < 8 {
		before := feedCount()
		cmd := start()
		// Kill only after the process made progress, so each life applies something.
		deadline := time.Now().Add(60 * time.Second)
		for feedCount() == before && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
		require.NoError(t, cmd.Process.Signal(syscall.SIGKILL))
		_ = cmd.Wait()
		kills++
	}
	close(stop)
	wg.Wait()
	cmd := start()
	t.Cleanup(func() { _ = cmd.Process.Signal(syscall.SIGKILL); _ = cmd.Wait() })

	mu.Lock()
	want := int(2 * produced) // every insert reaches its owner and service:audit
	mu.Unlock()
	eventually(t, 2*time.Minute, "every event in the feed", func() bool {
		return feedCount() >= want && b.count(t, `SELECT count(*) FROM tocsin.outbox`) == 0
	})
	require.Equal(t, want, feedCount(), "no duplicates")
	require.Zero(t, b.count(t, `
		SELECT count(*) FROM (SELECT recipient, key FROM tocsin.feed GROUP BY 1, 2 HAVING count(*) > 1) d`), "no duplicates")
	require.Zero(t, b.count(t, `
		SELECT count(*) FROM generate_series(1, $1::int) id WHERE NOT EXISTS (
			SELECT 1 FROM tocsin.feed f WHERE f.recipient = 'service:audit' AND f.key = jsonb_build_object('id', id))`,
		produced), "no loss")
	t.Logf("%d kills, %d events produced, %d feed entries", kills, produced, want)
}
