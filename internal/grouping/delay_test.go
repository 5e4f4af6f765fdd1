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

// The delay from a window's end to its digest's feed entry, with the Mover and the flush
// queue ticking every TickDefault (TOCSIN_GROUP_TICK, 100 ms) and without the Mover
// (River's scheduler, which ticks every 5 s). It reports figures and asserts nothing about time:
//
//	go test ./internal/grouping -run TestWindowEndToDeliveryDelay -v
//
// The window opens when the first change is sequenced (≈ its first_at), so
// sequenced_at - (first_at + window) slightly overstates the delay.
func TestWindowEndToDeliveryDelay(t *testing.T) {
	t.Parallel()
	for _, mover := range []bool{true, false} {
		t.Run(fmt.Sprintf("mover=%t", mover), func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			b := setup(t, options{window: time.Second, max: 50, noMover: !mover, tick: grouping.TickDefault})
			const windows = 8
			for i := range windows {
				b.change(t, fmt.Sprintf("user-%d", i), i, "[1]")
				time.Sleep(317 * time.Millisecond) // spread the window ends over River's 5 s tick
			}
			require.Eventually(t, func() bool {
				return b.count(t, `SELECT count(*) FROM tocsin.feed WHERE kind = 'digest'`) == windows
			}, 30*time.Second, 10*time.Millisecond)
			rows, err := b.db.Pool.Query(ctx, `SELECT extract(epoch FROM sequenced_at - ((data->>'first_at')::timestamptz
				+ interval '1 second')) * 1000 FROM tocsin.feed WHERE kind = 'digest'`)
			require.NoError(t, err)
			var ms []float64
			for rows.Next() {
				var v float64
				require.NoError(t, rows.Scan(&v))
				ms = append(ms, v)
			}
			require.NoError(t, rows.Err())
			slices.Sort(ms)
			t.Logf("window end → digest in feed over %d windows: min %.0f ms, median %.0f ms, max %.0f ms",
				len(ms), ms[0], ms[len(ms)/2], ms[len(ms)-1])
		})
	}
}
