package pgcluster_test

import (
	"context"
	"os"
	"path/filepath"
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
