package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/tocsin/tocsin/internal/auth"
	"github.com/tocsin/tocsin/internal/pgtest"
	"github.com/tocsin/tocsin/internal/routes"
)

// commentEvent is a Debezium change event (no schemas) inserting comment id for owner.
func commentEvent(id int, owner string) *kgo.Record {
	value := fmt.Sprintf(`{"before":null,"after":{"id":%d,"owner_id":%q,"body":"comment %d"},
		"source":{"version":"2.7.3.Final","connector":"postgresql","name":"app","ts_ms":1764216143512,"snapshot":"false",
		"db":"app","sequence":"[\"%d\",\"%d\"]","schema":"public","table":"comment","txId":%d,"lsn":%d,"xmin":null},
		"op":"c","ts_ms":1764216143600,"transaction":null}`, id, owner, id, 100*id, 100*id+50, 1000+id, 100*id+50)
	return &kgo.Record{Key: fmt.Appendf(nil, `{"id":%d}`, id), Value: []byte(value)}
}

// Two `tocsin serve` nodes consume a Debezium topic (four partitions, an in-process Kafka
// broker) in one consumer group, configured only by flags; one is killed with SIGKILL in
// the middle of the stream and restarted. A client following alice's feed receives every
// event exactly once, and /metrics shows the skipped poison record and the lag.
func TestDebeziumNodesKilledMidStreamNoLossNoDuplicates(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.New(t)
	f, err := routes.Parse("routes.yaml", []byte(`
routes:
  - name: comment-owner
    table: public.comment
    recipients: { column: owner_id }
    topic: comment
    payload: full
    columns: [id, body]
    capture: debezium
`))
	require.NoError(t, err)
	_, err = routes.Apply(ctx, db.Pool, f)
	require.NoError(t, err)
	kafka, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(4, "app.public.comment"))
	require.NoError(t, err)
	t.Cleanup(kafka.Close)
	prod, err := kgo.NewClient(kgo.SeedBrokers(kafka.ListenAddrs()...), kgo.DefaultProduceTopic("app.public.comment"),
		kgo.ProducerLinger(0))
	require.NoError(t, err)
	t.Cleanup(prod.Close)

	flags := func(id string) []string {
		return []string{"--kafka-brokers", strings.Join(kafka.ListenAddrs(), ","), "--debezium-topic-prefix", "app",
			"--kafka-instance-id", id}
	}
	a := startNode(t, "debezium-a", db.URL, flags("a")...)
	b := startNode(t, "debezium-b", db.URL, flags("b")...)

	const total = 1200
	produced := make(chan struct{})
	var mu sync.Mutex
	sent := 0
	go func() {
		defer close(produced)
		for i := 1; i <= total; i++ {
			r := commentEvent(i, "alice")
			if i%2 == 0 {
				r = commentEvent(i, "bob")
			}
			if err := prod.ProduceSync(ctx, r).FirstErr(); err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			sent = i
			mu.Unlock()
			if i%20 == 0 {
				time.Sleep(5 * time.Millisecond)
			}
		}
	}()
	count := func() int {
		var n int
		require.NoError(t, db.Pool.QueryRow(ctx, `SELECT count(*) FROM tocsin.feed`).Scan(&n))
		return n
	}
	require.Eventually(t, func() bool { return count() > total/4 }, 60*time.Second, 5*time.Millisecond)
	a.kill()
	a = startNode(t, "debezium-a2", db.URL, flags("a")...)
	<-produced
	// A poison record, once both nodes run again: skipped, counted, logged.
	require.NoError(t, prod.ProduceSync(ctx, &kgo.Record{Key: []byte(`{"id":0}`), Value: []byte(`not json`)}).FirstErr())

	token, err := auth.Mint(auth.Config{HS256Secret: []byte(secret)}, "alice", time.Hour, "")
	require.NoError(t, err)
	seen := map[string]int{}
	after := ""
	require.Eventually(t, func() bool {
		p, status, err := poll(http.DefaultClient, a.base, token, after, 1)
		if err != nil || status != http.StatusOK {
			return false
		}
		for _, e := range p.Events {
			seen[string(e.Data)]++
		}
		after = p.Cursor
		return len(seen) == total/2
	}, 60*time.Second, time.Millisecond, "alice's events")
	for d, n := range seen {
		require.Equal(t, 1, n, "delivered once: %s", d)
	}
	require.Equal(t, total, count(), "no duplicate for anyone")

	metrics := func(n *node) string {
		resp, err := http.Get(n.base + "/metrics")
		require.NoError(t, err)
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		return string(body)
	}
	require.Eventually(t, func() bool {
		all := metrics(a) + metrics(b)
		return strings.Contains(all, `tocsin_debezium_partition_lag{partition=`) &&
			strings.Contains(all, `tocsin_debezium_skipped_total{reason="not_json"} 1`)
	}, 30*time.Second, 20*time.Millisecond, "the lag and the skipped record in /metrics")
	mu.Lock()
	t.Logf("%d events, one node killed mid-stream", sent)
	mu.Unlock()
}
