package bench

import (
	"bytes"
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/tocsin/tocsin/internal/pgtest"
	"github.com/tocsin/tocsin/internal/testbin"
)

// TestRunFanout publishes a few changes to every client of a mixed set against a real
// `tocsin serve`: each client has each change exactly once, and the times are measured.
func TestRunFanout(t *testing.T) {
	t.Parallel()
	db := pgtest.New(t)
	binary := testbin.Tocsin(t)

	var report bytes.Buffer
	res, err := RunFanout(context.Background(), FanoutConfig{DatabaseURL: db.URL, Clients: 8, Rounds: 3,
		Transport: TransportMixed, Binary: binary}, &report)
	t.Log("\n" + report.String())
	require.NoError(t, err)
	require.Zero(t, res.Lost)
	require.Zero(t, res.Duplicated)
	require.Equal(t, 3, res.First.N, "every round reached a first client")
	require.Equal(t, 3, res.Last.N)
	require.Positive(t, res.First.P50)
	require.GreaterOrEqual(t, res.Last.Max, res.First.Max, "the last arrival is never before the first")
}
