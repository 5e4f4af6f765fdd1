package debezium_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/tocsin/tocsin/internal/debezium"
	"github.com/tocsin/tocsin/internal/pgtest"
	"github.com/tocsin/tocsin/internal/routes"
	"github.com/tocsin/tocsin/internal/sequencer"
)

func TestMain(m *testing.M) {
	if url := os.Getenv(childEnv); url != "" {
		runChild(url, os.Getenv(childBrokersEnv)) // never returns
	}
	pgtest.Main(m)
}

// prefix is Debezium's topic.prefix in these tests; topic is the item table's topic.
const (
	prefix = "app"
	topic  = "app.public.item"
)

// tocsinSchema is what Tocsin's own database holds: the membership table recipient
// queries read. The routed table (public.item) lives only in the "application's"
// database, which these tests do not have: Debezium's events stand for it.
const tocsinSchema = `CREATE TABLE member (team int, user_id text, PRIMARY KEY (team, user_id));
INSERT INTO member VALUES (1, 'm1'), (1, 'm2'), (2, 'm3');`

// routesYAML covers every routing feature on the debezium item table.
const routesYAML = `
routes:
  - name: item-owner
    table: item
    recipients: { column: owner }
    topic: item
    payload: full
    columns: [id, owner, team, status, amount, at, day, ts, doc, body]
    capture: debezium
  - name: item-status
    table: item
    on: [update, delete]
    when_changed: [status]
    recipients: { sql: "select user_id from member where team = :team::int" }
    topic: status
    kind: notification
    capture: debezium
  - name: item-audit
    table: item
    on: [insert, delete]
    recipients: { static: ["service:audit"] }
    topic: audit
    payload: none
    capture: debezium
`

type bundle struct {
	ctx     context.Context
	db      *pgtest.DB
	pool    *pgxpool.Pool
	kafka   *kfake.Cluster
	brokers []string
	prod    *kgo.Client
	logs    *syncBuffer
}

// setup gives the test a database with routes applied and a Kafka cluster whose item
// topic has partitions partitions.
func setup(t testing.TB, partitions int32, src string) *bundle {
	t.Helper()
	return setupWith(t, partitions, src, nil, nil)
}

// setupWith is setup with more options for the Kafka cluster and the producer.
func setupWith(t testing.TB, partitions int32, src string, kopts []kfake.Opt, popts []kgo.Opt) *bundle {
	t.Helper()
	db := pgtest.New(t)
	b := &bundle{ctx: context.Background(), db: db, pool: db.Pool, logs: &syncBuffer{}}
	_, err := b.pool.Exec(b.ctx, tocsinSchema)
	require.NoError(t, err)
	f, err := routes.Parse("routes.yaml", []byte(src))
	require.NoError(t, err)
	_, err = routes.Apply(b.ctx, b.pool, f)
	require.NoError(t, err)

	b.kafka, err = kfake.NewCluster(append([]kfake.Opt{kfake.NumBrokers(1),
		kfake.SeedTopics(partitions, topic, prefix+".public.other")}, kopts...)...)
	require.NoError(t, err)
	t.Cleanup(b.kafka.Close)
	b.brokers = b.kafka.ListenAddrs()
	b.prod, err = kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(b.brokers...), kgo.DefaultProduceTopic(topic),
		kgo.RecordPartitioner(kgo.StickyKeyPartitioner(nil)), kgo.ProducerLinger(0)}, popts...)...)
	require.NoError(t, err)
	t.Cleanup(b.prod.Close)
	return b
}

func (b *bundle) config() debezium.Config {
	return debezium.Config{Kafka: debezium.Kafka{Brokers: b.brokers, Group: "tocsin"}, TopicPrefix: prefix,
		RefreshInterval: 200 * time.Millisecond, RetryInterval: 50 * time.Millisecond}
}

// start runs a sequencer and a consumer until the test ends.
func (b *bundle) start(t testing.TB, cfg debezium.Config) *debezium.Consumer {
	t.Helper()
	log := slog.New(slog.NewTextHandler(b.logs, &slog.HandlerOptions{Level: slog.LevelWarn}))
	ctx, cancel := context.WithCancel(b.ctx)
	seq := sequencer.New(b.pool, sequencer.Config{PollInterval: 5 * time.Millisecond}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if cfg.WakeFunc == nil {
		cfg.WakeFunc = seq.Wake
	}
	c := debezium.New(b.pool, cfg, log)
	done := make(chan struct{}, 2)
	go func() { _ = seq.Run(ctx); done <- struct{}{} }()
	go func() { _ = c.Run(ctx); done <- struct{}{} }()
	t.Cleanup(func() { cancel(); <-done; <-done })
	return c
}

// produce writes records to the item topic (key and value as given; nil value is a
// tombstone), synchronously, in order.
func (b *bundle) produce(t testing.TB, recs ...*kgo.Record) {
	t.Helper()
	require.NoError(t, b.prod.ProduceSync(b.ctx, recs...).FirstErr())
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

// feed returns the feed as "recipient route op key data old changed" lines, in position
// order.
func (b *bundle) feed(t testing.TB) []string {
	t.Helper()
	rows, err := b.pool.Query(b.ctx, `
		SELECT concat_ws(' ', recipient, route, op, key::text, coalesce(data::text, '-'), coalesce(old::text, '-'),
		                 coalesce(array_to_string(changed, ','), '-'))
		FROM tocsin.feed ORDER BY position`)
	require.NoError(t, err)
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	return out
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// column is a column of the source item table as Debezium's PostgreSQL connector
// describes it with its defaults (time.precision.mode=adaptive, decimal.handling.mode=
// precise): item (id bigint PRIMARY KEY, owner text, team int, status text,
// amount numeric(10,2), at timestamptz, day date, ts timestamp(6), doc jsonb, body text).
type column struct {
	name, typ, logical string
	params             map[string]string
}

var itemColumns = []column{
	{"id", "int64", "", nil},
	{"owner", "string", "", nil},
	{"team", "int32", "", nil},
	{"status", "string", "", nil},
	{"amount", "bytes", "org.apache.kafka.connect.data.Decimal", map[string]string{"scale": "2", "connect.decimal.precision": "10"}},
	{"at", "string", "io.debezium.time.ZonedTimestamp", nil},
	{"day", "int32", "io.debezium.time.Date", nil},
	{"ts", "int64", "io.debezium.time.MicroTimestamp", nil},
	{"doc", "string", "io.debezium.data.Json", nil},
	{"body", "string", "", nil},
}

// row is a row image in Debezium's encoding of each column.
type row map[string]any

// change is one change event of the item table.
type change struct {
	op            string // c, u, d, r, t
	before, after row
	id            int64 // the key
	commit, lsn   int64 // source.sequence
}

func fieldSchema(c column, optional bool) map[string]any {
	f := map[string]any{"type": c.typ, "optional": optional, "field": c.name}
	if c.logical != "" {
		f["name"] = c.logical
		f["version"] = 1
	}
	if c.params != nil {
		f["parameters"] = c.params
	}
	return f
}

func rowSchema(field string) map[string]any {
	var fields []any
	for _, c := range itemColumns {
		fields = append(fields, fieldSchema(c, c.name != "id"))
	}
	return map[string]any{"type": "struct", "fields": fields, "optional": true, "name": "app.public.item.Value", "field": field}
}

// record is ch as Debezium's JSON converter writes it, with or without schemas.
func (ch change) record(schemas bool) *kgo.Record {
	var before, after any
	if ch.before != nil {
		before = map[string]any(ch.before)
	}
	if ch.after != nil {
		after = map[string]any(ch.after)
	}
	snapshot := "false"
	if ch.op == "r" {
		snapshot = "true"
	}
	source := map[string]any{"version": "2.7.3.Final", "connector": "postgresql", "name": prefix,
		"ts_ms": 1764216143512, "snapshot": snapshot, "db": "app",
		"sequence": fmt.Sprintf(`["%d","%d"]`, ch.commit, ch.lsn), "schema": "public", "table": "item",
		"txId": 780 + ch.commit, "lsn": ch.lsn, "xmin": nil}
	payload := map[string]any{"before": before, "after": after, "source": source, "op": ch.op,
		"ts_ms": 1764216143600, "transaction": nil}
	key := map[string]any{"id": ch.id}
	var value any = payload
	var k any = key
	if schemas {
		value = map[string]any{"schema": map[string]any{
			"type": "struct", "optional": false, "name": "app.public.item.Envelope", "version": 2,
			"fields": []any{rowSchema("before"), rowSchema("after"),
				map[string]any{"type": "struct", "optional": false, "name": "io.debezium.connector.postgresql.Source", "field": "source",
					"fields": []any{
						map[string]any{"type": "string", "optional": false, "field": "version"},
						map[string]any{"type": "string", "optional": true, "field": "sequence"},
						map[string]any{"type": "string", "optional": false, "field": "schema"},
						map[string]any{"type": "string", "optional": false, "field": "table"},
						map[string]any{"type": "int64", "optional": true, "field": "lsn"}}},
				map[string]any{"type": "string", "optional": false, "field": "op"},
				map[string]any{"type": "int64", "optional": true, "field": "ts_ms"}}},
			"payload": payload}
		k = map[string]any{"schema": map[string]any{"type": "struct", "optional": false, "name": "app.public.item.Key",
			"fields": []any{map[string]any{"type": "int64", "optional": false, "field": "id"}}}, "payload": key}
	}
	kb, _ := json.Marshal(k)
	vb, _ := json.Marshal(value)
	return &kgo.Record{Key: kb, Value: vb}
}

// tombstone is the record Debezium writes after a delete of id.
func tombstone(id int64, schemas bool) *kgo.Record {
	r := change{id: id}.record(schemas)
	r.Value = nil
	return r
}

// records returns chs as records, with or without schemas.
func records(schemas bool, chs ...change) []*kgo.Record {
	var out []*kgo.Record
	for _, ch := range chs {
		out = append(out, ch.record(schemas))
	}
	return out
}
