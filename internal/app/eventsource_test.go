package app_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
)

// A real EventSource (test/sse-client: eventsource@4.1.1 under `node --test`) reads the
// stream with a ticket, is refused a used ticket, and resumes from an event id. Skipped
// only when node is not installed; the pinned client is installed with `npm ci` (from
// package-lock.json) the first time.
func TestEventSourceClient(t *testing.T) {
	t.Parallel()
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("node is not installed")
	}
	dir, err := filepath.Abs(filepath.Join("..", "..", "test", "sse-client"))
	require.NoError(t, err)
	installSSEClient(t, dir)

	b := setup(t)
	tok := token(t, "alice")
	status, start := getFeed(t, http.DefaultClient, b.base, tok, "after=now")
	require.Equal(t, http.StatusOK, status)
	const events = 12
	publish(t, b, "alice", 0, events)

	cmd := exec.CommandContext(context.Background(), node, "--test", "stream.test.js")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "TOCSIN_BASE="+b.base, "TOCSIN_TOKEN="+tok,
		"TOCSIN_AFTER="+start.Cursor, "TOCSIN_EXPECT="+strconv.Itoa(events))
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "node --test:\n%s", out)
	t.Logf("node --test:\n%s", out)
}

var npmOnce sync.Once

// installSSEClient runs `npm ci` in dir once per test binary when its packages are missing.
func installSSEClient(t *testing.T, dir string) {
	t.Helper()
	var err error
	npmOnce.Do(func() {
		if _, statErr := os.Stat(filepath.Join(dir, "node_modules", "eventsource")); statErr == nil {
			return
		}
		npm, lookErr := exec.LookPath("npm")
		if lookErr != nil {
			err = fmt.Errorf("node is installed but npm is not: %w", lookErr)
			return
		}
		cmd := exec.Command(npm, "ci", "--no-audit", "--no-fund")
		cmd.Dir = dir
		if out, runErr := cmd.CombinedOutput(); runErr != nil {
			err = fmt.Errorf("npm ci in %s: %w\n%s", dir, runErr, out)
		}
	})
	require.NoError(t, err)
	_, statErr := os.Stat(filepath.Join(dir, "node_modules", "eventsource"))
	require.NoError(t, statErr, "the SSE test client is not installed")
}
