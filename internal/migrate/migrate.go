// Package migrate applies Tocsin's migrations and River's, in that interleaving: Tocsin's
// 0001 creates the schema, River's migrations create its tables in it, then Tocsin's other
// migrations follow. The whole sequence runs under one advisory lock, so any number of
// processes may migrate at once; each migration commits on its own and is recorded in
// tocsin.schema_migration, so running again is a no-op.
package migrate

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"sort"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivermigrate"

	"github.com/tocsin/tocsin/migrations"

	"github.com/tocsin/tocsin/internal/sqlfile"
)

var (
	//go:embed queries.sql
	queriesSQL                   string
	queries                      = sqlfile.Parse("migrate/queries.sql", queriesSQL)
	migrateLockSQL               = queries.Get("migrate_lock")
	migrateUnlockSQL             = queries.Get("migrate_unlock")
	schemaMigrationCreateSQL     = queries.Get("schema_migration_create")
	schemaMigrationAppliedSQL    = queries.Get("schema_migration_applied")
	schemaMigrationRecordSQL     = queries.Get("schema_migration_record")
	schemaMigrationRecordOnceSQL = queries.Get("schema_migration_record_once")
	schemaMigrationCountSQL      = queries.Get("schema_migration_count")
	schemaMigrationExistsSQL     = queries.Get("schema_migration_exists")
)

// Schema is the schema that holds Tocsin's tables and River's.
const Schema = "tocsin"

// lockKey is the advisory lock held while migrating ("tocsin" in ASCII, as an int64).
const lockKey int64 = 0x746f6373696e

// ErrNotCurrent is returned by Check when migrations are missing.
var ErrNotCurrent = errors.New("database schema is not current: run `tocsin migrate`")

type migration struct {
	version string
	sql     string
}

func load() ([]migration, error) {
	names, err := fs.Glob(migrations.FS, "*.sql")
	if err != nil {
		return nil, err
	}
	sort.Strings(names)
	out := make([]migration, 0, len(names))
	for _, n := range names {
		b, err := fs.ReadFile(migrations.FS, n)
		if err != nil {
			return nil, err
		}
		out = append(out, migration{version: strings.TrimSuffix(n, ".sql"), sql: string(b)})
	}
	return out, nil
}

// Up applies every pending migration. It returns the versions it applied.
func Up(ctx context.Context, pool *pgxpool.Pool) ([]string, error) {
	return UpThrough(ctx, pool, "")
}

// UpThrough is Up that stops after Tocsin's migration last ("0040_debezium"; "" applies
// them all): tests build the database an older release left behind, then upgrade it.
func UpThrough(ctx context.Context, pool *pgxpool.Pool, last string) ([]string, error) {
	all, err := load()
	if err != nil {
		return nil, fmt.Errorf("reading migrations: %w", err)
	}
	if last != "" {
		i := slices.IndexFunc(all, func(m migration) bool { return m.version == last })
		if i < 0 {
			return nil, fmt.Errorf("no migration %q", last)
		}
		all = all[:i+1]
	}
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return nil, fmt.Errorf("acquiring a connection to migrate: %w", err)
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, migrateLockSQL, lockKey); err != nil {
		return nil, fmt.Errorf("taking the migration lock: %w", err)
	}
	defer func() { _, _ = conn.Exec(context.WithoutCancel(ctx), migrateUnlockSQL, lockKey) }()

	// 0001 creates the schema and the ledger; it is idempotent on its own.
	if _, err := conn.Exec(ctx, all[0].sql+"\n"+schemaMigrationCreateSQL); err != nil {
		return nil, fmt.Errorf("applying %s: %w", all[0].version, err)
	}
	var applied []string
	if ok, err := record(ctx, conn.Conn(), all[0].version); err != nil {
		return nil, err
	} else if ok {
		applied = append(applied, all[0].version)
	}

	migrator, err := rivermigrate.New(riverpgxv5.New(pool), &rivermigrate.Config{Schema: Schema})
	if err != nil {
		return nil, fmt.Errorf("preparing River migrations: %w", err)
	}
	res, err := migrator.Migrate(ctx, rivermigrate.DirectionUp, nil)
	if err != nil {
		return nil, fmt.Errorf("applying River migrations: %w", err)
	}
	for _, v := range res.Versions {
		applied = append(applied, fmt.Sprintf("river/%03d_%s", v.Version, v.Name))
	}

	for _, m := range all[1:] {
		err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			var done bool
			if err := tx.QueryRow(ctx, schemaMigrationAppliedSQL, m.version).Scan(&done); err != nil || done {
				return err
			}
			if _, err := tx.Exec(ctx, m.sql); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, schemaMigrationRecordSQL, m.version)
			if err == nil {
				applied = append(applied, m.version)
			}
			return err
		})
		if err != nil {
			return applied, fmt.Errorf("applying migration %s: %w", m.version, err)
		}
	}
	return applied, nil
}

func record(ctx context.Context, conn *pgx.Conn, version string) (bool, error) {
	tag, err := conn.Exec(ctx, schemaMigrationRecordOnceSQL, version)
	if err != nil {
		return false, fmt.Errorf("recording migration %s: %w", version, err)
	}
	return tag.RowsAffected() == 1, nil
}

// Check returns ErrNotCurrent unless every Tocsin and River migration has been applied.
func Check(ctx context.Context, pool *pgxpool.Pool) error {
	all, err := load()
	if err != nil {
		return err
	}
	var n int
	err = pool.QueryRow(ctx, schemaMigrationCountSQL).Scan(&n)
	if err != nil {
		var exists bool
		if qerr := pool.QueryRow(ctx, schemaMigrationExistsSQL).Scan(&exists); qerr == nil && !exists {
			return ErrNotCurrent
		}
		return fmt.Errorf("reading applied migrations: %w", err)
	}
	if n < len(all) {
		return ErrNotCurrent
	}
	migrator, err := rivermigrate.New(riverpgxv5.New(pool), &rivermigrate.Config{Schema: Schema})
	if err != nil {
		return err
	}
	res, err := migrator.Validate(ctx, nil)
	if err != nil {
		return fmt.Errorf("validating River migrations: %w", err)
	}
	if !res.OK {
		return fmt.Errorf("%w (%s)", ErrNotCurrent, strings.Join(res.Messages, "; "))
	}
	return nil
}
