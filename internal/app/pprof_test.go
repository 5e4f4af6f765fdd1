package app_test

import (
	"io"
	"net/http"
	"testing"

	"github.com/stretchr/testify/require"
)

// Profiles are served only when asked for, on their own listener, never on the API's.
func TestPprofOnlyOnItsOwnListener(t *testing.T) {
	t.Parallel()
	get := func(url string) (int, string) {
		resp, err := http.Get(url)
		require.NoError(t, err)
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		return resp.StatusCode, string(b)
	}

	off := setup(t)
	require.Empty(t, off.node.PprofAddr())
	status, _ := get(off.base + "/debug/pprof/")
	require.Equal(t, http.StatusNotFound, status)

	on := setup(t, "--pprof-addr", "127.0.0.1:0")
	require.NotEmpty(t, on.node.PprofAddr())
	status, body := get("http://" + on.node.PprofAddr() + "/debug/pprof/")
	require.Equal(t, http.StatusOK, status)
	require.Contains(t, body, "goroutine")
	status, _ = get(on.base + "/debug/pprof/")
	require.Equal(t, http.StatusNotFound, status, "the API does not serve profiles")
}
