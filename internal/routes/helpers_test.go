package routes_test

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/tocsin/tocsin/internal/pgtest"
	"github.com/tocsin/tocsin/internal/routes"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// schema is a small ePortfolio: portfolios with owners and members, comments on them.
const schema = `
CREATE TABLE portfolio (id bigint PRIMARY KEY, owner_id text);
CREATE TABLE portfolio_member (portfolio_id bigint, user_id text, role text, PRIMARY KEY (portfolio_id, user_id));
CREATE TABLE comment (
    id bigint PRIMARY KEY, portfolio_id bigint, owner_id text, body text, status text,
    doc json, tags text[]
);
CREATE TABLE no_key (id int, owner_id text);
CREATE VIEW comment_view AS SELECT * FROM comment;
CREATE SCHEMA "Odd ""Schema""";
CREATE TABLE "Odd ""Schema""".":Weird Table$" ("Key Col" int, "Own:er" text, PRIMARY KEY ("Key Col"));
INSERT INTO portfolio VALUES (1, 'alice'), (2, 'bob');
INSERT INTO portfolio_member VALUES (1, 'alice', 'owner'), (1, 'carol', 'reader'), (1, 'dave', 'reader'),
                                    (2, 'bob', 'owner');
`

type bundle struct {
	ctx  context.Context
	pool *pgxpool.Pool
}

func setup(t *testing.T) *bundle {
	t.Helper()
	db := pgtest.New(t)
	ctx := context.Background()
	_, err := db.Pool.Exec(ctx, schema)
	require.NoError(t, err)
	return &bundle{ctx: ctx, pool: db.Pool}
}

// apply parses src and applies it, failing the test on any error.
func (b *bundle) apply(t *testing.T, src string) routes.Summary {
	t.Helper()
	f, err := routes.Parse("routes.yaml", []byte(src))
	require.NoError(t, err)
	s, err := routes.Apply(b.ctx, b.pool, f)
	require.NoError(t, err)
	return s
}

func (b *bundle) exec(t *testing.T, sql string, args ...any) {
	t.Helper()
	_, err := b.pool.Exec(b.ctx, sql, args...)
	require.NoError(t, err)
}

// entry is an outbox row; nil maps and slices stand for NULL.
type entry struct {
	Recipient string
	Route     string
	Topic     string
	Kind      string
	Op        string
	TableName string
	Key       map[string]any
	Data      map[string]any
	Old       map[string]any
	Changed   []string
	GroupKey  *string
}

// drain returns the outbox rows in insertion order, sorted by recipient within a statement,
// and empties the outbox. A route's constants come from the row's route_op, as the
// sequencer reads them; the row itself must not repeat them.
func (b *bundle) drain(t *testing.T) []entry {
	t.Helper()
	rows, err := b.pool.Query(b.ctx, `
		WITH d AS (DELETE FROM tocsin.outbox RETURNING *)
		SELECT d.recipient, r.route, r.topic, r.kind, r.op, r.table_name, d.key, d.data, d.old,
		       d.changed, d.group_key
		FROM d JOIN tocsin.route_op r ON r.id = d.route_op
		WHERE num_nulls(d.route, d.topic, d.kind, d.op, d.table_name) = 5
		ORDER BY d.recipient, d.id`)
	require.NoError(t, err)
	out, err := pgx.CollectRows(rows, pgx.RowToStructByPos[entry])
	require.NoError(t, err)
	return out
}

func ptr(s string) *string { return &s }
