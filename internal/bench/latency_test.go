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
// over each transport and the mix of SSE and long polling, one event per transaction and
// several: every event published reaches its client exactly once.
func TestRunLatency(t *testing.T) {
	t.Parallel()
	db := pgtest.New(t)
	binary := testbin.Tocsin(t)

	var report bytes.Buffer
	res, err := RunLatency(context.Background(), LatencyConfig{DatabaseURL: db.URL, Rate: 100, Duration: time.Second,
		Clients: 6, Transports: []string{"long-poll", "sse", TransportMixed}, PerTx: []int{1, 7}, Writers: 2,
		Binary: binary, Rest: 200 * time.Millisecond}, &report)
	t.Log("\n" + report.String())
	require.NoError(t, err)
	require.Len(t, res, 6)
	for _, r := range res {
		require.Equal(t, 100, r.Events, r.Transport)
		require.Equal(t, r.Events, r.Received, "%s, %d/tx: every event reached its client", r.Transport, r.PerTx)
		require.Zero(t, r.Lost)
		require.Zero(t, r.Duplicated)
		require.Positive(t, r.P50, r.Transport)
		require.Positive(t, r.Published, r.Transport)
		require.Positive(t, r.CPU.Tocsin, "%s: the server's CPU is read from /proc", r.Transport)
		if r.Transport == TransportMixed {
			require.Len(t, r.ByTransport, 2, "a mixed run splits its latency by transport")
		}
	}
	require.Contains(t, report.String(), "load average")

	// PostgreSQL runs on this machine: its CPU is split by session, and the sequencer's
	// connection is named so.
	names := map[string]bool{}
	for _, r := range res {
		for _, s := range r.Sessions {
			names[s.Name] = true
		}
	}
	require.True(t, names["tocsin-sequencer"], "sessions measured: %v", names)
	require.Contains(t, report.String(), "PostgreSQL's CPU by session")
}
