package routes

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/tocsin/tocsin/internal/outbox"
)

// Value is one column value of a decoded row.
type Value struct {
	Null bool
	// Text is PostgreSQL's text output of the value ("" when Null).
	Text string
	// JSON is the value as to_jsonb renders it ("null" when Null).
	JSON json.RawMessage
	// Type is the column's type as format_type writes it; recipient queries cast their
	// parameters to it.
	Type string
}

// Row maps column names to values. A column missing from a Row is unknown: an unchanged
// TOASTed value the server did not send, or a column outside the replica identity.
type Row map[string]Value

// Change is one row change decoded from the WAL.
type Change struct {
	Op    Op
	Table Table
	New   Row // insert and update
	Old   Row // delete; update when the server sent old values (nil otherwise)
	// KeyColumns, when set, are the key columns of this change (a Debezium message key), in
	// place of the route's stored primary key.
	KeyColumns []string
	// Snapshot marks a Debezium snapshot read, delivered as an insert by the routes that
	// ask for snapshot reads and ignored by the others.
	Snapshot bool
}

// Querier runs recipient queries; a pgx.Tx is one.
type Querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults
}

// Router routes decoded changes exactly as the generated trigger functions route rows
// (see the package documentation), for replication and debezium routes. It is not safe for concurrent
// use.
//
// One difference is inherent: a recipient query runs when the change is decoded, against
// the database as it is then, not inside the writing transaction.
type Router struct {
	specs   map[string]Spec
	byTable map[Table][]Spec // in trigger firing order: by route name
}

// NewRouter returns a Router with no routes.
func NewRouter() *Router {
	return &Router{specs: map[string]Spec{}, byTable: map[Table][]Spec{}}
}

// Set adds or replaces a route.
func (rt *Router) Set(s Spec) {
	rt.specs[s.Name] = s
	rt.index()
}

// Remove removes route name, if present.
func (rt *Router) Remove(name string) {
	delete(rt.specs, name)
	rt.index()
}

// Len is the number of routes.
func (rt *Router) Len() int { return len(rt.specs) }

func (rt *Router) index() {
	rt.byTable = map[Table][]Spec{}
	for _, s := range rt.specs {
		t := Table{Schema: s.Schema, Name: s.Table}
		rt.byTable[t] = append(rt.byTable[t], s)
	}
	for _, list := range rt.byTable {
		// Triggers on one row fire in name order; every route trigger is "tocsin:<name>".
		sort.Slice(list, func(i, j int) bool { return list[i].Name < list[j].Name })
	}
}

// Routes reports whether any route watches table t.
func (rt *Router) Routes(t Table) bool { return len(rt.byTable[t]) > 0 }

// Specs returns the routes of table t, in firing order. The caller must not modify them.
func (rt *Router) Specs(t Table) []Spec { return rt.byTable[t] }

// Tables returns the tables the routes watch, in no particular order.
func (rt *Router) Tables() []Table {
	out := make([]Table, 0, len(rt.byTable))
	for t := range rt.byTable {
		out = append(out, t)
	}
	return out
}

// Route returns the outbox rows of change c, field for field and in the order the triggers
// would write them.
// q runs recipient queries.
func (rt *Router) Route(ctx context.Context, q Querier, c *Change) ([]outbox.Row, error) {
	var out []outbox.Row
	for i := range rt.byTable[c.Table] {
		rows, err := routeOne(ctx, q, &rt.byTable[c.Table][i], c)
		if err != nil {
			return nil, err
		}
		out = append(out, rows...)
	}
	return out, nil
}

func routeOne(ctx context.Context, q Querier, s *Spec, c *Change) ([]outbox.Row, error) {
	if !slices.Contains(s.On, c.Op) || (c.Snapshot && !s.Snapshot) {
		return nil, nil
	}
	row := c.New
	if c.Op == OpDelete {
		row = c.Old
	}
	key := s.Key
	if c.KeyColumns != nil {
		key = c.KeyColumns
	}
	o := outbox.Row{Route: s.Name, Topic: s.Topic, Kind: string(s.Kind), Op: string(c.Op), Table: s.Schema + "." + s.Table,
		Key: rowObject(row, key)}
	if c.Op == OpUpdate {
		if len(s.WhenChanged) > 0 && !slices.ContainsFunc(s.WhenChanged, c.distinct) {
			return nil, nil
		}
		watched := append([]string(nil), s.Columns...)
		for _, col := range s.WhenChanged {
			if !slices.Contains(watched, col) {
				watched = append(watched, col)
			}
		}
		if len(watched) > 0 {
			o.Changed = []string{}
			old := Row{}
			for _, col := range watched {
				if c.distinct(col) {
					o.Changed = append(o.Changed, col)
					if v, ok := c.Old[col]; ok && s.Payload == PayloadFull && slices.Contains(s.Columns, col) {
						old[col] = v
					}
				}
			}
			if s.Payload == PayloadFull {
				o.Old = rowObject(old, s.Columns)
			}
		}
	}
	if s.Payload == PayloadFull {
		switch c.Op {
		case OpInsert, OpUpdate:
			o.Data = rowObject(row, s.Columns)
		case OpDelete:
			o.Old = rowObject(row, s.Columns)
		}
	}
	if s.Group != nil {
		o.GroupBy = rowArray(row, s.Group.By)
	}
	recipients, err := recipientsOf(ctx, q, s, c, row)
	if err != nil {
		return nil, err
	}
	out := make([]outbox.Row, 0, len(recipients))
	for _, r := range recipients {
		o.Recipient = r
		out = append(out, o)
	}
	return out, nil
}

// distinct reports whether column col changed, as NEW.col IS DISTINCT FROM OLD.col. A
// value missing from the new row was not sent because it did not change; an old value
// that was not sent counts as changed (deliver rather than lose).
func (c *Change) distinct(col string) bool {
	n, ok := c.New[col]
	if !ok {
		return false
	}
	o, ok := c.Old[col]
	if !ok {
		return true
	}
	return n.Null != o.Null || n.Text != o.Text
}

// recipientsOf returns the non-empty recipients of row, in the trigger's order.
func recipientsOf(ctx context.Context, q Querier, s *Spec, c *Change, row Row) ([]string, error) {
	var out []string
	add := func(v Value, ok bool) {
		if ok && !v.Null && v.Text != "" {
			out = append(out, v.Text)
		}
	}
	rc := s.Recipients
	switch {
	case rc.Column != "":
		v, ok := row[rc.Column]
		add(v, ok)
		if c.Op == OpUpdate && c.distinct(rc.Column) {
			// A row that changes hands concerns both owners.
			v, ok := c.Old[rc.Column]
			add(v, ok)
		}
	case rc.SQL != "":
		return recipientQuery(ctx, q, s, row)
	default:
		out = append(out, rc.Static...)
	}
	return out, nil
}

// recipientQuery runs s's recipient query with its placeholders bound to row's values.
func recipientQuery(ctx context.Context, q Querier, s *Spec, row Row) ([]string, error) {
	phs, err := scanPlaceholders(s.Recipients.SQL)
	if err != nil {
		return nil, fmt.Errorf("route %q: %w", s.Name, err)
	}
	params := map[string]int{}
	var args []any
	sql := bindPlaceholders(s.Recipients.SQL, phs, func(name string) string {
		v, ok := row[name]
		if params[name] == 0 {
			var arg *string
			if ok && !v.Null {
				arg = &v.Text
			}
			args = append(args, arg)
			params[name] = len(args)
		}
		typ := v.Type
		if typ == "" {
			typ = "text"
		}
		return fmt.Sprintf("$%d::text::%s", params[name], typ)
	})
	sql = "SELECT DISTINCT q.r::text FROM (\n" + sql + "\n) AS q(r) WHERE q.r IS NOT NULL"
	var rows pgx.Rows
	if s.SearchPath != "" {
		b := &pgx.Batch{}
		b.Queue(searchPathSetSQL, s.SearchPath)
		b.Queue(sql, args...)
		br := q.SendBatch(ctx, b)
		defer br.Close()
		if _, err := br.Exec(); err != nil {
			return nil, fmt.Errorf("route %q: setting search_path: %w", s.Name, err)
		}
		rows, err = br.Query()
	} else {
		rows, err = q.Query(ctx, sql, args...)
	}
	if err != nil {
		return nil, fmt.Errorf("route %q: running the recipient query: %w", s.Name, err)
	}
	recipients, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("route %q: running the recipient query: %w", s.Name, err)
	}
	return slices.DeleteFunc(recipients, func(r string) bool { return r == "" }), nil
}

// rowObject returns a JSON object of row's columns cols (unknown ones left out).
func rowObject(row Row, cols []string) json.RawMessage {
	var b strings.Builder
	b.WriteByte('{')
	first := true
	for _, c := range cols {
		v, ok := row[c]
		if !ok {
			continue
		}
		if !first {
			b.WriteByte(',')
		}
		first = false
		k, _ := json.Marshal(c)
		b.Write(k)
		b.WriteByte(':')
		b.Write(valueJSON(v))
	}
	b.WriteByte('}')
	return json.RawMessage(b.String())
}

// rowArray returns a JSON array of row's columns cols (unknown ones as null).
func rowArray(row Row, cols []string) json.RawMessage {
	var b strings.Builder
	b.WriteByte('[')
	for i, c := range cols {
		if i > 0 {
			b.WriteByte(',')
		}
		b.Write(valueJSON(row[c]))
	}
	b.WriteByte(']')
	return json.RawMessage(b.String())
}

func valueJSON(v Value) []byte {
	if v.Null || len(v.JSON) == 0 {
		return []byte("null")
	}
	return v.JSON
}
