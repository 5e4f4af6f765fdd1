package migrate_test

import (
	"context"
	"io/fs"
	"regexp"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"
	"golang.org/x/sync/errgroup"

	"github.com/tocsin/tocsin/internal/migrate"
	"github.com/tocsin/tocsin/internal/pgtest"
	"github.com/tocsin/tocsin/migrations"
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

// Every database object is created in one migration file only, so the definition a reader
// finds is the current one. A file that replaces an object an earlier file created says so
// at its top and the earlier file no longer holds it.
func TestEachObjectIsDefinedOnce(t *testing.T) {
	t.Parallel()
	create := regexp.MustCompile(`(?im)^\s*CREATE\s+(?:OR\s+REPLACE\s+)?(FUNCTION|AGGREGATE|TABLE|TYPE|VIEW|TRIGGER|INDEX)\s+(?:IF\s+NOT\s+EXISTS\s+)?([a-z0-9_."]+)(\s*\(([^)]*)\))?`)
	names, err := fs.Glob(migrations.FS, "*.sql")
	require.NoError(t, err)
	where := map[string][]string{}
	for _, n := range names {
		b, err := fs.ReadFile(migrations.FS, n)
		require.NoError(t, err)
		for _, m := range create.FindAllStringSubmatch(string(b), -1) {
			key := strings.ToLower(m[1] + " " + m[2])
			if m[1] == "FUNCTION" || m[1] == "function" || m[1] == "AGGREGATE" {
				key += "(" + signature(m[4]) + ")"
			}
			where[key] = append(where[key], n)
		}
	}
	require.NotEmpty(t, where)
	for k, files := range where {
		require.Len(t, files, 1, "%s is created in %v", k, files)
	}
	require.Contains(t, where, "function tocsin.sequence_batch(integer,interval,integer)")
	require.Contains(t, where, "function tocsin.publish(text[],text,jsonb)")
	require.Contains(t, where, "function tocsin.capture_enabled()")
}

// signature keeps the types of a parameter list ("a integer, b text" → "integer,text").
func signature(params string) string {
	var types []string
	for _, p := range strings.Split(params, ",") {
		f := strings.Fields(p)
		switch {
		case len(f) == 0:
		case len(f) == 1:
			types = append(types, f[0])
		case strings.EqualFold(f[0], "OUT"):
			// not part of the signature
		default:
			types = append(types, f[1])
		}
	}
	return strings.Join(types, ",")
}
