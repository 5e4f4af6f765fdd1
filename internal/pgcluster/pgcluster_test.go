package pgcluster_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/tocsin/tocsin/internal/pgcluster"
)

// `tocsin dev` passes a relative directory and starts the same cluster again and again.
func TestRelativeDirectoryAndRestartReuseTheCluster(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	parent, err := os.MkdirTemp("", "tocsin-pgcluster-")
	require.NoError(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(parent) })
	require.NoError(t, os.Chmod(parent, 0o755))
	wd, err := os.Getwd()
	require.NoError(t, err)
	rel, err := filepath.Rel(wd, filepath.Join(parent, "pg"))
	require.NoError(t, err)

	for run := range 2 {
		c, err := pgcluster.Start(ctx, pgcluster.Config{Dir: rel})
		require.NoError(t, err, "run %d", run)
		conn, err := pgx.Connect(ctx, c.URL("postgres"))
		require.NoError(t, err)
		var level string
		require.NoError(t, conn.QueryRow(ctx, "SHOW wal_level").Scan(&level))
		require.Equal(t, "logical", level)
		if run == 0 {
			_, err = conn.Exec(ctx, "CREATE TABLE kept (x int)")
		} else {
			_, err = conn.Exec(ctx, "SELECT * FROM kept")
		}
		require.NoError(t, err, "the data directory is reused")
		require.NoError(t, conn.Close(ctx))
		require.NoError(t, c.Stop())
	}
	require.FileExists(t, filepath.Join(parent, "pg", "data", "PG_VERSION"))
}

// Started as root in a folder the postgres user cannot reach, the cluster runs as postgres
// from a directory of its home: no permission of the caller's folders is widened.
func TestRootDoesNotWidenParentPermissions(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		t.Skip("only root hands the cluster to the postgres user")
	}
	ctx := context.Background()
	closed, err := os.MkdirTemp("", "tocsin-closed-")
	require.NoError(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(closed) })
	require.NoError(t, os.Chmod(closed, 0o700))
	dir := filepath.Join(closed, "project", ".tocsin", "pg")

	c, err := pgcluster.Start(ctx, pgcluster.Config{Dir: dir})
	require.NoError(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(filepath.Dir(c.DataDir())) })
	t.Cleanup(func() { _ = c.Stop() }) // stops whichever server runs on the data directory
	require.Equal(t, "postgres", c.RunAs())
	require.False(t, strings.HasPrefix(c.DataDir(), closed), "data outside the closed folder: %s", c.DataDir())

	st, err := os.Stat(closed)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o700), st.Mode().Perm(), "the parent's permissions are unchanged")
	conn, err := pgx.Connect(ctx, c.URL("postgres"))
	require.NoError(t, err)
	require.NoError(t, conn.Close(ctx))

	// The same folder finds the same data again.
	require.NoError(t, c.Stop())
	again, err := pgcluster.Start(ctx, pgcluster.Config{Dir: dir})
	require.NoError(t, err)
	require.Equal(t, c.DataDir(), again.DataDir())
	require.Zero(t, again.Reused())
	require.NoError(t, again.Stop())
}

// A server left running by a process that died (kill -9 of `tocsin dev`) is reused by the
// next Start on the same directory, on its port.
func TestLeftoverServerIsReused(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	parent, err := os.MkdirTemp("", "tocsin-pgcluster-")
	require.NoError(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(parent) })
	require.NoError(t, os.Chmod(parent, 0o755))
	dir := filepath.Join(parent, "pg")

	first, err := pgcluster.Start(ctx, pgcluster.Config{Dir: dir})
	require.NoError(t, err)
	t.Cleanup(func() { _ = first.Stop() })
	// The owner "dies": nothing stops first.
	second, err := pgcluster.Start(ctx, pgcluster.Config{Dir: dir, Port: 1})
	require.NoError(t, err)
	require.NotZero(t, second.Reused())
	require.Equal(t, first.Port(), second.Port())
	conn, err := pgx.Connect(ctx, second.URL("postgres"))
	require.NoError(t, err)
	require.NoError(t, conn.Close(ctx))
	require.NoError(t, second.Stop())
	require.NoFileExists(t, filepath.Join(dir, "data", "postmaster.pid"))
}
