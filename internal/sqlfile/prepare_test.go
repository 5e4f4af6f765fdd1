package sqlfile_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/tocsin/tocsin/internal/pgtest"
	"github.com/tocsin/tocsin/internal/sqlfile"

	// Every package with runtime SQL, so that its file is registered.
	_ "github.com/tocsin/tocsin/internal/bench"
	_ "github.com/tocsin/tocsin/internal/capture"
	_ "github.com/tocsin/tocsin/internal/debezium"
	_ "github.com/tocsin/tocsin/internal/doorbell"
	_ "github.com/tocsin/tocsin/internal/feed"
	_ "github.com/tocsin/tocsin/internal/grouping"
	_ "github.com/tocsin/tocsin/internal/inbox"
	_ "github.com/tocsin/tocsin/internal/leader"
	_ "github.com/tocsin/tocsin/internal/metrics"
	_ "github.com/tocsin/tocsin/internal/migrate"
	_ "github.com/tocsin/tocsin/internal/publish"
	_ "github.com/tocsin/tocsin/internal/retention"
	_ "github.com/tocsin/tocsin/internal/routes"
	_ "github.com/tocsin/tocsin/internal/sequencer"
	_ "github.com/tocsin/tocsin/internal/settings"
	_ "github.com/tocsin/tocsin/internal/ticket"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// Every registered statement prepares against a freshly migrated database: it parses, and
// every table, column and function it names exists with the types it expects.
func TestEveryStatementPrepares(t *testing.T) {
	t.Parallel()
	db := pgtest.New(t)
	ctx := context.Background()
	conn, err := db.Pool.Acquire(ctx)
	require.NoError(t, err)
	defer conn.Release()
	n := 0
	for _, f := range sqlfile.Registered() {
		if f.Name() == "t.sql" || f.Name() == "bad.sql" {
			continue
		}
		for _, name := range f.Statements() {
			_, err := conn.Conn().Prepare(ctx, "", f.Get(name))
			require.NoError(t, err, "%s: %s", f.Name(), name)
			n++
		}
	}
	require.Positive(t, n)
}
