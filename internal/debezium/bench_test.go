package debezium_test

import (
	"context"
	"encoding/binary"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/tocsin/tocsin/internal/debezium"
)

// BenchmarkDebeziumLag measures what Debezium capture adds between Debezium's write to
// Kafka and Tocsin's outbox commit: change events are produced to the in-process broker at
// a steady rate (1,000/s over four partitions, for 10 s), each stamped at its produce
// call, and each one's latency is taken when the transaction holding its outbox rows has
// committed. Debezium's own WAL → Kafka delay comes on top and is not measured here.
//
//	go test ./internal/debezium -run '^$' -bench BenchmarkDebeziumLag -benchtime 1x
func BenchmarkDebeziumLag(b *testing.B) {
	const rate, duration = 1000, 10 * time.Second
	for range b.N {
		bd := setup(b, 4, routesYAML)
		var mu sync.Mutex
		var lat, kafka []time.Duration
		warm := false
		total := int(rate * duration.Seconds())
		done := make(chan struct{})
		cfg := bd.config()
		cfg.AppliedFunc = func(a debezium.Applied) {
			now := time.Now()
			mu.Lock()
			defer mu.Unlock()
			for _, r := range a.Records {
				if len(r.Headers) == 0 {
					warm = true
					continue
				}
				at := time.Unix(0, int64(binary.BigEndian.Uint64(r.Headers[0].Value)))
				lat = append(lat, now.Sub(at))
				kafka = append(kafka, a.PolledAt.Sub(at))
			}
			if len(lat) == total {
				close(done)
			}
		}
		bd.start(b, cfg)
		// Warm up: the group joined and the partitions assigned before the clock starts.
		bd.produce(b, change{op: "c", after: item(0, "w", 1, "open", 0, "x"), id: 1 << 40, commit: 1, lsn: 2}.record(true))
		eventually(b, 30*time.Second, "warm-up", func() bool {
			mu.Lock()
			defer mu.Unlock()
			return warm
		})

		tick := time.NewTicker(time.Second / rate)
		for i := range total {
			<-tick.C
			r := change{op: "c", after: item(int64(i+1), "alice", 1, "open", 1, "x"), id: int64(i + 1),
				commit: int64(10 * (i + 1)), lsn: int64(10*(i+1) + 5)}.record(true)
			stamp := make([]byte, 8)
			binary.BigEndian.PutUint64(stamp, uint64(time.Now().UnixNano()))
			r.Headers = []kgo.RecordHeader{{Key: "t", Value: stamp}}
			bd.prod.Produce(context.Background(), r, func(_ *kgo.Record, err error) {
				if err != nil {
					b.Error(err)
				}
			})
		}
		tick.Stop()
		select {
		case <-done:
		case <-time.After(time.Minute):
			b.Fatal("not every event was applied")
		}
		mu.Lock()
		slices.Sort(lat)
		p := func(q float64) time.Duration { return lat[int(q*float64(len(lat)-1))] }
		b.ReportMetric(float64(p(0.5).Microseconds())/1000, "p50-ms")
		b.ReportMetric(float64(p(0.99).Microseconds())/1000, "p99-ms")
		b.ReportMetric(float64(lat[len(lat)-1].Microseconds())/1000, "max-ms")
		b.Logf("%d events at %d/s: produce → outbox commit p50 %s, p99 %s, max %s", len(lat), rate, p(0.5), p(0.99), lat[len(lat)-1])
		slices.Sort(kafka)
		b.Logf("of which produce → polled (the Kafka hop): p50 %s, p99 %s", kafka[len(kafka)/2], kafka[len(kafka)*99/100])
		mu.Unlock()
	}
}
