package outbox_test

import (
	"context"
	"encoding/json"
	"regexp"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/tocsin/tocsin/internal/outbox"
	"github.com/tocsin/tocsin/internal/pgtest"
	"github.com/tocsin/tocsin/internal/routes"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

type stored struct {
	ID                         int64
	Recipient, Topic, Kind     string
	Route, Op, Table, GroupKey *string
	Key, Data, Old             json.RawMessage
	Changed                    []string
}

func readAll(t *testing.T, pool *pgxpool.Pool) []stored {
	t.Helper()
	rows, err := pool.Query(context.Background(), `SELECT id, recipient, topic, kind, route, op, table_name,
		group_key, key, data, old, changed FROM tocsin.outbox ORDER BY id`)
	require.NoError(t, err)
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (s stored, err error) {
		err = r.Scan(&s.ID, &s.Recipient, &s.Topic, &s.Kind, &s.Route, &s.Op, &s.Table, &s.GroupKey,
			&s.Key, &s.Data, &s.Old, &s.Changed)
		return s, err
	})
	require.NoError(t, err)
	return out
}

func ptr(s string) *string { return &s }

func TestInsertTxWritesRowsInOrderWithNulls(t *testing.T) {
	t.Parallel()
	db := pgtest.New(t)
	ctx := context.Background()
	rows := []outbox.Row{
		{Recipient: "alice", Route: "comments", Topic: "comment", Kind: "notification", Op: "update",
			Table: "public.comment", Key: json.RawMessage(`{"id": 1}`), Data: json.RawMessage(`{"body":"hi"}`),
			Old: json.RawMessage(`{"body":"hello"}`), Changed: []string{"body"},
			GroupBy: json.RawMessage(`[12,{"b":1,"a":"x"}]`)},
		{Recipient: "bob", Topic: "order", Kind: "message", GroupKey: "orders"},
		{Recipient: "alice", Topic: "inbox", Kind: "inbox", Changed: []string{}},
	}
	err := pgx.BeginFunc(ctx, db.Pool, func(tx pgx.Tx) error { return outbox.InsertTx(ctx, tx, rows) })
	require.NoError(t, err)

	got := readAll(t, db.Pool)
	require.Len(t, got, 3)
	require.Less(t, got[0].ID, got[1].ID, "ids follow the given order")
	require.Less(t, got[1].ID, got[2].ID)

	a := got[0]
	require.Equal(t, "alice", a.Recipient)
	require.Equal(t, ptr("comments"), a.Route)
	require.Equal(t, ptr("update"), a.Op)
	require.Equal(t, ptr("public.comment"), a.Table)
	require.JSONEq(t, `{"id":1}`, string(a.Key))
	require.JSONEq(t, `{"body":"hi"}`, string(a.Data))
	require.JSONEq(t, `{"body":"hello"}`, string(a.Old))
	require.Equal(t, []string{"body"}, a.Changed)
	// The jsonb text form, exactly what a route trigger's jsonb_build_array(…)::text stores.
	require.Equal(t, ptr(`[12, {"a": "x", "b": 1}]`), a.GroupKey)

	b := got[1]
	require.Nil(t, b.Route, "an empty route is NULL")
	require.Nil(t, b.Op)
	require.Nil(t, b.Table)
	require.Nil(t, b.Key)
	require.Nil(t, b.Data)
	require.Nil(t, b.Old)
	require.Nil(t, b.Changed, "nil changed is NULL")
	require.Equal(t, ptr("orders"), b.GroupKey, "a group key is stored as given")

	require.NotNil(t, got[2].Changed, "an empty changed list is not NULL")
	require.Empty(t, got[2].Changed)
	require.Nil(t, got[2].GroupKey)
}

func TestInsertTxIsAtomicWithTheCallersTransaction(t *testing.T) {
	t.Parallel()
	db := pgtest.New(t)
	ctx := context.Background()
	tx, err := db.Pool.Begin(ctx)
	require.NoError(t, err)
	require.NoError(t, outbox.InsertTx(ctx, tx, []outbox.Row{{Recipient: "alice", Topic: "t", Kind: "change"}}))
	require.Empty(t, readAll(t, db.Pool), "uncommitted rows are invisible")
	require.NoError(t, tx.Rollback(ctx))
	require.Empty(t, readAll(t, db.Pool), "a rolled-back transaction leaves nothing")

	// Nothing to write is no statement at all: it works even in a failed transaction.
	tx, err = db.Pool.Begin(ctx)
	require.NoError(t, err)
	defer func() { _ = tx.Rollback(ctx) }()
	_, _ = tx.Exec(ctx, `SELECT 1/0`)
	require.NoError(t, outbox.InsertTx(ctx, tx, nil))
}

func TestInsertTxRefusesInvalidRowsBeforeWriting(t *testing.T) {
	t.Parallel()
	db := pgtest.New(t)
	ctx := context.Background()
	good := outbox.Row{Recipient: "alice", Topic: "t", Kind: "change"}
	for _, tc := range []struct {
		row  outbox.Row
		want string
	}{
		{outbox.Row{Topic: "t", Kind: "change"}, "row 2 of 2: invalid outbox row: no recipient"},
		{outbox.Row{Recipient: "a", Kind: "change"}, "row 2 of 2: invalid outbox row: no topic"},
		{outbox.Row{Recipient: "a", Topic: "t"}, "row 2 of 2: invalid outbox row: no kind"},
		{outbox.Row{Recipient: "a", Topic: "t", Kind: "change", Data: json.RawMessage(`{`)}, "data is not JSON"},
		{outbox.Row{Recipient: "a", Topic: "t", Kind: "change", GroupBy: json.RawMessage(`[1,`)}, "group_by is not JSON"},
	} {
		err := pgx.BeginFunc(ctx, db.Pool, func(tx pgx.Tx) error {
			return outbox.InsertTx(ctx, tx, []outbox.Row{good, tc.row})
		})
		require.ErrorIs(t, err, outbox.ErrInvalidRow)
		require.ErrorContains(t, err, tc.want)
	}
	require.Empty(t, readAll(t, db.Pool), "a refused batch writes nothing")
}

// Every writer of the outbox — this package, tocsin.publish and each generated route
// trigger — names Columns, and Columns is the table's writable columns.
func TestEveryWriterNamesColumns(t *testing.T) {
	t.Parallel()
	db := pgtest.New(t)
	ctx := context.Background()

	var cols []string
	require.NoError(t, db.Pool.QueryRow(ctx, `SELECT array_agg(attname::text ORDER BY attnum) FROM pg_attribute
		WHERE attrelid = 'tocsin.outbox'::regclass AND attnum > 0 AND NOT attisdropped
		  AND attname NOT IN ('id', 'created_at')`).Scan(&cols))
	require.Equal(t, strings.Join(cols, ", "), outbox.Columns)

	_, err := db.Pool.Exec(ctx, `CREATE TABLE note (id int PRIMARY KEY, owner_id text, body text)`)
	require.NoError(t, err)
	f, err := routes.Parse("routes.yaml", []byte(`
routes:
  - name: by-column
    table: public.note
    recipients: { column: owner_id }
    topic: note
  - name: by-sql
    table: public.note
    recipients: { sql: "select 'x' where :id > 0" }
    topic: note
    payload: full
    columns: [id, body]
    group: { window: 1s, by: [id] }
`))
	require.NoError(t, err)
	_, err = routes.Apply(ctx, db.Pool, f)
	require.NoError(t, err)

	rows, err := db.Pool.Query(ctx, `SELECT p.oid::regprocedure::text, p.prosrc FROM pg_proc p
		WHERE p.prosrc ~* 'insert\s+into\s+tocsin\.outbox'`)
	require.NoError(t, err)
	bodies, err := pgx.CollectRows(rows, pgx.RowToStructByPos[struct{ Name, Src string }])
	require.NoError(t, err)
	insert := regexp.MustCompile(`(?i)insert\s+into\s+tocsin\.outbox\s*\(([^)]*)\)`)
	writers := map[string]bool{}
	for _, b := range bodies {
		for _, m := range insert.FindAllStringSubmatch(b.Src, -1) {
			require.Equal(t, outbox.Columns, m[1], "%s", b.Name)
			writers[b.Name] = true
		}
	}
	require.Contains(t, writers, "tocsin.publish(text[],text,jsonb)")
	require.Len(t, writers, 3, "tocsin.publish and the two route triggers: %v", writers)
}

// A row whose route operation is registered (routes apply) is written as the route's
// trigger writes it: the tocsin.route_op id, without the five values it stands for. Any
// other row keeps them; a row with neither is refused by the table.
func TestInsertTxNamesRegisteredRouteOpsByID(t *testing.T) {
	t.Parallel()
	db := pgtest.New(t)
	ctx := context.Background()
	_, err := db.Pool.Exec(ctx, `CREATE TABLE note (id int PRIMARY KEY, owner_id text)`)
	require.NoError(t, err)
	f, err := routes.Parse("routes.yaml", []byte(`
routes:
  - name: notes
    table: public.note
    on: [insert, delete]
    recipients: { column: owner_id }
    topic: note
`))
	require.NoError(t, err)
	_, err = routes.Apply(ctx, db.Pool, f)
	require.NoError(t, err)
	tx, err := db.Pool.Begin(ctx)
	require.NoError(t, err)
	defer func() { _ = tx.Rollback(ctx) }()
	rows := []outbox.Row{
		{Recipient: "alice", Route: "notes", Topic: "note", Kind: "change", Op: "delete", Table: "public.note",
			Key: json.RawMessage(`{"id": 1}`)},
		{Recipient: "alice", Route: "notes", Topic: "other", Kind: "change", Op: "delete", Table: "public.note"},
		{Recipient: "bob", Topic: "order", Kind: "message"},
	}
	require.NoError(t, outbox.InsertTx(ctx, tx, rows))
	var got []string
	require.NoError(t, tx.QueryRow(ctx, `SELECT array_agg(concat_ws('|', o.recipient, o.route, o.topic, o.kind, o.op,
		    o.table_name, r.route, r.op, r.topic, r.kind, r.table_name) ORDER BY o.id)
		FROM tocsin.outbox o LEFT JOIN tocsin.route_op r ON r.id = o.route_op`).Scan(&got))
	require.Equal(t, []string{
		"alice|notes|delete|note|change|public.note",
		"alice|notes|other|change|delete|public.note",
		"bob|order|message",
	}, got)

	_, err = tx.Exec(ctx, `SAVEPOINT s; INSERT INTO tocsin.outbox (recipient) VALUES ('alice')`)
	require.ErrorContains(t, err, "outbox_route_op_or_topic_kind")
}
