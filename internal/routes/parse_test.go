package routes_test

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tocsin/tocsin/internal/routes"
)

func TestParseFullRoute(t *testing.T) {
	t.Parallel()
	_, err := routes.Parse("routes.yaml", []byte(`
routes:
  - name: comment-on-my-portfolio
    table: public.comment
    on: [delete, insert]
    recipients:
      column: owner_id
    topic: comment
    kind: notification
    payload: full
    columns: [id, portfolio_id, body]
    when_changed: [status]
    group: { window: 30s, by: [portfolio_id] }
    capture: trigger
  - name: defaults
    table: comment
    recipients: { static: ["service:authz", "service:audit"] }
    topic: comment
`))
	require.Error(t, err, "when_changed without update is refused")
	require.EqualError(t, err, `routes.yaml:12: route "comment-on-my-portfolio": when_changed: has no effect: the route does not fire on update`)

	f, err := routes.Parse("routes.yaml", []byte(`
routes:
  - name: comment-on-my-portfolio
    table: public.comment
    on: [update, delete, insert]
    recipients:
      sql: select user_id from portfolio_member where portfolio_id = :portfolio_id;
    topic: comment
    kind: notification
    payload: full
    columns: [id, portfolio_id, body]
    when_changed: [status]
    group: { window: 30s, by: [portfolio_id], max: 7 }
    capture: trigger
  - name: defaults
    table: comment
    recipients: { static: ["service:authz", "service:audit"] }
    topic: comment
`))
	require.NoError(t, err)
	require.Equal(t, "routes.yaml", f.Name)
	require.Len(t, f.Routes, 2)
	r := f.Routes[0]
	require.Equal(t, "comment-on-my-portfolio", r.Name)
	require.Equal(t, 3, r.Line)
	require.Equal(t, routes.Table{Schema: "public", Name: "comment"}, r.Table)
	require.Equal(t, []routes.Op{routes.OpInsert, routes.OpUpdate, routes.OpDelete}, r.On, "operations in canonical order")
	require.Equal(t, "select user_id from portfolio_member where portfolio_id = :portfolio_id", r.Recipients.SQL, "trailing semicolon dropped")
	require.Equal(t, routes.KindNotification, r.Kind)
	require.Equal(t, routes.PayloadFull, r.Payload)
	require.Equal(t, []string{"id", "portfolio_id", "body"}, r.Columns)
	require.Equal(t, []string{"status"}, r.WhenChanged)
	require.Equal(t, &routes.Group{Window: 30 * time.Second, By: []string{"portfolio_id"}, Max: 7}, r.Group)
	require.Equal(t, routes.CaptureTrigger, r.Capture)

	d := f.Routes[1]
	require.Equal(t, routes.Table{Schema: "public", Name: "comment"}, d.Table)
	require.Equal(t, []routes.Op{routes.OpInsert, routes.OpUpdate, routes.OpDelete}, d.On)
	require.Equal(t, []string{"service:authz", "service:audit"}, d.Recipients.Static)
	require.Equal(t, routes.KindChange, d.Kind)
	require.Equal(t, routes.PayloadKeys, d.Payload)
	require.Nil(t, d.Group)
	require.Equal(t, routes.CaptureTrigger, d.Capture)
}

func TestParseEmptyRoutes(t *testing.T) {
	t.Parallel()
	for _, src := range []string{"routes: []\n", "routes:\n"} {
		f, err := routes.Parse("routes.yaml", []byte(src))
		require.NoError(t, err, src)
		require.Empty(t, f.Routes)
	}
}

func TestParseFile(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "r.yaml")
	require.NoError(t, os.WriteFile(path, []byte("routes:\n  - name: x\n"), 0o600))
	_, err := routes.ParseFile(path)
	require.ErrorContains(t, err, path+`:2: route "x": table: is required`)

	_, err = routes.ParseFile(filepath.Join(t.TempDir(), "missing.yaml"))
	require.ErrorContains(t, err, "reading routes file: ")
	require.ErrorIs(t, err, os.ErrNotExist)
}

// route is a valid route body; each case below breaks it one field at a time.
const okRoute = `routes:
  - name: r
    table: comment
    recipients: { column: owner_id }
    topic: t
`

func TestParseErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		src  string
		want string
	}{
		{"empty file", ``, `routes.yaml:1: routes: is required (the file is empty)`},
		{"bad yaml", "routes: [\n", `routes.yaml:1: invalid YAML: did not find expected node content`},
		{"tabs", "routes:\n\t- name: r\n", `routes.yaml:2: invalid YAML: found character that cannot start any token`},
		// yaml.v3 itself says line 1 for these: the error is on the line at fault.
		{"bad indentation", okRoute + "   kind: change\n", `routes.yaml:6: invalid YAML: did not find expected '-' indicator`},
		{"key outdented", okRoute + "  kind: change\n", `routes.yaml:6: invalid YAML: did not find expected '-' indicator`},
		{"list item in a mapping", okRoute + "    - payload\n", `routes.yaml:6: invalid YAML: did not find expected key`},
		{"unknown anchor", okRoute + "    kind: *x\n", `routes.yaml:6: invalid YAML: unknown anchor 'x' referenced`},
		{"unclosed flow list", okRoute + "    on: [insert\n    kind: change\n",
			`routes.yaml:6: invalid YAML: did not find expected ',' or ']'`},
		{"not a mapping", "- a\n", `routes.yaml:1: want a mapping with a routes list`},
		{"no routes", "other: 1\n", "routes.yaml:1: other: unknown field\nroutes.yaml:1: routes: is required"},
		{"routes not a list", "routes: {a: 1}\n", `routes.yaml:1: routes: must be a list`},
		{"route not a mapping", "routes:\n  - just-a-name\n", `routes.yaml:2: route #1: must be a mapping`},
		{"unknown field", okRoute + "    colour: red\n", `routes.yaml:6: route "r": colour: unknown field`},
		{"field twice", okRoute + "    topic: u\n", `routes.yaml:6: route "r": topic: appears twice`},

		{"name missing", "routes:\n  - table: comment\n    recipients: { column: owner_id }\n    topic: t\n",
			`routes.yaml:2: route #1: name: is required`},
		{"name invalid", "routes:\n  - name: Bad Name\n    table: comment\n    recipients: { column: owner_id }\n    topic: t\n",
			`routes.yaml:2: route "Bad Name": name: must match ^[a-z][a-z0-9_-]{0,47}$, got "Bad Name"`},
		{"name too long", "routes:\n  - name: a234567890123456789012345678901234567890123456789\n    table: comment\n    recipients: { column: owner_id }\n    topic: t\n",
			`routes.yaml:2: route "a234567890123456789012345678901234567890123456789": name: must match ^[a-z][a-z0-9_-]{0,47}$, got "a234567890123456789012345678901234567890123456789"`},
		{"name not a string", "routes:\n  - name: [a]\n    table: comment\n    recipients: { column: owner_id }\n    topic: t\n",
			"routes.yaml:2: route #1: name: must be a string\nroutes.yaml:2: route #1: name: is required"},
		{"name duplicated", okRoute + "  - name: r\n    table: comment\n    recipients: { column: owner_id }\n    topic: t\n",
			`routes.yaml:6: route "r": name: duplicates the route on line 2`},

		{"table missing", "routes:\n  - name: r\n    recipients: { column: owner_id }\n    topic: t\n",
			`routes.yaml:2: route "r": table: is required`},
		{"table too dotted", "routes:\n  - name: r\n    table: a.b.c\n    recipients: { column: owner_id }\n    topic: t\n",
			`routes.yaml:3: route "r": table: must be table or schema.table, got "a.b.c"`},
		{"table empty schema", "routes:\n  - name: r\n    table: .b\n    recipients: { column: owner_id }\n    topic: t\n",
			`routes.yaml:3: route "r": table: must be table or schema.table, got ".b"`},

		{"on unknown", okRoute + "    on: [insert, upsert]\n", `routes.yaml:6: route "r": on: unknown operation "upsert" (want insert, update or delete)`},
		{"on empty", okRoute + "    on: []\n", `routes.yaml:6: route "r": on: must list at least one of insert, update, delete`},
		{"on scalar", okRoute + "    on: insert\n", `routes.yaml:6: route "r": on: must be a list`},
		{"on twice", okRoute + "    on:\n      - insert\n      - insert\n", `routes.yaml:8: route "r": on: lists "insert" twice`},

		{"recipients missing", "routes:\n  - name: r\n    table: comment\n    topic: t\n",
			`routes.yaml:2: route "r": recipients: is required (one of column, sql, static)`},
		{"recipients scalar", "routes:\n  - name: r\n    table: comment\n    recipients: owner_id\n    topic: t\n",
			`routes.yaml:4: route "r": recipients: must be a mapping with one of column, sql, static`},
		{"recipients none", "routes:\n  - name: r\n    table: comment\n    recipients: {}\n    topic: t\n",
			`routes.yaml:4: route "r": recipients: must set exactly one of column, sql, static (got 0)`},
		{"recipients two", "routes:\n  - name: r\n    table: comment\n    recipients:\n      column: owner_id\n      static: [a]\n    topic: t\n",
			`routes.yaml:5: route "r": recipients: must set exactly one of column, sql, static (got 2)`},
		{"recipients unknown", "routes:\n  - name: r\n    table: comment\n    recipients:\n      column: owner_id\n      user: x\n    topic: t\n",
			`routes.yaml:6: route "r": recipients.user: unknown field`},
		{"recipients.column empty", "routes:\n  - name: r\n    table: comment\n    recipients:\n      column: ''\n    topic: t\n",
			`routes.yaml:5: route "r": recipients.column: must name a column`},
		{"recipients.column list", "routes:\n  - name: r\n    table: comment\n    recipients:\n      column: [a, b]\n    topic: t\n",
			`routes.yaml:5: route "r": recipients.column: must be a string`},
		{"recipients.sql empty", "routes:\n  - name: r\n    table: comment\n    recipients:\n      sql: ' ; '\n    topic: t\n",
			`routes.yaml:5: route "r": recipients.sql: must be a query`},
		{"recipients.sql unterminated string", "routes:\n  - name: r\n    table: comment\n    recipients:\n      sql: select 'a:b\n    topic: t\n",
			`routes.yaml:5: route "r": recipients.sql: unterminated string at offset 7`},
		{"recipients.sql unterminated identifier", "routes:\n  - name: r\n    table: comment\n    recipients:\n      sql: select \"a\n    topic: t\n",
			`routes.yaml:5: route "r": recipients.sql: unterminated quoted identifier at offset 7`},
		{"recipients.sql unterminated comment", "routes:\n  - name: r\n    table: comment\n    recipients:\n      sql: select 1 /* :a /* */\n    topic: t\n",
			`routes.yaml:5: route "r": recipients.sql: unterminated /* comment`},
		{"recipients.sql unterminated dollar quote", "routes:\n  - name: r\n    table: comment\n    recipients:\n      sql: select $q$ :a\n    topic: t\n",
			`routes.yaml:5: route "r": recipients.sql: unterminated dollar-quoted string $q$`},
		{"recipients.sql positional", "routes:\n  - name: r\n    table: comment\n    recipients:\n      sql: select user_id from m where id = $1\n    topic: t\n",
			`routes.yaml:5: route "r": recipients.sql: positional parameter at offset 33: use :column placeholders`},
		{"recipients.static empty", "routes:\n  - name: r\n    table: comment\n    recipients:\n      static: []\n    topic: t\n",
			`routes.yaml:5: route "r": recipients.static: must list at least one recipient`},
		{"recipients.static empty entry", "routes:\n  - name: r\n    table: comment\n    recipients:\n      static:\n        - a\n        - ''\n    topic: t\n",
			`routes.yaml:7: route "r": recipients.static: entry 2 is empty`},

		{"topic missing", "routes:\n  - name: r\n    table: comment\n    recipients: { column: owner_id }\n",
			`routes.yaml:2: route "r": topic: is required`},
		{"topic null", "routes:\n  - name: r\n    table: comment\n    recipients: { column: owner_id }\n    topic: ~\n",
			`routes.yaml:5: route "r": topic: is required`},
		{"kind", okRoute + "    kind: alert\n", `routes.yaml:6: route "r": kind: must be notification or change, got "alert"`},
		{"payload", okRoute + "    payload: some\n", `routes.yaml:6: route "r": payload: must be none, keys or full, got "some"`},

		{"columns without full", okRoute + "    columns: [id]\n", `routes.yaml:6: route "r": columns: is only allowed when payload is full (payload is "keys")`},
		{"full without columns", okRoute + "    payload: full\n", `routes.yaml:2: route "r": columns: must list at least one column when payload is full`},
		{"full with empty columns", okRoute + "    payload: full\n    columns: []\n", `routes.yaml:7: route "r": columns: must list at least one column when payload is full`},
		{"columns twice", okRoute + "    payload: full\n    columns: [id, body, id]\n", `routes.yaml:7: route "r": columns: lists "id" twice`},
		{"columns not a list", okRoute + "    payload: full\n    columns: id\n",
			"routes.yaml:7: route \"r\": columns: must be a list\nroutes.yaml:7: route \"r\": columns: must list at least one column when payload is full"},

		{"when_changed empty", okRoute + "    when_changed: []\n", `routes.yaml:6: route "r": when_changed: must list at least one column`},
		{"when_changed without update", okRoute + "    on: [insert]\n    when_changed: [status]\n",
			`routes.yaml:7: route "r": when_changed: has no effect: the route does not fire on update`},

		{"group scalar", okRoute + "    group: 30s\n", `routes.yaml:6: route "r": group: must be a mapping with window, by and max`},
		{"group.window missing", okRoute + "    group: { by: [portfolio_id] }\n", `routes.yaml:6: route "r": group.window: is required`},
		{"group.window bad", okRoute + "    group: { window: soon }\n", `routes.yaml:6: route "r": group.window: must be a duration from 1s to 24h0m0s (like 30s or 5m), got "soon"`},
		{"group.window short", okRoute + "    group: { window: 500ms }\n", `routes.yaml:6: route "r": group.window: must be a duration from 1s to 24h0m0s (like 30s or 5m), got "500ms"`},
		{"group.window long", okRoute + "    group:\n      window: 25h\n", `routes.yaml:7: route "r": group.window: must be a duration from 1s to 24h0m0s (like 30s or 5m), got "25h"`},
		{"group.max zero", okRoute + "    group: { window: 1m, max: 0 }\n", `routes.yaml:6: route "r": group.max: must be an integer from 1 to 10000, got "0"`},
		{"group.max big", okRoute + "    group: { window: 1m, max: 10001 }\n", `routes.yaml:6: route "r": group.max: must be an integer from 1 to 10000, got "10001"`},
		{"group.max text", okRoute + "    group: { window: 1m, max: many }\n", `routes.yaml:6: route "r": group.max: must be an integer from 1 to 10000, got "many"`},
		{"group.by scalar", okRoute + "    group: { window: 1m, by: portfolio_id }\n", `routes.yaml:6: route "r": group.by: must be a list`},
		{"group unknown", okRoute + "    group:\n      window: 1m\n      every: 5\n", `routes.yaml:8: route "r": group.every: unknown field`},

		{"capture bad", okRoute + "    capture: wal\n", `routes.yaml:6: route "r": capture: must be trigger, replication or debezium, got "wal"`},
		{"snapshot without debezium", okRoute + "    snapshot: true\n", `routes.yaml:6: route "r": snapshot: only applies to capture: debezium (snapshot reads are Debezium's)`},
		{"snapshot without insert", okRoute + "    capture: debezium\n    on: [update]\n    snapshot: true\n", `routes.yaml:8: route "r": snapshot: delivers snapshot reads as inserts: add insert to on`},
		{"snapshot bad", okRoute + "    capture: debezium\n    snapshot: yes please\n", `routes.yaml:7: route "r": snapshot: must be true or false, got "yes please"`},

		{"several at once", "routes:\n  - name: a\n    table: comment\n    topic: t\n    recipients: { column: x }\n    kind: k\n  - name: b\n    payload: p\n",
			"routes.yaml:6: route \"a\": kind: must be notification or change, got \"k\"\n" +
				"routes.yaml:7: route \"b\": table: is required\n" +
				"routes.yaml:7: route \"b\": recipients: is required (one of column, sql, static)\n" +
				"routes.yaml:7: route \"b\": topic: is required\n" +
				"routes.yaml:8: route \"b\": payload: must be none, keys or full, got \"p\""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f, err := routes.Parse("routes.yaml", []byte(tt.src))
			require.Nil(t, f)
			require.EqualError(t, err, tt.want)
			var re *routes.Error
			if require.ErrorAs(t, err, &re); re.Line < 1 {
				t.Fatalf("error without a line: %v", re)
			}
		})
	}
}
