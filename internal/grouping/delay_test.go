package grouping_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tocsin/tocsin/internal/grouping"
)

// BenchmarkWindowEndToDelivery measures the delay from a window's end to its digest's feed
// entry, with the Mover and the flush queue ticking every TickDefault (TOCSIN_GROUP_TICK,
// 100 ms) and without the Mover (River's scheduler, which ticks every 5 s). It is a
// measurement, not a test: it reports the median and the maximum over 8 windows whose ends
// are spread over River's tick.
//
//	go test ./internal/grouping -run '^$' -bench BenchmarkWindowEndToDelivery -benchtime 1x
//
// The window opens when the first change is sequenced (≈ its first_at), so
// sequenced_at - (first_at + window) slightly overstates the delay.
func BenchmarkWindowEndToDelivery(b *testing.B) {
	for _, mover := range []bool{true, false} {
		b.Run(fmt.Sprintf("mover=%t", mover), func(b *testing.B) {
			bu := setup(b, options{window: time.Second, max: 50, noMover: !mover, tick: grouping.TickDefault})
			const windows = 8
			var ms []float64
			round := 0
			for b.Loop() {
				round++
				for i := range windows {
					bu.change(b, fmt.Sprintf("user-%d-%d", round, i), i, "[1]")
					time.Sleep(317 * time.Millisecond) // spread the window ends over River's 5 s tick
				}
				require.Eventually(b, func() bool {
					return bu.count(b, `SELECT count(*) FROM tocsin.feed WHERE kind = 'digest'`) == round*windows
				}, 30*time.Second, 10*time.Millisecond)
			}
			rows, err := bu.db.Pool.Query(context.Background(), `SELECT extract(epoch FROM sequenced_at - ((data->>'first_at')::timestamptz
				+ interval '1 second')) * 1000 FROM tocsin.feed WHERE kind = 'digest'`)
			require.NoError(b, err)
			for rows.Next() {
				var v float64
				require.NoError(b, rows.Scan(&v))
				ms = append(ms, v)
			}
			require.NoError(b, rows.Err())
			slices.Sort(ms)
			b.ReportMetric(0, "ns/op")
			b.ReportMetric(ms[len(ms)/2], "ms-median")
			b.ReportMetric(ms[len(ms)-1], "ms-max")
		})
	}
}
