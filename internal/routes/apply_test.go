package routes_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"
	"golang.org/x/sync/errgroup"

	"github.com/tocsin/tocsin/internal/routes"
)

const twoRoutes = `
routes:
  - name: comments
    table: comment
    recipients: { column: owner_id }
    topic: comment
    group: { window: 30s, by: [portfolio_id] }
  - name: members
    table: comment
    on: [insert]
    recipients: { sql: "select user_id from portfolio_member where portfolio_id = :portfolio_id" }
    topic: comment
`

// installed is what the catalog holds for the routes: each route row with its function
// and triggers, and the identity of the catalog rows (so that a rewrite shows).
type installed struct {
	Name      string
	TableName string
	Spec      string
	AppliedAt string
	Function  *string // oid and xmin of the pg_proc row
	Triggers  []string
}

func (b *bundle) installed(t *testing.T) []installed {
	t.Helper()
	rows, err := b.pool.Query(b.ctx, `
		SELECT r.name, r.table_name, r.spec::text, r.applied_at::text,
		       (SELECT p.oid::text || '/' || p.xmin::text FROM pg_proc p
		        WHERE p.oid = to_regprocedure(format('tocsin.%I()', 'route:' || r.name))),
		       ARRAY(SELECT t.tgrelid::regclass::text || ' ' || t.tgname || ' ' || t.oid::text || '/' || t.xmin::text
		             FROM pg_trigger t WHERE t.tgname = 'tocsin:' || r.name ORDER BY 1)
		FROM tocsin.route r ORDER BY r.name`)
	require.NoError(t, err)
	out, err := pgx.CollectRows(rows, pgx.RowToStructByPos[installed])
	require.NoError(t, err)
	return out
}

// routeObjects counts the functions and triggers Tocsin generated, whatever their route.
func (b *bundle) routeObjects(t *testing.T) (functions, triggers int) {
	t.Helper()
	require.NoError(t, b.pool.QueryRow(b.ctx, `
		SELECT (SELECT count(*) FROM pg_proc WHERE pronamespace = 'tocsin'::regnamespace AND proname LIKE 'route:%'),
		       (SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'tocsin:%')`).Scan(&functions, &triggers))
	return functions, triggers
}

func TestApplyIsIdempotent(t *testing.T) {
	t.Parallel()
	b := setup(t)
	s := b.apply(t, twoRoutes)
	require.Equal(t, routes.Summary{Created: []string{"comments", "members"}}, s)
	require.True(t, s.Changed())
	before := b.installed(t)
	require.Len(t, before, 2)
	for _, r := range before {
		require.NotNil(t, r.Function)
		require.Len(t, r.Triggers, 1)
	}

	s = b.apply(t, twoRoutes)
	require.Equal(t, routes.Summary{Unchanged: []string{"comments", "members"}}, s)
	require.False(t, s.Changed())
	require.Equal(t, before, b.installed(t), "a second apply rewrites nothing")

	var spec map[string]any
	require.NoError(t, json.Unmarshal([]byte(before[0].Spec), &spec))
	require.Equal(t, map[string]any{"window": "30s", "window_seconds": float64(30), "by": []any{"portfolio_id"}, "max": float64(50)}, spec["group"])
	require.Equal(t, []any{"id"}, spec["key"])
	require.Equal(t, "public.comment", before[0].TableName)
}

func TestApplyUpdatesAndRemoves(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.apply(t, twoRoutes)
	before := b.installed(t)

	// comments moves to portfolio; members goes away; audit is new.
	s := b.apply(t, `
routes:
  - name: comments
    table: portfolio
    on: [update]
    recipients: { column: owner_id }
    topic: portfolio
  - name: audit
    table: comment
    recipients: { static: [service:audit] }
    topic: comment
`)
	require.Equal(t, routes.Summary{Created: []string{"audit"}, Updated: []string{"comments"}, Removed: []string{"members"}}, s)
	after := b.installed(t)
	require.Len(t, after, 2)
	require.Equal(t, "audit", after[0].Name)
	require.Equal(t, "comments", after[1].Name)
	require.Equal(t, "public.portfolio", after[1].TableName)
	require.Len(t, after[1].Triggers, 1)
	require.Contains(t, after[1].Triggers[0], "portfolio tocsin:comments ")
	oid := func(s *string) string { return strings.Split(*s, "/")[0] }
	require.Equal(t, oid(before[0].Function), oid(after[1].Function), "the function is replaced in place")
	require.NotEqual(t, *before[0].Function, *after[1].Function)
	functions, triggers := b.routeObjects(t)
	require.Equal(t, 2, functions, "members lost its function")
	require.Equal(t, 2, triggers, "members lost its trigger; comments left the comment table")

	b.exec(t, `INSERT INTO comment (id, portfolio_id, owner_id) VALUES (1, 1, 'alice')`)
	b.exec(t, `UPDATE portfolio SET owner_id = 'erin' WHERE id = 2`)
	got := b.drain(t)
	require.Len(t, got, 3)
	require.Equal(t, []string{"bob", "erin", "service:audit"}, []string{got[0].Recipient, got[1].Recipient, got[2].Recipient})
	require.Equal(t, "portfolio", got[0].Topic)

	// An empty file removes everything.
	s = b.apply(t, "routes: []\n")
	require.Equal(t, routes.Summary{Removed: []string{"audit", "comments"}}, s)
	require.Empty(t, b.installed(t))
	functions, triggers = b.routeObjects(t)
	require.Zero(t, functions)
	require.Zero(t, triggers)
	b.exec(t, `INSERT INTO comment (id, owner_id) VALUES (2, 'alice')`)
	require.Empty(t, b.drain(t))
}

// A trigger dropped by hand is noticed and put back.
func TestApplyRepairsDroppedTrigger(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.apply(t, twoRoutes)
	b.exec(t, `DROP TRIGGER "tocsin:comments" ON comment`)
	require.Equal(t, routes.Summary{Updated: []string{"comments"}, Unchanged: []string{"members"}}, b.apply(t, twoRoutes))
	b.exec(t, `INSERT INTO comment (id, owner_id) VALUES (1, 'alice')`)
	require.Len(t, b.drain(t), 1)
}

func TestApplyFailureChangesNothing(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.apply(t, twoRoutes)
	before := b.installed(t)
	changed := `
routes:
  - name: comments
    table: comment
    recipients: { column: owner_id }
    topic: renamed
  - name: new-one
    table: portfolio
    recipients: { column: owner_id }
    topic: portfolio
`
	f, err := routes.Parse("routes.yaml", []byte(changed+`
  - name: broken
    table: comment
    recipients: { column: nobody }
    topic: comment
`))
	require.NoError(t, err)
	s, err := routes.Apply(b.ctx, b.pool, f)
	require.EqualError(t, err, `routes.yaml:14: route "broken": recipients.column: column "nobody" does not exist in table "public.comment"`)
	require.Equal(t, routes.Summary{}, s)
	require.Equal(t, before, b.installed(t))

	// A failure past the check (a trigger of that name already exists) rolls back the
	// routes installed before it too.
	b.exec(t, `CREATE FUNCTION noop() RETURNS trigger LANGUAGE plpgsql AS 'BEGIN RETURN NULL; END'`)
	b.exec(t, `CREATE TRIGGER "tocsin:new-one" AFTER INSERT ON portfolio FOR EACH ROW EXECUTE FUNCTION noop()`)
	f, err = routes.Parse("routes.yaml", []byte(changed))
	require.NoError(t, err)
	_, err = routes.Apply(b.ctx, b.pool, f)
	require.ErrorContains(t, err, `creating the trigger of route "new-one": ERROR: trigger "tocsin:new-one" for relation "portfolio" already exists`)
	require.Equal(t, before, b.installed(t))
	functions, triggers := b.routeObjects(t)
	require.Equal(t, 2, functions)
	require.Equal(t, 3, triggers, "the two routes' and the user's own")
}

func TestApplyConcurrently(t *testing.T) {
	t.Parallel()
	b := setup(t)
	f, err := routes.Parse("routes.yaml", []byte(twoRoutes))
	require.NoError(t, err)
	summaries := make([]routes.Summary, 4)
	var g errgroup.Group
	for i := range summaries {
		g.Go(func() error {
			var err error
			summaries[i], err = routes.Apply(b.ctx, b.pool, f)
			return err
		})
	}
	require.NoError(t, g.Wait())
	created := 0
	for _, s := range summaries {
		if s.Changed() {
			created++
			require.Equal(t, []string{"comments", "members"}, s.Created)
		} else {
			require.Equal(t, []string{"comments", "members"}, s.Unchanged)
		}
	}
	require.Equal(t, 1, created)
	require.Len(t, b.installed(t), 2)
}

func TestApplyTxJoinsCallerTransaction(t *testing.T) {
	t.Parallel()
	b := setup(t)
	f, err := routes.Parse("routes.yaml", []byte(twoRoutes))
	require.NoError(t, err)
	tx, err := b.pool.Begin(b.ctx)
	require.NoError(t, err)
	s, err := routes.ApplyTx(b.ctx, tx, f)
	require.NoError(t, err)
	require.Len(t, s.Created, 2)
	require.NoError(t, tx.Rollback(b.ctx))
	require.Empty(t, b.installed(t))
}

func TestSummaryString(t *testing.T) {
	t.Parallel()
	s := routes.Summary{Created: []string{"a"}, Updated: []string{"b"}, Removed: []string{"c", "d"}, Unchanged: []string{"e"}}
	require.Equal(t, "created route \"a\"\nupdated route \"b\"\nremoved route \"c\"\nremoved route \"d\"\n"+
		"1 created, 1 updated, 2 removed, 1 unchanged\n", s.String())
}

// Each (route, operation) keeps its tocsin.route_op id while its topic, kind and table stay
// the same; a change takes a new id, and rows captured before it keep the values they were
// captured with, also after the route is gone.
func TestRouteOpsKeepTheirIDs(t *testing.T) {
	t.Parallel()
	b := setup(t)
	const route = `
routes:
  - name: comments
    table: public.comment
    on: [insert, delete]
    recipients: { column: owner_id }
    topic: %s
`
	ids := func() map[string]int32 {
		rows, err := b.pool.Query(b.ctx, `SELECT op || ' ' || topic, id FROM tocsin.route_op WHERE route = 'comments'`)
		require.NoError(t, err)
		out := map[string]int32{}
		var (
			k  string
			id int32
		)
		_, err = pgx.ForEachRow(rows, []any{&k, &id}, func() error { out[k] = id; return nil })
		require.NoError(t, err)
		return out
	}
	b.apply(t, fmt.Sprintf(route, "comment"))
	first := ids()
	require.Len(t, first, 2)
	b.exec(t, `INSERT INTO comment (id, owner_id) VALUES (1, 'alice')`)
	b.apply(t, fmt.Sprintf(route, "comment")+"    kind: change\n") // the default kind: unchanged
	require.Equal(t, first, ids())

	b.apply(t, fmt.Sprintf(route, "remark"))
	second := ids()
	require.Len(t, second, 4)
	require.Equal(t, first["insert comment"], second["insert comment"])
	require.NotEqual(t, first["insert comment"], second["insert remark"])
	b.exec(t, `DELETE FROM comment WHERE id = 1`)
	b.apply(t, "routes: []\n")

	got := b.drain(t)
	require.Len(t, got, 2)
	require.Equal(t, []string{"insert comment", "delete remark"},
		[]string{got[0].Op + " " + got[0].Topic, got[1].Op + " " + got[1].Topic})
}
