package routes_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/tocsin/tocsin/internal/routes"
)

func TestCheck(t *testing.T) {
	t.Parallel()
	b := setup(t)
	tests := []struct {
		name string
		src  string
		want string
	}{
		{"valid", `
routes:
  - name: r
    table: public.comment
    recipients: { sql: "select user_id from portfolio_member where portfolio_id = :portfolio_id and role <> :body" }
    topic: t
    payload: full
    columns: [id, body, doc]
    when_changed: [status]
    on: [insert, delete, update]
    group: { window: 1m, by: [portfolio_id] }
`, `routes.yaml:8: route "r": columns[2]: column "doc" cannot be compared, so its changes cannot be detected: operator does not exist: json = json`},
		{"json column without updates", `
routes:
  - name: r
    table: comment
    on: [insert]
    recipients: { column: owner_id }
    topic: t
    payload: full
    columns: [id, doc]
`, ``},
		{"unknown table", `
routes:
  - name: r
    table: nope
    recipients: { column: owner_id }
    topic: t
`, `routes.yaml:4: route "r": table: table "public.nope" does not exist`},
		{"unknown schema", `
routes:
  - name: r
    table: app.comment
    recipients: { column: owner_id }
    topic: t
`, `routes.yaml:4: route "r": table: table "app.comment" does not exist`},
		{"case is not folded", `
routes:
  - name: r
    table: Comment
    recipients: { column: owner_id }
    topic: t
`, `routes.yaml:4: route "r": table: table "public.Comment" does not exist`},
		{"view", `
routes:
  - name: r
    table: comment_view
    recipients: { column: owner_id }
    topic: t
`, `routes.yaml:4: route "r": table: "public.comment_view" is not a table (relkind "v")`},
		{"tocsin table", `
routes:
  - name: r
    table: tocsin.outbox
    recipients: { column: recipient }
    topic: t
`, `routes.yaml:4: route "r": table: "tocsin.outbox" is one of Tocsin's own tables`},
		{"system catalog", `
routes:
  - name: r
    table: pg_catalog.pg_class
    recipients: { column: relname }
    topic: t
`, `routes.yaml:4: route "r": table: "pg_catalog.pg_class" is a system catalog`},
		{"no primary key", `
routes:
  - name: r
    table: no_key
    recipients: { column: owner_id }
    topic: t
`, `routes.yaml:4: route "r": table: table "public.no_key" has no primary key (entries carry the row's key)`},
		{"unknown columns", `
routes:
  - name: r
    table: comment
    recipients:
      column: owner
    topic: t
    payload: full
    columns:
      - id
      - text
    when_changed: [state]
    group:
      window: 1m
      by: [portfolio]
`, `routes.yaml:6: route "r": recipients.column: column "owner" does not exist in table "public.comment"
routes.yaml:11: route "r": columns[1]: column "text" does not exist in table "public.comment"
routes.yaml:12: route "r": when_changed[0]: column "state" does not exist in table "public.comment"
routes.yaml:15: route "r": group.by[0]: column "portfolio" does not exist in table "public.comment"`},
		{"sql placeholder not a column", `
routes:
  - name: r
    table: comment
    recipients: { sql: "select user_id from portfolio_member where portfolio_id = :portfolio" }
    topic: t
`, `routes.yaml:5: route "r": recipients.sql: placeholder :portfolio is not a column of table "public.comment"`},
		{"sql does not compile", `
routes:
  - name: r
    table: comment
    recipients:
      sql: select user_id from portfolio_members where portfolio_id = :portfolio_id
    topic: t
`, `routes.yaml:6: route "r": recipients.sql: does not compile: relation "portfolio_members" does not exist`},
		{"sql type mismatch", `
routes:
  - name: r
    table: comment
    recipients:
      sql: select user_id from portfolio_member where portfolio_id = :body
    topic: t
`, `routes.yaml:6: route "r": recipients.sql: does not compile: operator does not exist: bigint = text`},
		{"sql two columns", `
routes:
  - name: r
    table: comment
    recipients:
      sql: select user_id, role from portfolio_member where portfolio_id = :portfolio_id
    topic: t
`, `routes.yaml:6: route "r": recipients.sql: returns 2 columns, want exactly 1 (the recipient)`},
		{"sql is not a query", `
routes:
  - name: r
    table: comment
    recipients:
      sql: delete from portfolio_member returning user_id
    topic: t
`, `routes.yaml:6: route "r": recipients.sql: does not compile: syntax error at or near "from"`},
		{"sql two statements", `
routes:
  - name: r
    table: comment
    recipients:
      sql: select 'a'; select 'b'
    topic: t
`, `routes.yaml:6: route "r": recipients.sql: does not compile: syntax error at or near ";"`},
		{"several routes", `
routes:
  - name: a
    table: nope
    recipients: { column: owner_id }
    topic: t
  - name: b
    table: comment
    recipients: { column: nobody }
    topic: t
`, `routes.yaml:4: route "a": table: table "public.nope" does not exist
routes.yaml:9: route "b": recipients.column: column "nobody" does not exist in table "public.comment"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f, err := routes.Parse("routes.yaml", []byte(tt.src))
			require.NoError(t, err)
			err = routes.Check(b.ctx, b.pool, f)
			if tt.want == "" {
				require.NoError(t, err)
				return
			}
			require.EqualError(t, err, tt.want)
			var re *routes.Error
			require.ErrorAs(t, err, &re)
		})
	}
	var n int
	require.NoError(t, b.pool.QueryRow(b.ctx, `SELECT count(*) FROM tocsin.route`).Scan(&n))
	require.Zero(t, n, "check changes nothing")
}
