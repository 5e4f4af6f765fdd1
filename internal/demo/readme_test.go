package demo_test

import (
	"context"
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/tocsin/tocsin/internal/demo"
	"github.com/tocsin/tocsin/internal/pgtest"
	"github.com/tocsin/tocsin/internal/routes"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// readmeBlock returns the first fenced block of lang after heading in the README.
func readmeBlock(t *testing.T, heading, lang string) string {
	t.Helper()
	readme, err := os.ReadFile("../../README.md")
	require.NoError(t, err)
	s := string(readme)
	i := strings.Index(s, "\n"+heading+"\n")
	require.NotEqual(t, -1, i, "README.md has no %q", heading)
	s = s[i:]
	i = strings.Index(s, "```"+lang+"\n")
	require.NotEqual(t, -1, i, "no %s block under %q", lang, heading)
	s = s[i+len("```"+lang+"\n"):]
	return s[:strings.Index(s, "```")]
}

// The README's example route works against the demo schema: it passes the catalog checks,
// installs, and a comment on Alice's portfolio reaches Alice.
func TestREADMEExampleRouteWorksOnTheDemoSchema(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.New(t)
	_, err := demo.Install(ctx, db.Pool)
	require.NoError(t, err)

	f, err := routes.Parse("routes.yaml", []byte(readmeBlock(t, "## Routes", "yaml")))
	require.NoError(t, err)
	require.NoError(t, routes.Check(ctx, db.Pool, f))
	_, err = routes.Apply(ctx, db.Pool, f)
	require.NoError(t, err)

	_, err = db.Pool.Exec(ctx, `INSERT INTO public.comment (portfolio_id, author_id, body) VALUES (1, 'bob', 'Nice work')`)
	require.NoError(t, err)
	var n int
	require.NoError(t, db.Pool.QueryRow(ctx,
		`SELECT count(*) FROM tocsin.outbox o JOIN tocsin.route_op r ON r.id = o.route_op
			WHERE o.recipient = 'alice' AND r.route = 'comment-on-my-portfolio'`).Scan(&n))
	require.Equal(t, 1, n)
}
