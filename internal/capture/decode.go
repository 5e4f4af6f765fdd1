package capture

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"

	"github.com/tocsin/tocsin/internal/routes"
)

// jsonKind says how to_jsonb renders a type's values.
type jsonKind int

const (
	kindString jsonKind = iota // the text output, as a JSON string (also the fallback)
	kindBool
	kindNumber // integers, floats, numeric: a JSON number unless NaN or Infinity
	kindDate
	kindTimestamp
	kindTimestamptz
	kindJSON // json, jsonb: embedded as they are
	kindArray
)

// pgType is what decoding needs to know about a column type.
type pgType struct {
	kind  jsonKind
	name  string  // format_type(oid, NULL): the cast recipient queries use
	elem  *pgType // arrays
	delim byte    // arrays
}

// Built-in type OIDs that to_jsonb treats specially.
const (
	oidBool        = 16
	oidInt8        = 20
	oidInt2        = 21
	oidInt4        = 23
	oidJSON        = 114
	oidFloat4      = 700
	oidFloat8      = 701
	oidDate        = 1082
	oidTimestamp   = 1114
	oidTimestamptz = 1184
	oidNumeric     = 1700
	oidJSONB       = 3802
)

// typeCache resolves type OIDs through the catalog, once each.
type typeCache struct {
	types map[uint32]*pgType
}

func newTypeCache() *typeCache { return &typeCache{types: map[uint32]*pgType{}} }

type rowQuerier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// resolve returns the type of oid. Domains take their base type's rendering (as to_jsonb
// does); unknown types render as text.
func (c *typeCache) resolve(ctx context.Context, q rowQuerier, oid uint32) (*pgType, error) {
	if t, ok := c.types[oid]; ok {
		return t, nil
	}
	var (
		typtype, category string
		base, elem        uint32
		delim             string
		name              string
	)
	err := q.QueryRow(ctx, pgTypeDescribeSQL, oid).Scan(&typtype, &base, &elem, &category, &delim, &name)
	if errors.Is(err, pgx.ErrNoRows) {
		t := &pgType{kind: kindString, name: "text"}
		c.types[oid] = t
		return t, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading type %d: %w", oid, err)
	}
	t := &pgType{name: name}
	switch {
	case typtype == "d":
		b, err := c.resolve(ctx, q, base)
		if err != nil {
			return nil, err
		}
		t.kind, t.elem, t.delim = b.kind, b.elem, b.delim
	case category == "A" && elem != 0:
		e, err := c.resolve(ctx, q, elem)
		if err != nil {
			return nil, err
		}
		t.kind, t.elem, t.delim = kindArray, e, ','
		if delim != "" {
			t.delim = delim[0]
		}
	default:
		t.kind = kindOf(oid)
	}
	c.types[oid] = t
	return t, nil
}

func kindOf(oid uint32) jsonKind {
	switch oid {
	case oidBool:
		return kindBool
	case oidInt2, oidInt4, oidInt8, oidFloat4, oidFloat8, oidNumeric:
		return kindNumber
	case oidDate:
		return kindDate
	case oidTimestamp:
		return kindTimestamp
	case oidTimestamptz:
		return kindTimestamptz
	case oidJSON, oidJSONB:
		return kindJSON
	}
	return kindString
}

// toJSON renders the text output s of a value of type t as to_jsonb does. Timestamps
// with time zone come in UTC (the replication session's TimeZone).
func toJSON(t *pgType, s string) json.RawMessage {
	switch t.kind {
	case kindBool:
		if s == "t" {
			return json.RawMessage("true")
		}
		return json.RawMessage("false")
	case kindNumber:
		if validNumber(s) {
			return json.RawMessage(s)
		}
	case kindTimestamp, kindTimestamptz:
		if s != "infinity" && s != "-infinity" {
			s = strings.Replace(s, " ", "T", 1)
			if t.kind == kindTimestamptz {
				if i := strings.LastIndexAny(s, "+-"); i > strings.IndexByte(s, 'T') && len(s)-i == 3 {
					s += ":00" // +00 → +00:00, as JSON renders offsets
				}
			}
		}
	case kindJSON:
		if json.Valid([]byte(s)) {
			return json.RawMessage(s)
		}
	case kindArray:
		if v, err := parseArray(s, t.delim); err == nil {
			return arrayJSON(t.elem, v)
		}
	}
	b, _ := json.Marshal(s)
	return b
}

// validNumber reports whether s is a JSON number (not NaN, Infinity).
func validNumber(s string) bool {
	i := 0
	if i < len(s) && s[i] == '-' {
		i++
	}
	digits := func() int {
		start := i
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			i++
		}
		return i - start
	}
	if n := digits(); n == 0 || (n > 1 && s[i-n] == '0') {
		return false
	}
	if i < len(s) && s[i] == '.' {
		i++
		if digits() == 0 {
			return false
		}
	}
	if i < len(s) && (s[i] == 'e' || s[i] == 'E') {
		i++
		if i < len(s) && (s[i] == '+' || s[i] == '-') {
			i++
		}
		if digits() == 0 {
			return false
		}
	}
	return i == len(s)
}

func arrayJSON(elem *pgType, v []any) json.RawMessage {
	var b strings.Builder
	b.WriteByte('[')
	for i, e := range v {
		if i > 0 {
			b.WriteByte(',')
		}
		switch e := e.(type) {
		case []any:
			b.Write(arrayJSON(elem, e))
		case *string:
			if e == nil {
				b.WriteString("null")
			} else {
				b.Write(toJSON(elem, *e))
			}
		}
	}
	b.WriteByte(']')
	return json.RawMessage(b.String())
}

// parseArray parses an array's text output into nested []any of *string (nil is NULL).
func parseArray(s string, delim byte) ([]any, error) {
	if strings.HasPrefix(s, "[") { // dimension decoration: [0:1]={...}
		i := strings.IndexByte(s, '=')
		if i < 0 {
			return nil, errors.New("malformed array")
		}
		s = s[i+1:]
	}
	p := arrayParser{s: s, delim: delim}
	v, err := p.array()
	if err != nil {
		return nil, err
	}
	if p.i != len(s) {
		return nil, errors.New("trailing text after array")
	}
	return v, nil
}

type arrayParser struct {
	s     string
	i     int
	delim byte
}

func (p *arrayParser) array() ([]any, error) {
	if p.i >= len(p.s) || p.s[p.i] != '{' {
		return nil, errors.New("malformed array")
	}
	p.i++
	out := []any{}
	if p.i < len(p.s) && p.s[p.i] == '}' {
		p.i++
		return out, nil
	}
	for {
		if p.i >= len(p.s) {
			return nil, errors.New("unterminated array")
		}
		switch p.s[p.i] {
		case '{':
			sub, err := p.array()
			if err != nil {
				return nil, err
			}
			out = append(out, sub)
		case '"':
			var b strings.Builder
			for p.i++; p.i < len(p.s) && p.s[p.i] != '"'; p.i++ {
				if p.s[p.i] == '\\' {
					p.i++
				}
				if p.i < len(p.s) {
					b.WriteByte(p.s[p.i])
				}
			}
			p.i++
			v := b.String()
			out = append(out, &v)
		default:
			start := p.i
			for p.i < len(p.s) && p.s[p.i] != p.delim && p.s[p.i] != '}' {
				p.i++
			}
			v := p.s[start:p.i]
			if strings.EqualFold(v, "NULL") {
				out = append(out, (*string)(nil))
			} else {
				out = append(out, &v)
			}
		}
		if p.i >= len(p.s) {
			return nil, errors.New("unterminated array")
		}
		switch p.s[p.i] {
		case p.delim:
			p.i++
		case '}':
			p.i++
			return out, nil
		default:
			return nil, errors.New("malformed array")
		}
	}
}

// relation is a table as the stream describes it.
type relation struct {
	table     routes.Table
	replident byte
	columns   []column
}

type column struct {
	name string
	key  bool // part of the replica identity
	typ  *pgType
}

// newRelation builds a relation from its message, resolving column types.
func newRelation(ctx context.Context, q rowQuerier, types *typeCache, m *pglogrepl.RelationMessage) (*relation, error) {
	r := &relation{table: routes.Table{Schema: m.Namespace, Name: m.RelationName}, replident: m.ReplicaIdentity}
	for _, c := range m.Columns {
		t, err := types.resolve(ctx, q, c.DataType)
		if err != nil {
			return nil, err
		}
		r.columns = append(r.columns, column{name: c.Name, key: c.Flags&1 != 0, typ: t})
	}
	return r, nil
}

// row decodes a tuple. keyOnly keeps the replica identity's columns only (the others of a
// 'K' tuple are sent as NULL but are not NULL). Unchanged TOASTed values ('u') are left out.
func (r *relation) row(t *pglogrepl.TupleData, keyOnly bool) routes.Row {
	out := make(routes.Row, len(t.Columns))
	for i, c := range t.Columns {
		if i >= len(r.columns) || (keyOnly && !r.columns[i].key) {
			continue
		}
		col := r.columns[i]
		switch c.DataType {
		case pglogrepl.TupleDataTypeNull:
			out[col.name] = routes.Value{Null: true, JSON: json.RawMessage("null"), Type: col.typ.name}
		case pglogrepl.TupleDataTypeText:
			s := string(c.Data)
			out[col.name] = routes.Value{Text: s, JSON: toJSON(col.typ, s), Type: col.typ.name}
		}
	}
	return out
}

// change decodes an insert, update or delete message of relation r.
func (r *relation) change(op routes.Op, oldType uint8, oldTuple, newTuple *pglogrepl.TupleData) *routes.Change {
	c := &routes.Change{Op: op, Table: r.table}
	if oldTuple != nil {
		c.Old = r.row(oldTuple, oldType == 'K')
	}
	if newTuple != nil {
		c.New = r.row(newTuple, false)
	}
	if op == routes.OpUpdate {
		if c.Old == nil && r.replident != 'f' {
			// No old tuple under a key identity: the key did not change.
			c.Old = routes.Row{}
			for _, col := range r.columns {
				if v, ok := c.New[col.name]; ok && col.key {
					c.Old[col.name] = v
				}
			}
		}
		for _, col := range r.columns { // unchanged TOASTed values: take the old ones
			if _, ok := c.New[col.name]; !ok {
				if v, ok := c.Old[col.name]; ok {
					c.New[col.name] = v
				}
			}
		}
	}
	return c
}

// parsePgoutput parses one pgoutput message. pglogrepl slices a truncated message without
// checking its length (found by FuzzPgoutputMessage); such a message is an error here,
// never a panic of the capture consumer.
func parsePgoutput(data []byte) (msg pglogrepl.Message, err error) {
	defer func() {
		if r := recover(); r != nil {
			msg, err = nil, fmt.Errorf("malformed pgoutput message (%d bytes, type %q): %v", len(data), firstByte(data), r)
		}
	}()
	return pglogrepl.ParseV2(data, false)
}

func firstByte(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return string(b[:1])
}
