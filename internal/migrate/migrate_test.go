package migrate_test

import (
	"context"
	"io/fs"
	"regexp"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"
	"golang.org/x/sync/errgroup"

	"github.com/tocsin/tocsin/internal/migrate"
	"github.com/tocsin/tocsin/internal/pgtest"
	"github.com/tocsin/tocsin/internal/routes"
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

// A database upgraded across 0060 (outbox rows name their route by id) sequences every row
// the same way: rows already in the outbox when it migrates, rows that a trigger generated
// before it still writes until the routes are applied again, and rows of the regenerated
// trigger, which carry only the route operation's id.
func TestUpgradeAcrossRouteOpSequencesEveryOutboxRow(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.New(t)
	exec := func(sql string, args ...any) {
		t.Helper()
		_, err := db.Pool.Exec(ctx, sql, args...)
		require.NoError(t, err)
	}
	exec("DROP SCHEMA tocsin CASCADE")
	_, err := migrate.UpThrough(ctx, db.Pool, "0040_debezium")
	require.NoError(t, err)

	// A route's trigger as the release before 0060 generated it.
	exec(`CREATE TABLE public.comment (id int PRIMARY KEY, owner_id text, body text)`)
	exec(`CREATE FUNCTION tocsin."route:comments"() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
		    IF NEW."owner_id"::text <> '' THEN
		        INSERT INTO tocsin.outbox (recipient, route, topic, kind, op, table_name, key, data, old, changed, group_key)
		        VALUES (NEW."owner_id"::text, 'comments', 'comment', 'notification', 'insert', 'public.comment',
		                jsonb_build_object('id', NEW."id"), NULL, NULL, NULL, NULL);
		    END IF;
		    RETURN NULL;
		END; $$`)
	exec(`CREATE TRIGGER "tocsin:comments" AFTER INSERT ON public.comment
		FOR EACH ROW EXECUTE FUNCTION tocsin."route:comments"()`)
	exec(`INSERT INTO public.comment VALUES (1, 'alice', 'before')`)
	// What tocsin.publish wrote then (its definition moved to 0060 with the change).
	exec(`INSERT INTO tocsin.outbox (recipient, route, topic, kind, op, table_name, key, data, old, changed, group_key)
		VALUES ('alice', NULL, 'hello', 'message', NULL, NULL, NULL, '{"n": 1}', NULL, NULL, NULL)`)

	applied, err := migrate.Up(ctx, db.Pool)
	require.NoError(t, err)
	require.Contains(t, applied, "0060_outbox_route_op_sequence_take_publish")

	exec(`INSERT INTO public.comment VALUES (2, 'bob', 'old trigger, new schema')`)
	f, err := routes.Parse("routes.yaml", []byte(`
routes:
  - name: comments
    table: public.comment
    on: [insert]
    recipients: { column: owner_id }
    topic: comment
    kind: notification
`))
	require.NoError(t, err)
	_, err = routes.Apply(ctx, db.Pool, f)
	require.NoError(t, err)
	exec(`INSERT INTO public.comment VALUES (3, 'carol', 'new trigger')`)
	exec(`SELECT tocsin.publish(ARRAY['carol'], 'hello', '{"n": 2}')`)

	// Two rows in the text form, then the regenerated trigger's row with its id alone.
	var forms []string
	require.NoError(t, db.Pool.QueryRow(ctx, `SELECT array_agg(CASE WHEN route_op IS NULL THEN coalesce(route, '-')
		    ELSE 'id' || CASE WHEN num_nulls(route, topic, kind, op, table_name) = 5 THEN '' ELSE '+text' END END
		    ORDER BY id) FROM tocsin.outbox`).Scan(&forms))
	require.Equal(t, []string{"comments", "-", "comments", "id", "-"}, forms)

	exec(`SELECT * FROM tocsin.sequence_batch(1000, '30 seconds', 50)`)
	rows, err := db.Pool.Query(ctx, `SELECT f.recipient, coalesce(f.route, ''), f.topic, f.kind, coalesce(f.op, ''),
		       coalesce(f.table_name, ''), coalesce(f.key::text, ''), coalesce(f.data::text, ''),
		       EXISTS (SELECT 1 FROM tocsin.inbox i WHERE i.position = f.position AND i.route = coalesce(f.route, ''))
		FROM tocsin.feed f ORDER BY f.position`)
	require.NoError(t, err)
	type entry struct {
		Recipient, Route, Topic, Kind, Op, Table, Key, Data string
		Inboxed                                             bool
	}
	got, err := pgx.CollectRows(rows, pgx.RowToStructByPos[entry])
	require.NoError(t, err)
	comment := func(recipient, key string) entry {
		return entry{recipient, "comments", "comment", "notification", "insert", "public.comment", key, "", true}
	}
	require.Equal(t, []entry{
		comment("alice", `{"id": 1}`),
		{"alice", "", "hello", "message", "", "", "", `{"n": 1}`, true},
		comment("bob", `{"id": 2}`),
		comment("carol", `{"id": 3}`),
		{"carol", "", "hello", "message", "", "", "", `{"n": 2}`, true},
	}, got)
	var left int
	require.NoError(t, db.Pool.QueryRow(ctx, `SELECT count(*) FROM tocsin.outbox`).Scan(&left))
	require.Zero(t, left)
}
