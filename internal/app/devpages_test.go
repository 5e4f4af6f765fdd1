package app_test

import (
	"context"
	"encoding/json"
	"flag"
	"io"
	"log/slog"
	"net/http"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/tocsin/tocsin/internal/app"
	"github.com/tocsin/tocsin/internal/config"
	"github.com/tocsin/tocsin/internal/pgtest"
)

// The demo page and its token endpoint exist only with Options.DevPages (tocsin dev): a
// node without it (tocsin serve) answers 404, and a dev token is a real token of the demo
// user, refused for anyone else.
func TestDevPagesOnlyWhenAsked(t *testing.T) {
	t.Parallel()
	db := pgtest.New(t)
	get := func(url string) (int, []byte) {
		resp, err := http.Get(url)
		require.NoError(t, err)
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		return resp.StatusCode, b
	}
	for _, dev := range []bool{false, true} {
		cfg, err := config.Load(flag.NewFlagSet("test", flag.ContinueOnError),
			[]string{"--database-url", db.URL, "--addr", "127.0.0.1:0", "--jwt-secret", secret})
		require.NoError(t, err)
		node, err := app.New(context.Background(), cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), app.Options{DevPages: dev})
		require.NoError(t, err)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- node.Run(ctx) }()
		base := "http://" + node.Addr()

		status, page := get(base + "/")
		tokStatus, body := get(base + "/dev/token?user=alice")
		jsStatus, _ := get(base + "/dev/app.js")
		otherStatus, _ := get(base + "/dev/token?user=mallory")
		if !dev {
			require.Equal(t, http.StatusNotFound, status)
			require.Equal(t, http.StatusNotFound, tokStatus)
			require.Equal(t, http.StatusNotFound, jsStatus)
		} else {
			require.Equal(t, http.StatusOK, status)
			require.Contains(t, string(page), `data-testid="unread"`)
			require.Equal(t, http.StatusOK, jsStatus)
			require.Equal(t, http.StatusNotFound, otherStatus)
			require.Equal(t, http.StatusOK, tokStatus)
			var tok struct{ Token string }
			require.NoError(t, json.Unmarshal(body, &tok))
			feedStatus, _ := getFeed(t, http.DefaultClient, base, tok.Token, "after=now")
			require.Equal(t, http.StatusOK, feedStatus, "the dev token is alice's")
		}
		cancel()
		require.NoError(t, <-done)
	}
}
