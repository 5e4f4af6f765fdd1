package sqlfile_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/tocsin/tocsin/internal/sqlfile"
)

func TestParse(t *testing.T) {
	t.Parallel()
	f := sqlfile.Parse("t.sql", `-- What this file is for.

-- name: first_one
-- A comment that belongs to the statement.
SELECT 1;

--name:second
SELECT $1::text -- a comment inside stays
  || 'x';
`)
	require.Equal(t, []string{"first_one", "second"}, f.Statements())
	require.Equal(t, "SELECT 1", f.Get("first_one"), "the block's opening comment stays in the file")
	require.Equal(t, "SELECT $1::text -- a comment inside stays\n  || 'x'", f.Get("second"))
	require.Equal(t, "t.sql", f.Name())
	require.Contains(t, sqlfile.Registered(), f)
	require.PanicsWithValue(t, `sqlfile: t.sql: no statement "third"`, func() { f.Get("third") })
}

func TestParseRefusesMalformedFiles(t *testing.T) {
	t.Parallel()
	for src, want := range map[string]string{
		"SELECT 1;":                                              `sqlfile: bad.sql: no "-- name:" line`,
		"SELECT 0;\n-- name: a\nSELECT 1;":                       `sqlfile: bad.sql: SQL before the first "-- name:" line`,
		"-- name: a\nSELECT 1;\n-- name: a\nSELECT 2;":           `sqlfile: bad.sql: statement "a" twice`,
		"-- name: a\n-- only a comment\n;\n-- name: b\nSELECT 1": `sqlfile: bad.sql: statement "a" is empty`,
	} {
		require.PanicsWithValue(t, want, func() { sqlfile.Parse("bad.sql", src) }, src)
	}
}
