package routes

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Check validates f against the live catalog: each table exists and has a primary key,
// every column a route names exists, watched columns can be compared, and the recipient
// query compiles with its placeholders bound to the row's column types and returns exactly
// one column. Every problem is reported, each as an *Error; errors reaching the database
// are returned as they are. Check changes nothing.
func Check(ctx context.Context, pool *pgxpool.Pool, f *File) error {
	tx, err := pool.BeginTx(ctx, pgx.TxOptions{AccessMode: pgx.ReadOnly})
	if err != nil {
		return fmt.Errorf("checking routes: %w", err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	return CheckTx(ctx, tx, f)
}

// CheckTx is Check inside the caller's transaction. It leaves the transaction usable.
func CheckTx(ctx context.Context, tx pgx.Tx, f *File) error {
	_, err := check(ctx, tx, f)
	return err
}

// tableInfo is what the catalog says about a route's table.
type tableInfo struct {
	found   bool
	kind    string
	columns map[string]string // name → type, as format_type writes it
	pk      []string
	// replident is pg_class.relreplident: d(efault), n(othing), f(ull), i(ndex).
	replident string
}

// check validates f and returns the catalog's view of each route's table.
func check(ctx context.Context, tx pgx.Tx, f *File) (map[Table]*tableInfo, error) {
	tables := map[Table]*tableInfo{}
	f.Notes = nil
	var errs []error
	var repl *replicationPrereqs
	for i := range f.Routes {
		r := &f.Routes[i]
		fail := func(field, format string, args ...any) {
			errs = append(errs, &Error{File: f.Name, Line: r.line(field), Route: r.Name, Field: field, Err: fmt.Errorf(format, args...)})
		}
		t, ok := tables[r.Table]
		if !ok {
			var err error
			if t, err = loadTable(ctx, tx, r.Table); err != nil {
				return nil, err
			}
			tables[r.Table] = t
		}
		switch {
		case !t.found && r.Capture == CaptureDebezium:
			// The usual case: the table lives in the application's database, which Debezium
			// reads. Only what the file says can be checked.
			f.Notes = append(f.Notes, fmt.Sprintf("%s:%d: route %q: table %q is not in Tocsin's database: "+
				"checked the file alone (columns are taken from Debezium's events)", f.Name, r.line("table"), r.Name, r.Table))
			if r.Recipients.SQL != "" {
				if err := checkSQL(ctx, tx, r, nil, fail); err != nil {
					return nil, err
				}
			}
			continue
		case !t.found:
			fail("table", "table %q does not exist", r.Table)
			continue
		case t.kind != "r" && t.kind != "p":
			fail("table", "%q is not a table (relkind %q)", r.Table, t.kind)
			continue
		case r.Table.Schema == "tocsin":
			fail("table", "%q is one of Tocsin's own tables", r.Table)
			continue
		case systemSchema(r.Table.Schema):
			// Apply could not create its trigger there (a system catalog); say so now.
			fail("table", "%q is a system catalog", r.Table)
			continue
		case len(t.pk) == 0 && r.Capture == CaptureReplication:
			fail("table", "table %q has no primary key (entries carry the row's key) and so no replica "+
				"identity: once published, the application's updates and deletes on it would fail", r.Table)
		case len(t.pk) == 0:
			fail("table", "table %q has no primary key (entries carry the row's key)", r.Table)
		case r.Capture == CaptureReplication && t.replident == "n":
			fail("table", "table %q has REPLICA IDENTITY NOTHING: once published, the application's updates "+
				"and deletes on it would fail (ALTER TABLE ... REPLICA IDENTITY DEFAULT)", r.Table)
		}
		if r.Capture == CaptureReplication {
			if repl == nil {
				var err error
				if repl, err = loadReplicationPrereqs(ctx, tx); err != nil {
					return nil, err
				}
			}
			for _, problem := range repl.problems() {
				fail("capture", "%s", problem)
			}
		}
		exists := func(field, c string) {
			if _, ok := t.columns[c]; !ok {
				fail(field, "column %q does not exist in table %q", c, r.Table)
			}
		}
		missing := func(field string, cols []string) {
			for j, c := range cols {
				exists(fmt.Sprintf("%s[%d]", field, j), c)
			}
		}
		if c := r.Recipients.Column; c != "" {
			exists("recipients.column", c)
		}
		missing("columns", r.Columns)
		missing("when_changed", r.WhenChanged)
		if r.Group != nil {
			missing("group.by", r.Group.By)
		}
		if r.has(OpUpdate) {
			for _, c := range r.watched() {
				typ, ok := t.columns[c]
				if !ok {
					continue
				}
				msg, err := compile(ctx, tx, fmt.Sprintf("SELECT NULL::%s IS DISTINCT FROM NULL::%[1]s", typ), nil)
				if err != nil {
					return nil, err
				}
				if msg != "" {
					field := fmt.Sprintf("columns[%d]", slices.Index(r.Columns, c))
					if !slices.Contains(r.Columns, c) {
						field = fmt.Sprintf("when_changed[%d]", slices.Index(r.WhenChanged, c))
					}
					fail(field, "column %q cannot be compared, so its changes cannot be detected: %s", c, msg)
				}
			}
		}
		if r.Recipients.SQL != "" {
			if err := checkSQL(ctx, tx, r, t, fail); err != nil {
				return nil, err
			}
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return tables, nil
}

// checkSQL compiles r's recipient query with each placeholder bound to a parameter of its
// column's type, wrapped as the trigger wraps it. Without t (a debezium route's table that
// is not in Tocsin's database) the parameters are left for PostgreSQL to infer.
func checkSQL(ctx context.Context, tx pgx.Tx, r *Route, t *tableInfo, fail func(field, format string, args ...any)) error {
	const field = "recipients.sql"
	phs, err := scanPlaceholders(r.Recipients.SQL)
	if err != nil {
		fail(field, "%v", err)
		return nil
	}
	params := map[string]int{}
	bad := false
	for _, ph := range phs {
		if t == nil {
			if params[ph.name] == 0 {
				params[ph.name] = len(params) + 1
			}
			continue
		}
		if _, ok := t.columns[ph.name]; !ok {
			fail(field, "placeholder :%s is not a column of table %q", ph.name, r.Table)
			bad = true
		} else if params[ph.name] == 0 {
			params[ph.name] = len(params) + 1
		}
	}
	if bad {
		return nil
	}
	sql := bindPlaceholders(r.Recipients.SQL, phs, func(name string) string {
		if t == nil {
			return fmt.Sprintf("$%d", params[name])
		}
		return fmt.Sprintf("$%d::%s", params[name], t.columns[name])
	})
	var cols int
	msg, err := compile(ctx, tx, "SELECT * FROM (\n"+sql+"\n) AS q", &cols)
	switch {
	case err != nil:
		return err
	case msg != "":
		fail(field, "does not compile: %s", msg)
	case cols != 1:
		fail(field, "returns %d columns, want exactly 1 (the recipient)", cols)
	}
	return nil
}

// compile parses and plans sql without running it, in a savepoint so that a failure
// leaves tx usable. It returns PostgreSQL's complaint, or "" and the number of result
// columns in *cols.
func compile(ctx context.Context, tx pgx.Tx, sql string, cols *int) (string, error) {
	sp, err := tx.Begin(ctx)
	if err != nil {
		return "", fmt.Errorf("checking routes: %w", err)
	}
	defer func() { _ = sp.Rollback(context.WithoutCancel(ctx)) }()
	sd, err := sp.Conn().PgConn().Prepare(ctx, "", sql, nil)
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Message, nil
	}
	if err != nil {
		return "", fmt.Errorf("checking routes: %w", err)
	}
	if cols != nil {
		*cols = len(sd.Fields)
	}
	return "", nil
}

// loadTable reads t's kind, columns and primary key from the catalog.
func loadTable(ctx context.Context, tx pgx.Tx, t Table) (*tableInfo, error) {
	info := &tableInfo{columns: map[string]string{}}
	var oid uint32
	err := tx.QueryRow(ctx, tableDescribeSQL, t.Schema, t.Name).Scan(&oid, &info.kind, &info.replident)
	if errors.Is(err, pgx.ErrNoRows) {
		return info, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading catalog of table %q: %w", t, err)
	}
	info.found = true
	rows, err := tx.Query(ctx, tableColumnsSQL, oid)
	if err != nil {
		return nil, fmt.Errorf("reading columns of table %q: %w", t, err)
	}
	var name, typ string
	var ord int64
	_, err = pgx.ForEachRow(rows, []any{&name, &typ, &ord}, func() error {
		info.columns[name] = typ
		if ord > 0 {
			info.pk = append(info.pk, name)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("reading columns of table %q: %w", t, err)
	}
	return info, nil
}

// systemSchema reports PostgreSQL's own schemas, whose tables take no triggers.
func systemSchema(schema string) bool {
	return schema == "pg_catalog" || schema == "information_schema" || strings.HasPrefix(schema, "pg_toast")
}
