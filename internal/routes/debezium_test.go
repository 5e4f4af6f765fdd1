package routes_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/tocsin/tocsin/internal/routes"
)

// TestDebeziumRoutes checks a debezium route against Tocsin's catalog when its table is
// there, checks the file alone (and says so) when it is not, and installs no trigger.
func TestDebeziumRoutes(t *testing.T) {
	t.Parallel()
	b := setup(t)
	parse := func(src string) *routes.File {
		f, err := routes.Parse("routes.yaml", []byte(src))
		require.NoError(t, err)
		return f
	}
	// The table is in Tocsin's database: checked like any route.
	f := parse(`
routes:
  - name: here
    table: comment
    recipients: { column: owner }
    topic: t
    capture: debezium
`)
	require.EqualError(t, routes.Check(b.ctx, b.pool, f),
		`routes.yaml:5: route "here": recipients.column: column "owner" does not exist in table "public.comment"`)

	// The table lives in the application's database only.
	f = parse(`
routes:
  - name: elsewhere
    table: app.invoice
    recipients: { sql: "select user_id from portfolio_member where portfolio_id = :portfolio_id" }
    topic: invoice
    when_changed: [status]
    capture: debezium
    snapshot: true
`)
	require.NoError(t, routes.Check(b.ctx, b.pool, f))
	require.Equal(t, []string{`routes.yaml:4: route "elsewhere": table "app.invoice" is not in Tocsin's database: ` +
		`checked the file alone (columns are taken from Debezium's events)`}, f.Notes)
	s, err := routes.Apply(b.ctx, b.pool, f)
	require.NoError(t, err)
	require.Equal(t, []string{"elsewhere"}, s.Created)
	require.Equal(t, f.Notes, s.Notes)
	var capture string
	var snapshot bool
	require.NoError(t, b.pool.QueryRow(b.ctx, `SELECT capture, (spec->>'snapshot')::bool FROM tocsin.route WHERE name = 'elsewhere'`).
		Scan(&capture, &snapshot))
	require.Equal(t, "debezium", capture)
	require.True(t, snapshot)
	var functions int
	require.NoError(t, b.pool.QueryRow(b.ctx, `SELECT count(*) FROM pg_proc WHERE proname LIKE 'route:%'`).Scan(&functions))
	require.Zero(t, functions, "no trigger function")
	again, err := routes.Apply(b.ctx, b.pool, f)
	require.NoError(t, err)
	require.Equal(t, []string{"elsewhere"}, again.Unchanged)

	// Without the catalog a recipient query still has to compile.
	f = parse(`
routes:
  - name: broken
    table: app.invoice
    recipients: { sql: "select user_id from no_such_table where id = :id" }
    topic: invoice
    capture: debezium
`)
	require.EqualError(t, routes.Check(b.ctx, b.pool, f),
		`routes.yaml:5: route "broken": recipients.sql: does not compile: relation "no_such_table" does not exist`)
}
