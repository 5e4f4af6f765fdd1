package webdemo_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

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
