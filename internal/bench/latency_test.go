package bench

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tocsin/tocsin/internal/pgtest"
	"github.com/tocsin/tocsin/internal/testbin"
)

// TestRunLatency runs a short latency measurement against a real `tocsin serve` process,
// over both transports: every event published reaches its client.
func TestRunLatency(t *testing.T) {
	t.Parallel()
	db := pgtest.New(t)
	binary := testbin.Tocsin(t)

	var report bytes.Buffer
	res, err := RunLatency(context.Background(), LatencyConfig{DatabaseURL: db.URL, Rate: 100, Duration: time.Second,
		Clients: 5, Transports: []string{"long-poll", "sse"}, Binary: binary, Rest: 200 * time.Millisecond}, &report)
	t.Log("\n" + report.String())
	require.NoError(t, err)
	require.Len(t, res, 2)
	for _, r := range res {
		require.Equal(t, 100, r.Events, r.Transport)
		require.Equal(t, r.Events, r.Received, "%s: every event reached its client", r.Transport)
		require.Positive(t, r.P50, r.Transport)
		require.Positive(t, r.CPU.Tocsin, "%s: the server's CPU is read from /proc", r.Transport)
	}
}
