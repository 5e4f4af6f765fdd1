package routes_test

import (
	"context"
	"errors"
	"testing"

	"github.com/tocsin/tocsin/internal/pgtest"
	"github.com/tocsin/tocsin/internal/routes"
)

var fuzzSeeds = []string{
	`routes:
  - name: comment-on-my-portfolio
    table: public.comment
    on: [insert, update, delete]
    recipients: { sql: "select user_id from portfolio_member where portfolio_id = :portfolio_id" }
    topic: comment
    kind: notification
    payload: full
    columns: [id, portfolio_id, body]
    when_changed: [status]
    group: { window: 30s, by: [portfolio_id] }
`,
	"routes:\n  - name: r\n    table: comment\n    recipients: { column: owner_id }\n    topic: t\n",
	"routes:\n  - name: r\n    table: pg_catalog.pg_class\n    recipients: { column: relname }\n    topic: t\n",
	"routes:\n  - name: r\n    table: '\"Odd \"\"Schema\"\"\".\":Weird Table$\"'\n    recipients: { column: 'Own:er' }\n    topic: t\n",
	"routes:\n  - name: r\n    table: comment\n    recipients: { static: [a, b] }\n    topic: t\n    capture: replication\n",
	"routes: []", "routes:", "", "- a", "routes: {a: 1}", "routes:\n  - *x", "routes: [{name: \"\\0\"}]",
}

// FuzzParse: any file either parses or fails with *routes.Error values (file, line, field),
// and never panics.
func FuzzParse(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		file, err := routes.Parse("routes.yaml", data)
		if err != nil {
			requireRouteErrors(t, data, err)
			return
		}
		if file == nil {
			t.Fatalf("Parse(%q): no file and no error", data)
		}
	})
}

// FuzzCheck: any file that parses is checked against a real catalog with precise errors
// (*routes.Error) or none; the database never sees a malformed statement from Check itself.
func FuzzCheck(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add([]byte(s))
	}
	db := pgtest.New(f)
	if _, err := db.Pool.Exec(context.Background(), schema); err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		file, err := routes.Parse("routes.yaml", data)
		if err != nil {
			return
		}
		if err := routes.Check(context.Background(), db.Pool, file); err != nil {
			requireRouteErrors(t, data, err)
		}
	})
}

func requireRouteErrors(t *testing.T, data []byte, err error) {
	t.Helper()
	errs := []error{err}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		errs = j.Unwrap()
	}
	for _, e := range errs {
		var re *routes.Error
		if !errors.As(e, &re) {
			t.Fatalf("input %q: error %v (%T) is not a *routes.Error", data, e, e)
		}
	}
}
