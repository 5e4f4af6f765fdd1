// Package migrations holds Tocsin's SQL migrations, applied in file-name order by
// internal/migrate. River's own migrations run between 0001 (which creates the schema) and
// the rest. These files are also the reference for the SQL that applications call
// (tocsin.publish).
package migrations

import "embed"

// FS holds the migration files.
//
//go:embed *.sql
var FS embed.FS
