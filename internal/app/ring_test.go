package app_test

import (
	"context"
	"flag"
	"io"
	"log/slog"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tocsin/tocsin/internal/app"
	"github.com/tocsin/tocsin/internal/config"
	"github.com/tocsin/tocsin/internal/pgtest"
)

// A node's hub hears of its own sequencer's batches in process: with no doorbell and a
// fallback an hour away, a parked long poll still gets an event written by the
// application's own SQL (which wakes nothing in the node) as soon as it is sequenced.
func TestOwnBatchesReachTheHubWithoutTheDoorbell(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.New(t)
	cfg, err := config.Load(flag.NewFlagSet("test", flag.ContinueOnError), []string{
		"--database-url", db.URL, "--addr", "127.0.0.1:0", "--jwt-secret", secret,
		"--long-poll-max", "60s", "--fallback-interval", "1h"})
	require.NoError(t, err)
	node, err := app.New(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), app.Options{WithoutDoorbell: true})
	require.NoError(t, err)
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- node.Run(runCtx) }()
	t.Cleanup(func() { cancel(); require.NoError(t, <-done) })
	base := "http://" + node.Addr()

	type result struct {
		status int
		page   page
		err    error
	}
	res := make(chan result, 1)
	go func() {
		status, p, err := getFeedErr(http.DefaultClient, base, token(t, "alice"), "after=now&wait=50")
		res <- result{status, p, err}
	}()
	require.Eventually(t, func() bool { return node.Hub.Waiting() == 1 }, 30*time.Second, 5*time.Millisecond)
	_, err = db.Pool.Exec(ctx, `SELECT tocsin.publish('alice', 'chat', '{"n": 1}')`)
	require.NoError(t, err)
	r := <-res
	require.NoError(t, r.err)
	require.Equal(t, http.StatusOK, r.status)
	require.Len(t, r.page.Events, 1, "the long poll was answered by the in-process ring, not at the end of its wait")
}
