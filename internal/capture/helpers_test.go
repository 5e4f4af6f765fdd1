package capture_test

import (
	"context"
	"io"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/tocsin/tocsin/internal/capture"
	"github.com/tocsin/tocsin/internal/pgtest"
	"github.com/tocsin/tocsin/internal/routes"
	"github.com/tocsin/tocsin/internal/sequencer"
)

func TestMain(m *testing.M) {
	if url := os.Getenv(childEnv); url != "" {
		runChild(url) // never returns
	}
	pgtest.Main(m)
}

// schema is the application of these tests: items owned by users, in teams.
const schema = `
CREATE TABLE member (team int, user_id text, PRIMARY KEY (team, user_id));
INSERT INTO member VALUES (1, 'm1'), (1, 'm2'), (2, 'm3');
CREATE TABLE item (
    id bigint PRIMARY KEY, owner text, team int, status text, amount numeric, flag bool,
    at timestamptz, day date, doc jsonb, tags text[], nums int[], uid uuid, score float8, body text
);
`

// routesYAML covers every routing feature; %s is the capture mode.
const routesYAML = `
routes:
  - name: item-owner
    table: item
    recipients: { column: owner }
    topic: item
    payload: full
    columns: [id, owner, team, status, amount, flag, at, day, doc, tags, nums, uid, score, body]
    capture: CAPTURE
  - name: item-team
    table: item
    on: [insert, update]
    recipients: { static: ["team-digest"] }
    topic: team
    payload: full
    columns: [id, team]
    group: { window: 1h, by: [owner, team] }
    capture: CAPTURE
  - name: item-status
    table: item
    on: [update, delete]
    when_changed: [status]
    recipients: { sql: "select user_id from member where team = :team" }
    topic: status
    kind: notification
    capture: CAPTURE
  - name: item-audit
    table: item
    on: [insert, delete]
    recipients: { static: ["service:audit"] }
    topic: audit
    payload: none
    capture: CAPTURE
`

type bundle struct {
	ctx  context.Context
	db   *pgtest.DB
	pool *pgxpool.Pool
}

// setup gives the test a database with the schema and routes applied in capture mode mode.
func setup(t *testing.T, mode routes.Capture) *bundle {
	t.Helper()
	db := pgtest.New(t)
	b := &bundle{ctx: context.Background(), db: db, pool: db.Pool}
	_, err := b.pool.Exec(b.ctx, schema)
	require.NoError(t, err)
	b.apply(t, strings.ReplaceAll(routesYAML, "CAPTURE", string(mode)))
	if mode == routes.CaptureReplication {
		t.Cleanup(func() { dropSlot(t, db.Pool) }) // before the database is dropped
	}
	return b
}

func (b *bundle) apply(t testing.TB, src string) routes.Summary {
	t.Helper()
	f, err := routes.Parse("routes.yaml", []byte(src))
	require.NoError(t, err)
	s, err := routes.Apply(b.ctx, b.pool, f)
	require.NoError(t, err)
	return s
}

// dropSlot drops the test database's slot: a database with a slot cannot be dropped.
func dropSlot(t *testing.T, pool *pgxpool.Pool) {
	ctx := context.Background()
	slot, err := routes.SlotName(ctx, pool)
	if err == nil {
		_, _ = routes.DropSlot(ctx, pool, slot)
	}
}

// start runs a sequencer and a consumer until the test ends.
func (b *bundle) start(t *testing.T, cfg capture.Config, log *slog.Logger) *capture.Consumer {
	t.Helper()
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	ctx, cancel := context.WithCancel(b.ctx)
	seq := sequencer.New(b.pool, sequencer.Config{PollInterval: 5 * time.Millisecond}, log)
	cfg.DatabaseURL = b.db.URL
	if cfg.WakeFunc == nil {
		cfg.WakeFunc = seq.Wake
	}
	c := capture.New(b.pool, cfg, log)
	done := make(chan struct{}, 2)
	go func() { _ = seq.Run(ctx); done <- struct{}{} }()
	go func() { _ = c.Run(ctx); done <- struct{}{} }()
	t.Cleanup(func() { cancel(); <-done; <-done })
	return c
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (b *bundle) count(t testing.TB, sql string, args ...any) int {
	t.Helper()
	var n int
	require.NoError(t, b.pool.QueryRow(b.ctx, sql, args...).Scan(&n))
	return n
}

// feedByRecipient returns each recipient's feed entries, in position order, without
// positions or timestamps.
func (b *bundle) feedByRecipient(t *testing.T) map[string][]string {
	t.Helper()
	rows, err := b.pool.Query(b.ctx, `
		SELECT recipient, jsonb_build_object('route', route, 'topic', topic, 'kind', kind, 'op', op,
		       'table', table_name, 'key', key, 'data', data, 'old', old, 'changed', changed,
		       'group_key', group_key)::text
		FROM tocsin.feed ORDER BY position`)
	require.NoError(t, err)
	out := map[string][]string{}
	var r, e string
	_, err = pgx.ForEachRow(rows, []any{&r, &e}, func() error {
		out[r] = append(out[r], e)
		return nil
	})
	require.NoError(t, err)
	// Grouped rows wait in group_pending (their window is an hour): compare them too.
	rows, err = b.pool.Query(b.ctx, `
		SELECT recipient, jsonb_build_object('route', route, 'group_key', group_key, 'topic', topic,
		       'table', table_name, 'key', key, 'data', data)::text
		FROM tocsin.group_pending ORDER BY id`)
	require.NoError(t, err)
	_, err = pgx.ForEachRow(rows, []any{&r, &e}, func() error {
		out["pending:"+r] = append(out["pending:"+r], e)
		return nil
	})
	require.NoError(t, err)
	return out
}
