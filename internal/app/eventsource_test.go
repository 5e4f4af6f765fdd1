package app_test

import (
	"context"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/tocsin/tocsin/web/webtest"
)

// A real EventSource (test/sse-client: eventsource@4.1.1 under `node --test`) reads the
// stream with a ticket, is refused a used ticket, and resumes from an event id. The pinned
// client is installed with `npm ci` (from package-lock.json) the first time. Without node
// or npm, or with the npm registry unreachable, the test skips saying what is missing,
// except under CI=true, where it fails.
func TestEventSourceClient(t *testing.T) {
	t.Parallel()
	node, _ := webtest.Node(t)
	dir := webtest.Dir(t, filepath.Join("..", "..", "test", "sse-client"))
	webtest.NpmCI(t, dir)

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

// An unreachable npm registry skips a test that needs packages, with the reason and what
// to do (CI=true turns the skip into a failure: webtest's missing). The registry is made
// unreachable by an npm that fails as npm does offline.
func TestNpmRegistryUnreachableSkips(t *testing.T) {
	bin := t.TempDir()
	for name, script := range map[string]string{
		"node": "#!/bin/sh\nexit 0\n",
		"npm":  "#!/bin/sh\necho 'npm error code ENOTFOUND' >&2\necho 'npm error request to the registry failed, reason: getaddrinfo ENOTFOUND' >&2\nexit 1\n",
	} {
		require.NoError(t, os.WriteFile(filepath.Join(bin, name), []byte(script), 0o755))
	}
	t.Setenv("PATH", bin+string(os.PathListSeparator)+os.Getenv("PATH"))
	t.Setenv("CI", "")
	pkg := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(pkg, "package-lock.json"), []byte("{}"), 0o644))

	var skipped bool
	t.Run("needs packages", func(t *testing.T) {
		defer func() { skipped = t.Skipped() }()
		webtest.NpmCI(t, pkg)
		t.Error("NpmCI returned although the registry is unreachable")
	})
	require.True(t, skipped, "an unreachable registry skips the test")
}
