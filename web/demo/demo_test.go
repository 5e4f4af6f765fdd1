package webdemo_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tocsin/tocsin/internal/pgtest"
	"github.com/tocsin/tocsin/web/webtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// TestBundleIsCurrent rebuilds dist/app.js with the pinned esbuild (the `tool` in go.mod,
// the same command as the go:generate line) and fails when the committed bundle differs:
// run `go generate ./web/demo`. The bundle includes the SDK's packages, so web/sdk's
// node_modules must be installed.
func TestBundleIsCurrent(t *testing.T) {
	t.Parallel()
	webtest.Track(t, "src", "../sdk/src", "../sdk/package-lock.json")
	webtest.NpmCI(t, webtest.Dir(t, "../sdk"))
	cmd := exec.CommandContext(t.Context(), "go", "tool", "esbuild", "src/main.ts", "--bundle", "--format=esm",
		"--minify", "--target=es2022", "--log-level=warning")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	want, err := cmd.Output()
	require.NoError(t, err, "esbuild: %s", stderr.String())
	got, err := os.ReadFile(filepath.Join("dist", "app.js"))
	require.NoError(t, err)
	require.True(t, bytes.Equal(want, got), "dist/app.js is stale: run `go generate ./web/demo`")
}

// TestDemoInChromium runs test/browser.test.js: the six scenarios of the demo page in
// Debian's chromium (driven by playwright-core), against a real `tocsin dev` process on a
// test database, which the Go side kills, restarts and switches. Screenshots of failed
// scenarios are kept in test-results/ (git-ignored).
func TestDemoInChromium(t *testing.T) {
	t.Parallel()
	chromium := webtest.Chromium(t)
	dir := webtest.Dir(t, ".")
	webtest.Track(t, "test", "index.html", "dist/app.js", "package-lock.json")
	webtest.NpmCI(t, dir)

	db := pgtest.New(t)
	srv := webtest.Start(t, "dev", db.URL) // tocsin dev installs the demo schema and routes
	ctl := webtest.Control(t, srv, db.Pool)
	shots := filepath.Join(dir, "test-results")
	require.NoError(t, os.MkdirAll(shots, 0o755))
	webtest.RunNode(t, dir, 4*time.Minute, []string{"TOCSIN_BASE=" + srv.Base, "TOCSIN_CONTROL=" + ctl,
		"TOCSIN_CHROMIUM=" + chromium, "TOCSIN_SCREENSHOTS=" + shots}, "test/browser.test.js")
}
