package routes

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// File is a parsed routes file. Check and Apply rely on what Parse guarantees (valid
// names, defaults filled in), so build Files with Parse.
type File struct {
	// Name is the file name that error messages start with.
	Name   string
	Routes []Route
	// Notes are what Check could not verify, one sentence each (a debezium route whose
	// table is not in Tocsin's database is checked from the file alone).
	Notes []string
}

// Route says which changes of one table become outbox rows, for whom, and how much of the
// row travels with them.
type Route struct {
	Name        string
	Table       Table
	On          []Op // never empty once parsed
	Recipients  Recipients
	Topic       string
	Kind        Kind
	Payload     Payload
	Columns     []string // allow-list of data columns; only with PayloadFull
	WhenChanged []string // updates fire only when one of these columns changes
	Group       *Group   // nil when the route does not group
	Capture     Capture
	// Snapshot makes a debezium route deliver Debezium's snapshot reads (op "r") as
	// inserts; without it they are ignored.
	Snapshot bool

	// Line is the line of the route in its file.
	Line int
	// lines maps a field path ("recipients.column", "columns[2]") to its line.
	lines map[string]int
}

// Table names a table. Names are taken as they are in the catalog: case-sensitive, never
// folded or unquoted.
type Table struct {
	Schema string
	Name   string
}

// String returns the table as schema.name, the form stored in outbox.table_name.
func (t Table) String() string { return t.Schema + "." + t.Name }

// Recipients says who receives a route's rows. Exactly one field is set.
type Recipients struct {
	// Column is a column of the row that holds the recipient.
	Column string
	// SQL is a query returning one column of recipients. :name placeholders are bound to
	// the row's columns (the old row for deletes, the new one otherwise).
	SQL string
	// Static is a fixed list of recipients, for system consumers.
	Static []string
}

// Op is a row operation a route fires on.
type Op string

// The operations, in the order they are written to a trigger definition.
const (
	OpInsert Op = "insert"
	OpUpdate Op = "update"
	OpDelete Op = "delete"
)

// Kind says how clients treat a route's entries.
type Kind string

const (
	// KindChange entries tell a UI to refresh (the default).
	KindChange Kind = "change"
	// KindNotification entries belong in an inbox with read state.
	KindNotification Kind = "notification"
)

// Payload says how much of the row travels with an entry.
type Payload string

const (
	// PayloadNone sends no row data.
	PayloadNone Payload = "none"
	// PayloadKeys sends the primary key only; clients refetch (the default).
	PayloadKeys Payload = "keys"
	// PayloadFull sends the allow-listed columns.
	PayloadFull Payload = "full"
)

// Capture says how a route's changes are captured.
type Capture string

const (
	// CaptureTrigger captures with a row trigger, in the application's transaction.
	CaptureTrigger Capture = "trigger"
	// CaptureReplication captures through logical replication: nothing on the
	// application's write path; Tocsin's capture consumer writes the outbox (internal/capture).
	CaptureReplication Capture = "replication"
	// CaptureDebezium takes the changes from the Kafka topics of Debezium's PostgreSQL
	// connector (internal/debezium). The table usually lives in another database.
	CaptureDebezium Capture = "debezium"
)

// Group makes changes for the same recipient and group key inside Window one feed entry.
type Group struct {
	Window time.Duration
	By     []string
	Max    int
}

// Group limits and defaults.
const (
	GroupWindowMin  = time.Second
	GroupWindowMax  = 24 * time.Hour
	GroupMaxDefault = 50
	GroupMaxLimit   = 10000
)

// has reports whether the route fires on op.
func (r *Route) has(op Op) bool { return slices.Contains(r.On, op) }

// line returns the line of a field, or of the route when the field was not written.
func (r *Route) line(field string) int {
	if l, ok := r.lines[field]; ok {
		return l
	}
	if i := strings.IndexByte(field, '['); i > 0 {
		if l, ok := r.lines[field[:i]]; ok {
			return l
		}
	}
	return r.Line
}

// Error is a problem with one field of one route. Parse and Check return them joined with
// errors.Join.
type Error struct {
	File  string
	Line  int
	Route string // the route's name, or "#n" when it has none
	Field string // "recipients.column", "columns[1]"; empty for the file itself
	Err   error
}

// Error formats e as file:line: route "name": field: message.
func (e *Error) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s:%d: ", e.File, e.Line)
	if e.Route != "" {
		if strings.HasPrefix(e.Route, "#") {
			fmt.Fprintf(&b, "route %s: ", e.Route)
		} else {
			fmt.Fprintf(&b, "route %q: ", e.Route)
		}
	}
	if e.Field != "" {
		b.WriteString(e.Field + ": ")
	}
	b.WriteString(e.Err.Error())
	return b.String()
}

// Unwrap returns the underlying problem.
func (e *Error) Unwrap() error { return e.Err }

// Summary says what Apply changed. Each list holds route names in file order (Removed in
// name order).
type Summary struct {
	Created   []string
	Updated   []string
	Removed   []string
	Unchanged []string
	// Notes are what Apply changed beyond routes (replica identity, publication, slot), one
	// sentence each.
	Notes []string
}

// Changed reports whether Apply changed anything.
func (s Summary) Changed() bool {
	return len(s.Created)+len(s.Updated)+len(s.Removed) > 0
}

// String returns one line per changed route, as the CLI prints it.
func (s Summary) String() string {
	var b strings.Builder
	for _, l := range []struct {
		verb  string
		names []string
	}{{"created", s.Created}, {"updated", s.Updated}, {"removed", s.Removed}} {
		for _, n := range l.names {
			fmt.Fprintf(&b, "%s route %q\n", l.verb, n)
		}
	}
	for _, n := range s.Notes {
		b.WriteString(n + "\n")
	}
	fmt.Fprintf(&b, "%d created, %d updated, %d removed, %d unchanged\n",
		len(s.Created), len(s.Updated), len(s.Removed), len(s.Unchanged))
	return b.String()
}
