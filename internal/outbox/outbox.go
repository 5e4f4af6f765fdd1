package outbox

import (
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// Columns is the column list every writer of tocsin.outbox names, in this order: the Go
// insert, the route trigger generator and tocsin.publish. id and created_at take their
// defaults. A row of a route names its tocsin.route_op in route_op and leaves route, topic,
// kind, op and table_name NULL: the sequencer fills them in from route_op.
const Columns = "recipient, route, topic, kind, op, table_name, key, data, old, changed, group_key, route_op"

// Row is one tocsin.outbox row: one future feed entry of one recipient. Empty strings and
// nil slices are stored as NULL.
type Row struct {
	Recipient string
	Route     string // the route that captured the change; "" for messages and inbox entries
	Topic     string
	Kind      string // change, notification, message, digest or inbox
	Op        string // insert, update or delete; "" when not a row change
	Table     string // schema.table of a row change
	Key       json.RawMessage
	Data      json.RawMessage
	Old       json.RawMessage
	Changed   []string // the watched columns an update changed; nil when not tracked
	// GroupKey is stored as given: the group of a published message, or of a digest that
	// carries its window's key back.
	GroupKey string
	// GroupBy, when set, is a route's group-by values as a JSON array; the stored group key
	// is its jsonb text form (what a route trigger stores) and GroupKey is ignored.
	GroupBy json.RawMessage
}

// ErrInvalidRow is returned by InsertTx for a row that cannot be written.
var ErrInvalidRow = errors.New("invalid outbox row")

//go:embed insert.sql
var insertSQL string

// InsertTx writes rows into tocsin.outbox inside tx, in one statement, in the given order.
// See the package documentation for what it guarantees.
func InsertTx(ctx context.Context, tx pgx.Tx, rows []Row) error {
	if len(rows) == 0 {
		return nil
	}
	args, err := insertArgs(rows)
	if err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, insertSQL, args...); err != nil {
		return fmt.Errorf("writing %d outbox rows: %w", len(rows), err)
	}
	return nil
}

// QueueInsert queues InsertTx's statement on b, for a caller that sends b as one
// transaction (a batch without transaction statements runs as one implicit transaction, or
// inside the caller's): one round trip for the rows and whatever else commits with them.
// The batch's results report the statement's failure.
func QueueInsert(b *pgx.Batch, rows []Row) error {
	if len(rows) == 0 {
		return nil
	}
	args, err := insertArgs(rows)
	if err != nil {
		return err
	}
	b.Queue(insertSQL, args...)
	return nil
}

// insertArgs checks rows and returns the insert's arguments: one array per column.
func insertArgs(rows []Row) ([]any, error) {
	cols := make([][]*string, 12)
	for i := range cols {
		cols[i] = make([]*string, len(rows))
	}
	for i := range rows {
		r := &rows[i]
		if err := r.check(); err != nil {
			return nil, fmt.Errorf("writing outbox row %d of %d: %w", i+1, len(rows), err)
		}
		cols[0][i], cols[1][i], cols[2][i] = &r.Recipient, text(r.Route), &r.Topic
		cols[3][i], cols[4][i], cols[5][i] = &r.Kind, text(r.Op), text(r.Table)
		cols[6][i], cols[7][i], cols[8][i] = raw(r.Key), raw(r.Data), raw(r.Old)
		if r.Changed != nil {
			b, err := json.Marshal(r.Changed)
			if err != nil {
				return nil, fmt.Errorf("writing outbox row %d of %d: encoding changed: %w", i+1, len(rows), err)
			}
			cols[9][i] = raw(b)
		}
		cols[10][i], cols[11][i] = text(r.GroupKey), raw(r.GroupBy)
	}
	args := make([]any, len(cols))
	for i := range cols {
		args[i] = cols[i]
	}
	return args, nil
}

// check refuses what the table or the feed's readers would refuse later, and less clearly.
func (r *Row) check() error {
	switch {
	case r.Recipient == "":
		return fmt.Errorf("%w: no recipient", ErrInvalidRow)
	case r.Topic == "":
		return fmt.Errorf("%w: no topic", ErrInvalidRow)
	case r.Kind == "":
		return fmt.Errorf("%w: no kind", ErrInvalidRow)
	}
	for _, f := range []struct {
		name string
		v    json.RawMessage
	}{{"key", r.Key}, {"data", r.Data}, {"old", r.Old}, {"group_by", r.GroupBy}} {
		if f.v != nil && !json.Valid(f.v) {
			return fmt.Errorf("%w: %s is not JSON", ErrInvalidRow, f.name)
		}
	}
	return nil
}

func text(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

func raw(b json.RawMessage) *string {
	if b == nil {
		return nil
	}
	s := string(b)
	return &s
}
