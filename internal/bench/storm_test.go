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

// TestRunStorm restarts a real `tocsin serve` under a few mixed clients while events are
// published: the clients that were owed events catch up through the new node, they saw
// the old one go, and every event arrives exactly once.
func TestRunStorm(t *testing.T) {
	t.Parallel()
	db := pgtest.New(t)
	binary := testbin.Tocsin(t)

	var report bytes.Buffer
	res, err := RunStorm(context.Background(), StormConfig{DatabaseURL: db.URL, Clients: 10, Rate: 40,
		Duration: 3 * time.Second, Down: 300 * time.Millisecond, Retry: 100 * time.Millisecond,
		Transport: TransportMixed, Stop: "kill", Binary: binary}, &report)
	t.Log("\n" + report.String())
	require.NoError(t, err)
	require.Equal(t, int64(120), res.Sent)
	require.Equal(t, res.Sent, res.Received)
	require.Zero(t, res.Lost)
	require.Zero(t, res.Duplicated)
	require.Positive(t, res.Behind, "events published while the node was down were owed to clients")
	require.Positive(t, res.CaughtUp)
	require.Positive(t, res.Reconnects, "the restart dropped the clients")
	require.Positive(t, res.Storm.Tocsin, "the new node's CPU is read from /proc")
}
