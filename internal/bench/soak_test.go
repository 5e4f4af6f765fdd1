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

// TestRunSoak runs a small soak against a real `tocsin serve`: every transport, a reconnect
// wave, samples of the server process, and every event received exactly once.
func TestRunSoak(t *testing.T) {
	t.Parallel()
	db := pgtest.New(t)
	binary := testbin.Tocsin(t)

	var report bytes.Buffer
	res, err := RunSoak(context.Background(), SoakConfig{DatabaseURL: db.URL, Clients: 30, Duration: 3 * time.Second,
		Rate: 50, ReconnectInterval: time.Second, ReportInterval: time.Second, Binary: binary,
		StreamLifetime: time.Second}, &report)
	t.Log("\n" + report.String())
	require.NoError(t, err)
	require.Equal(t, int64(150), res.Sent)
	require.Equal(t, res.Sent, res.Received)
	require.Zero(t, res.Duplicated)
	require.Positive(t, res.Reconnects, "the reconnect waves dropped clients")
	// Streams that reach their lifetime end with a final frame: counted as ends, not failures.
	require.Positive(t, res.StreamEnds["reconnect (lifetime)"], "stream ends: %v", res.StreamEnds)
	require.NotContains(t, res.ErrorKinds, "sse: EOF")
	require.GreaterOrEqual(t, len(res.Samples), 3)
	for _, s := range res.Samples {
		require.Positive(t, s.RSS)
		require.Positive(t, s.OpenFiles)
	}
}
