package app_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tocsin/tocsin/internal/demo"
	"github.com/tocsin/tocsin/internal/pgtest"
)

// After a restart the hub starts from the feed's head. With 100,000 retained entries for
// the clients that reconnect, the first live event is served by one fan-out read; a hub
// starting from 0 pages through their whole history first (100 reads of 1,000 entries).
func TestFirstEventAfterRestartReadsNoHistory(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.New(t)
	_, err := demo.Install(ctx, db.Pool)
	require.NoError(t, err)
	const (
		clients  = 50
		retained = 100_000
	)
	// The feed a node finds when it restarts: every client has a long history.
	_, err = db.Pool.Exec(ctx, `
		INSERT INTO tocsin.feed (position, recipient, topic, kind, data, created_at)
		SELECT g, 'user-' || (g % $1), 'old', 'message', '{}', now()
		FROM generate_series(1, $2) g`, clients, retained)
	require.NoError(t, err)
	_, err = db.Pool.Exec(ctx, `UPDATE tocsin.feed_state SET position = $1`, retained)
	require.NoError(t, err)
	b := startNode(t, db)

	recipients := make([]string, clients)
	for i := range recipients {
		recipients[i] = fmt.Sprintf("user-%d", i)
	}
	// Half the clients reconnect as long polls, half as streams, all from the head.
	transport := &http.Transport{MaxIdleConnsPerHost: clients, MaxConnsPerHost: clients}
	defer transport.CloseIdleConnections()
	client := &http.Client{Transport: transport}
	var wg sync.WaitGroup
	got := make([]page, clients/2)
	statuses, errs := make([]int, clients/2), make([]error, clients/2)
	for i := range clients / 2 {
		tok := token(t, recipients[i])
		wg.Go(func() { statuses[i], got[i], errs[i] = getFeedErr(client, b.base, tok, "after=now&wait=20") })
	}
	streams := make([]*sseStream, 0, clients/2)
	for i := clients / 2; i < clients; i++ {
		s := openStream(t, b.base, "after=now", bearer(token(t, recipients[i])))
		require.Equal(t, http.StatusOK, s.Resp.StatusCode)
		streams = append(streams, s)
	}
	require.Eventually(t, func() bool { return b.node.Hub.Waiting() == clients }, 30*time.Second, 10*time.Millisecond)
	before := b.queries.feedRange.Load()

	_, err = db.Pool.Exec(ctx, `SELECT tocsin.publish($1::text[], 'live', '{"n": 1}')`, recipients)
	require.NoError(t, err)
	wg.Wait()
	for i, p := range got {
		require.NoError(t, errs[i], "long poll %d", i)
		require.Equal(t, http.StatusOK, statuses[i], "long poll %d", i)
		require.Len(t, p.Events, 1, "long poll %d", i)
		require.Equal(t, "live", p.Events[0].Topic)
	}
	for i, s := range streams {
		e, ok := s.NextEvent(30 * time.Second)
		require.True(t, ok, "stream %d", i)
		var got struct{ Topic string }
		require.NoError(t, json.Unmarshal([]byte(e.Data), &got))
		require.Equal(t, "live", got.Topic, "stream %d", i)
	}
	require.Equal(t, int64(1), b.queries.feedRange.Load()-before,
		"the first event after a restart took more than one fan-out read")
}
