package debezium

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"github.com/tocsin/tocsin/internal/routes"
)

// Reasons a message is skipped as poison (the label of tocsin_debezium_skipped_total).
const (
	ReasonNotJSON      = "not_json"
	ReasonNotEnvelope  = "not_envelope"
	ReasonUnknownTable = "unknown_table"
)

// PoisonError is a message that can never be applied: it is skipped (logged at ERROR
// with its topic, partition and offset) and the consumer goes on.
type PoisonError struct {
	Reason string // ReasonNotJSON, ReasonNotEnvelope, ReasonUnknownTable
	Err    error
}

func (e *PoisonError) Error() string { return e.Reason + ": " + e.Err.Error() }

// Unwrap returns the underlying problem.
func (e *PoisonError) Unwrap() error { return e.Err }

func poison(reason, format string, args ...any) error {
	return &PoisonError{Reason: reason, Err: fmt.Errorf(format, args...)}
}

// Position orders the change events of one connector: source.sequence, the pair
// [last committed LSN, this change's LSN], grows along the stream (the change's LSN alone
// does not: transactions interleave in the WAL but are sent in commit order).
type Position struct {
	Commit int64 // LSN of the last transaction committed before this change's (0 when unknown)
	LSN    int64 // source.lsn
}

// Less orders positions.
func (p Position) Less(q Position) bool {
	return p.Commit < q.Commit || (p.Commit == q.Commit && p.LSN < q.LSN)
}

// Event is one decoded Debezium change event (the value of a Kafka record, with its key).
type Event struct {
	Op    byte         // 'c', 'u', 'd', 'r', 't' or 'm'
	Table routes.Table // source.schema, source.table
	// Before and After are the row images; nil when absent. Columns whose value Debezium
	// could not read (the unavailable-value placeholder) are left out.
	Before, After routes.Row
	// BeforeKeyOnly: the old image holds only the key (REPLICA IDENTITY DEFAULT): no before
	// at all on an update, only key columns set on a delete.
	BeforeKeyOnly bool
	// KeyColumns are the message key's columns in order; nil for a null key.
	KeyColumns []string
	// Key is the message key's payload, compacted ("" for a null key).
	Key string
	// Pos is source.sequence; HasPos is false when the event has none (then a resend
	// cannot be recognised).
	Pos    Position
	HasPos bool
}

// Decode decodes a Debezium PostgreSQL change event from a record's key and value, with
// or without schemas (schemas.enable of the JSON converter). A tombstone (null value)
// decodes to nil and no error. Anything else that is not a change event is a
// *PoisonError.
func Decode(key, value []byte) (*Event, error) {
	value = bytes.TrimSpace(value)
	if len(value) == 0 || string(value) == "null" {
		return nil, nil
	}
	payload, schema, err := unwrap(value)
	if err != nil {
		return nil, err
	}
	if payload == nil {
		return nil, nil // {"schema": …, "payload": null}: a tombstone too
	}
	var env struct {
		Op     string          `json:"op"`
		Before json.RawMessage `json:"before"`
		After  json.RawMessage `json:"after"`
		Source *struct {
			Schema   string          `json:"schema"`
			Table    string          `json:"table"`
			LSN      json.Number     `json:"lsn"`
			Sequence json.RawMessage `json:"sequence"`
		} `json:"source"`
	}
	if err := json.Unmarshal(payload, &env); err != nil {
		return nil, poison(ReasonNotEnvelope, "decoding the change event: %v", err)
	}
	e := &Event{}
	switch env.Op {
	case "c", "u", "d", "r", "t", "m":
		e.Op = env.Op[0]
	case "":
		return nil, poison(ReasonNotEnvelope, "no op: not a Debezium change event")
	default:
		return nil, poison(ReasonNotEnvelope, "unknown op %q", env.Op)
	}
	if env.Source == nil {
		return nil, poison(ReasonNotEnvelope, "no source block")
	}
	if e.Op == 't' || e.Op == 'm' {
		return e, nil // ignored like truncates in every capture mode; no row to decode
	}
	if env.Source.Table == "" || env.Source.Schema == "" {
		return nil, poison(ReasonNotEnvelope, "source names no schema and table")
	}
	e.Table = routes.Table{Schema: env.Source.Schema, Name: env.Source.Table}
	e.Pos, e.HasPos = sequence(env.Source.Sequence, env.Source.LSN)

	if e.KeyColumns, e.Key, err = decodeKey(key); err != nil {
		return nil, err
	}
	var beforeSchema, afterSchema map[string]*field
	if schema != nil {
		beforeSchema, afterSchema = schema.columns("before"), schema.columns("after")
	}
	if e.Before, err = decodeRow(env.Before, beforeSchema); err != nil {
		return nil, err
	}
	if e.After, err = decodeRow(env.After, afterSchema); err != nil {
		return nil, err
	}
	switch e.Op {
	case 'c', 'r':
		if e.After == nil {
			return nil, poison(ReasonNotEnvelope, "op %q without after", env.Op)
		}
	case 'u':
		if e.After == nil {
			return nil, poison(ReasonNotEnvelope, "op %q without after", env.Op)
		}
		e.BeforeKeyOnly = e.Before == nil
	case 'd':
		if e.Before == nil {
			return nil, poison(ReasonNotEnvelope, "op %q without before", env.Op)
		}
		e.BeforeKeyOnly = keyOnly(e.Before, e.KeyColumns)
	}
	return e, nil
}

// unwrap returns the payload of a value with or without its schema wrapper, and the
// envelope's schema when there is one.
func unwrap(value []byte) (json.RawMessage, *field, error) {
	if !json.Valid(value) {
		return nil, nil, poison(ReasonNotJSON, "the value is not JSON")
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(value, &top); err != nil {
		return nil, nil, poison(ReasonNotEnvelope, "the value is not a JSON object")
	}
	p, hasPayload := top["payload"]
	s, hasSchema := top["schema"]
	if !hasPayload || !hasSchema || len(top) != 2 {
		return value, nil, nil
	}
	if string(bytes.TrimSpace(p)) == "null" {
		return nil, nil, nil
	}
	var f field
	if err := json.Unmarshal(s, &f); err != nil {
		return nil, nil, poison(ReasonNotEnvelope, "decoding the schema: %v", err)
	}
	return p, &f, nil
}

// columns returns the column schemas of the envelope's struct field name.
func (f *field) columns(name string) map[string]*field {
	for i := range f.Fields {
		if f.Fields[i].Field == name {
			out := map[string]*field{}
			for j := range f.Fields[i].Fields {
				c := &f.Fields[i].Fields[j]
				out[c.Field] = c
			}
			return out
		}
	}
	return nil
}

// sequence reads source.sequence ("[\"lastCommittedLsn\",\"currentLsn\"]", either may be
// null), falling back to nothing when it is missing.
func sequence(raw json.RawMessage, lsn json.Number) (Position, bool) {
	var s string
	if len(raw) == 0 || json.Unmarshal(raw, &s) != nil {
		return Position{}, false
	}
	var pair []*string
	if json.Unmarshal([]byte(s), &pair) != nil || len(pair) != 2 || pair[1] == nil {
		return Position{}, false
	}
	var p Position
	var err error
	if p.LSN, err = strconv.ParseInt(*pair[1], 10, 64); err != nil {
		return Position{}, false
	}
	if pair[0] != nil {
		if p.Commit, err = strconv.ParseInt(*pair[0], 10, 64); err != nil {
			return Position{}, false
		}
	}
	_ = lsn // source.lsn equals the pair's second half
	return p, true
}

// decodeKey returns the key's column names in order and its compacted payload.
func decodeKey(key []byte) ([]string, string, error) {
	key = bytes.TrimSpace(key)
	if len(key) == 0 || string(key) == "null" {
		return nil, "", nil
	}
	if !json.Valid(key) {
		return nil, "", poison(ReasonNotJSON, "the key is not JSON")
	}
	payload := json.RawMessage(key)
	var top map[string]json.RawMessage
	if json.Unmarshal(key, &top) == nil && len(top) == 2 && top["schema"] != nil && top["payload"] != nil {
		payload = top["payload"]
	}
	cols, err := objectKeys(payload)
	if err != nil {
		return nil, "", poison(ReasonNotEnvelope, "the key is not a JSON object of key columns")
	}
	if cols == nil {
		return nil, "", nil
	}
	return cols, string(compact(payload)), nil
}

// objectKeys returns the keys of a JSON object in their order (nil for null).
func objectKeys(raw json.RawMessage) ([]string, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	tok, err := dec.Token()
	if err != nil {
		return nil, err
	}
	if tok == nil {
		return nil, nil
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return nil, errors.New("not an object")
	}
	keys := []string{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, err
		}
		keys = append(keys, tok.(string))
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			return nil, err
		}
	}
	return keys, nil
}

// decodeRow decodes a before or after image (nil for null).
func decodeRow(raw json.RawMessage, schema map[string]*field) (routes.Row, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	var cols map[string]json.RawMessage
	if err := json.Unmarshal(raw, &cols); err != nil {
		return nil, poison(ReasonNotEnvelope, "a row image is not a JSON object")
	}
	row := make(routes.Row, len(cols))
	for name, v := range cols {
		val, ok := convert(v, schema[name])
		if ok {
			row[name] = val
		}
	}
	return row, nil
}

// keyOnly reports whether a delete's old image holds nothing but the key: every other
// column null, as Debezium fills them under REPLICA IDENTITY DEFAULT.
func keyOnly(before routes.Row, key []string) bool {
	if key == nil {
		return false
	}
	nonKey := 0
	for name, v := range before {
		isKey := false
		for _, k := range key {
			if k == name {
				isKey = true
			}
		}
		if isKey {
			continue
		}
		if !v.Null {
			return false
		}
		nonKey++
	}
	return nonKey > 0
}

// Change returns the routes.Change of e, or nil for what no route fires on (truncates,
// logical decoding messages). Unknown old values are left out, as replication capture
// leaves out what the server did not send: a key-only before keeps only the key; an update
// without before keeps the key from after (a key change arrives as delete + create);
// columns after could not read are taken from before when it has them.
func (e *Event) Change() *routes.Change {
	c := &routes.Change{Table: e.Table, KeyColumns: e.KeyColumns}
	switch e.Op {
	case 'c':
		c.Op, c.New = routes.OpInsert, e.After
	case 'r':
		c.Op, c.New, c.Snapshot = routes.OpInsert, e.After, true
	case 'u':
		c.Op, c.New, c.Old = routes.OpUpdate, e.After, e.Before
		if c.Old == nil {
			c.Old = routes.Row{}
			for _, k := range e.KeyColumns {
				if v, ok := c.New[k]; ok {
					c.Old[k] = v
				}
			}
		}
		for name, v := range c.Old {
			if _, ok := c.New[name]; !ok {
				c.New[name] = v
			}
		}
	case 'd':
		c.Op, c.Old = routes.OpDelete, e.Before
		if e.BeforeKeyOnly {
			c.Old = routes.Row{}
			for _, k := range e.KeyColumns {
				if v, ok := e.Before[k]; ok {
					c.Old[k] = v
				}
			}
		}
	default:
		return nil
	}
	return c
}
