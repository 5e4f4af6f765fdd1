package migrate_test

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"
	"golang.org/x/sync/errgroup"

	"github.com/tocsin/tocsin/internal/migrate"
	"github.com/tocsin/tocsin/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// The template database is already migrated: running again must apply nothing, and several
// processes migrating a fresh database at once must not trip over each other.
func TestUpIsIdempotentAndConcurrent(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.New(t)

	applied, err := migrate.Up(ctx, db.Pool)
	require.NoError(t, err)
	require.Empty(t, applied)
	require.NoError(t, migrate.Check(ctx, db.Pool))

	_, err = db.Pool.Exec(ctx, "DROP SCHEMA tocsin CASCADE")
	require.NoError(t, err)
	require.ErrorIs(t, migrate.Check(ctx, db.Pool), migrate.ErrNotCurrent)

	var g errgroup.Group
	results := make([][]string, 4)
	for i := range results {
		g.Go(func() error {
			pool, err := pgxpool.New(ctx, db.URL)
			if err != nil {
				return err
			}
			defer pool.Close()
			results[i], err = migrate.Up(ctx, pool)
			return err
		})
	}
	require.NoError(t, g.Wait())
	nonEmpty := 0
	for _, r := range results {
		if len(r) > 0 {
			nonEmpty++
		}
	}
	require.Equal(t, 1, nonEmpty, "exactly one process should have applied the migrations")
	require.NoError(t, migrate.Check(ctx, db.Pool))
}
