package pgtest

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tocsin/tocsin/internal/pgcluster"
)

// A killed test binary leaves its cluster running. The next binary's sweep stops the
// clusters of binaries that are gone and removes their directories; it leaves alone the
// directories of live binaries and those without an owner yet.
func TestSweepStopsTheClustersOfTestBinariesThatAreGone(t *testing.T) {
	tmp := t.TempDir()
	// The postgres user must reach the cluster when the tests run as root.
	require.NoError(t, os.Chmod(filepath.Dir(tmp), 0o755))
	require.NoError(t, os.Chmod(tmp, 0o755))
	dir := func(name, owner string) string {
		d := filepath.Join(tmp, dirPrefix+name)
		require.NoError(t, os.Mkdir(d, 0o755))
		if owner != "" {
			require.NoError(t, os.WriteFile(filepath.Join(d, ownerFile), []byte(owner), 0o644))
		}
		return d
	}
	dead := exec.Command("true")
	require.NoError(t, dead.Run())
	gone := dir("gone", strconv.Itoa(dead.Process.Pid))
	live := dir("live", strconv.Itoa(os.Getpid()))
	unowned := dir("new", "")

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := pgcluster.Start(ctx, pgcluster.Config{Dir: filepath.Join(gone, "c1")})
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Stop() })
	b, err := os.ReadFile(filepath.Join(gone, "c1", "data", "postmaster.pid"))
	require.NoError(t, err)
	postmaster, err := strconv.Atoi(strings.SplitN(string(b), "\n", 2)[0])
	require.NoError(t, err)
	require.True(t, alive(postmaster))

	sweepAbandoned(tmp)
	require.False(t, alive(postmaster), "the abandoned cluster was stopped")
	require.NoDirExists(t, gone)
	require.DirExists(t, live)
	require.DirExists(t, unowned)
}
