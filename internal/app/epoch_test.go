package app_test

import (
	"context"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tocsin/tocsin/internal/stream"
)

// A client parked across a change of the feed's generation (a slot recreated, records lost
// upstream, a diverged history) is sent back to refetch: its long poll answers 410 and its
// stream ends with cursor-expired. Handing it the new generation's entries would skip,
// silently, whatever the change lost between its cursor and them.
func TestParkedAcrossEpochChangeGets410(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	tok := token(t, "alice")

	s := openStream(t, b.base, "after=now", bearer(tok))
	defer s.Close()
	require.Equal(t, http.StatusOK, s.Resp.StatusCode)

	type answer struct {
		status int
		err    error
	}
	polled := make(chan answer, 1)
	go func() {
		status, _, err := getFeedErr(http.DefaultClient, b.base, tok, "after=now&wait=30")
		polled <- answer{status, err}
	}()
	require.Eventually(t, func() bool { return b.node.Hub.Waiting() == 2 }, streamTimeout, 5*time.Millisecond,
		"the stream and the long poll are registered with the hub")

	var before string
	require.NoError(t, b.db.Pool.QueryRow(ctx, `SELECT epoch FROM tocsin.feed_state`).Scan(&before))
	_, err := b.db.Pool.Exec(ctx, `UPDATE tocsin.feed_state SET epoch = 'zz0epoch00'`)
	require.NoError(t, err)
	require.NotEqual(t, "zz0epoch00", before)
	_, err = b.db.Pool.Exec(ctx, `SELECT tocsin.publish('alice', 'chat', '{"n": 1}')`)
	require.NoError(t, err)

	a := <-polled
	require.NoError(t, a.err)
	require.Equal(t, http.StatusGone, a.status, "a long poll parked across the epoch change refetches")

	e, ok := s.NextEvent(deliveryTimeout)
	require.True(t, ok, "the stream says why it ends")
	require.Equal(t, "reconnect", e.Event, "no entry of the new generation reaches the stream: %s", s.Raw())
	var why struct{ Reason string }
	require.NoError(t, json.Unmarshal([]byte(e.Data), &why))
	require.Equal(t, string(stream.EndCursorExpired), why.Reason)
	require.Eventually(t, func() bool { return b.node.API.StreamCounters().Ended(stream.EndCursorExpired) == 1 },
		streamTimeout, 5*time.Millisecond)
}
