package debezium_test

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math/big"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/tocsin/tocsin/internal/debezium"
	"github.com/tocsin/tocsin/internal/pgtest"
	"github.com/tocsin/tocsin/internal/routes"
)

// sourceSchema is the application's item table, as the trigger side of the equivalence
// test has it, with a log of every row change (old and new images, in commit order: one
// writer) from which the test writes what Debezium would have sent.
const sourceSchema = `
CREATE TABLE item (id bigint PRIMARY KEY, owner text, team int, status text, amount numeric(10,2),
                   at timestamptz, day date, ts timestamp(6), doc jsonb, body text);
CREATE TABLE change_log (n bigserial PRIMARY KEY, op text, old jsonb, new jsonb);
CREATE FUNCTION log_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO change_log (op, old, new) VALUES (TG_OP,
        CASE WHEN TG_OP <> 'INSERT' THEN to_jsonb(OLD) END, CASE WHEN TG_OP <> 'DELETE' THEN to_jsonb(NEW) END);
    RETURN NULL;
END $$;
CREATE TRIGGER log_change AFTER INSERT OR UPDATE OR DELETE ON item FOR EACH ROW EXECUTE FUNCTION log_change();
`

// itemWorkload is n random statements, each its own transaction: inserts (some with
// TOASTed bodies), updates inside and outside when_changed, owner and team changes, jsonb
// changes that leave a TOASTed body alone, and deletes. (A primary-key change is an update
// for a trigger but a delete and a create for Debezium: TestEveryOpBothEnvelopes has it.)
func itemWorkload(rng *rand.Rand, n int) []string {
	owners := []string{"alice", "bob", "carol", ""}
	statuses := []string{"draft", "open", "closed"}
	var live []int
	next := 1
	lit := func(s string) string {
		if s == "" {
			return "NULL"
		}
		return "'" + s + "'"
	}
	pick := func() int { return live[rng.IntN(len(live))] }
	var out []string
	for range n {
		if len(live) < 3 || rng.IntN(10) < 3 {
			id := next
			next++
			live = append(live, id)
			body := fmt.Sprintf("'body %d'", id)
			if rng.IntN(3) == 0 {
				body = fmt.Sprintf("(SELECT string_agg(md5(g::text || '-%d'), '') FROM generate_series(1, 200) g)", id)
			}
			out = append(out, fmt.Sprintf(`INSERT INTO item VALUES (%d, %s, %d, %s, %d.%02d, '2024-0%d-1%d 1%d:3%d:0%d.%d+02',
				'19%d-03-0%d', '2024-03-05 10:11:1%d.%06d', '{"n": %d, "tags": ["a", null]}', %s)`,
				id, lit(owners[rng.IntN(len(owners))]), 1+rng.IntN(2), lit(statuses[rng.IntN(3)]), rng.IntN(2000)-1000,
				rng.IntN(100), 1+rng.IntN(9), rng.IntN(10), rng.IntN(10), rng.IntN(10), rng.IntN(10), rng.IntN(1000),
				60+rng.IntN(40), 1+rng.IntN(9), rng.IntN(10), rng.IntN(1000000), rng.IntN(100), body))
			continue
		}
		id := pick()
		switch rng.IntN(7) {
		case 0:
			out = append(out, fmt.Sprintf(`UPDATE item SET status = %s WHERE id = %d`, lit(statuses[rng.IntN(3)]), id))
		case 1:
			out = append(out, fmt.Sprintf(`UPDATE item SET amount = amount + 1.5, ts = ts + interval '1 ms' WHERE id = %d`, id))
		case 2:
			out = append(out, fmt.Sprintf(`UPDATE item SET owner = %s WHERE id = %d`, lit(owners[rng.IntN(len(owners))]), id))
		case 3:
			out = append(out, fmt.Sprintf(`UPDATE item SET team = %d, status = %s WHERE id = %d`, 1+rng.IntN(2), lit(statuses[rng.IntN(3)]), id))
		case 4:
			out = append(out, fmt.Sprintf(`UPDATE item SET body = body || 'more' WHERE id = %d`, id))
		case 5:
			for i, l := range live {
				if l == id {
					live = append(live[:i], live[i+1:]...)
					break
				}
			}
			out = append(out, fmt.Sprintf(`DELETE FROM item WHERE id = %d`, id))
		default:
			out = append(out, fmt.Sprintf(`UPDATE item SET doc = doc || '{"x": 1}' WHERE id = %d`, id))
		}
	}
	return out
}

// toDebezium encodes a to_jsonb row image (written in a UTC session) as Debezium's
// PostgreSQL connector does with its defaults.
func toDebezium(t *testing.T, img map[string]json.RawMessage) row {
	t.Helper()
	r := row{}
	for name, raw := range img {
		if string(raw) == "null" {
			r[name] = nil
			continue
		}
		var s string
		_ = json.Unmarshal(raw, &s)
		switch name {
		case "amount":
			n, ok := new(big.Int).SetString(strings.Replace(string(raw), ".", "", 1), 10)
			require.True(t, ok, string(raw))
			r[name] = twosComplement(n)
		case "at":
			at, err := time.Parse(time.RFC3339Nano, s)
			require.NoError(t, err)
			r[name] = at.UTC().Format(time.RFC3339Nano)
		case "day":
			d, err := time.Parse("2006-01-02", s)
			require.NoError(t, err)
			r[name] = d.Unix() / 86400
		case "ts":
			ts, err := time.Parse("2006-01-02T15:04:05.999999", s)
			require.NoError(t, err)
			r[name] = ts.UnixMicro()
		case "doc":
			r[name] = string(raw) // io.debezium.data.Json: the jsonb's text
		default:
			r[name] = raw
		}
	}
	return r
}

func twosComplement(n *big.Int) string {
	b := n.Bytes()
	if n.Sign() >= 0 {
		if len(b) == 0 || b[0]&0x80 != 0 {
			b = append([]byte{0}, b...)
		}
		return base64.StdEncoding.EncodeToString(b)
	}
	// Negative: 2^(8k) + n in k bytes, k large enough for the sign bit.
	k := len(b)
	for {
		m := new(big.Int).Add(new(big.Int).Lsh(big.NewInt(1), uint(8*k)), n)
		out := m.Bytes()
		if len(out) == k && out[0]&0x80 != 0 {
			return base64.StdEncoding.EncodeToString(out)
		}
		k++
	}
}

// TestSameFeedAsTriggers runs one random workload on a table with trigger routes, writes
// the change events Debezium would have written for it (full before images, as under
// REPLICA IDENTITY FULL; unchanged TOASTed bodies as the placeholder; a tombstone after each
// delete; with schemas.enable), feeds them to debezium routes of the
// same definition through Kafka, and requires the same feed, recipient by recipient.
func TestSameFeedAsTriggers(t *testing.T) {
	t.Parallel()
	seed := uint64(time.Now().UnixNano())
	t.Logf("workload seed %d", seed)
	stmts := itemWorkload(rand.New(rand.NewPCG(seed, seed)), 250)
	stmts = append(stmts, `INSERT INTO item (id, owner) VALUES (999999999, 'marker')`)

	// The trigger side.
	src := pgtest.New(t)
	_, err := src.Pool.Exec(t.Context(), sourceSchema+tocsinSchema)
	require.NoError(t, err)
	f, err := routes.Parse("routes.yaml", []byte(strings.ReplaceAll(routesYAML, "capture: debezium", "capture: trigger")))
	require.NoError(t, err)
	_, err = routes.Apply(t.Context(), src.Pool, f)
	require.NoError(t, err)
	conn, err := src.Pool.Acquire(t.Context())
	require.NoError(t, err)
	_, err = conn.Exec(t.Context(), `SET TIME ZONE 'UTC'`)
	require.NoError(t, err)
	for _, s := range stmts {
		_, err := conn.Exec(t.Context(), s)
		require.NoError(t, err, s)
	}
	conn.Release()
	trig := &bundle{ctx: t.Context(), db: src, pool: src.Pool, logs: &syncBuffer{}}
	trig.start(t, debezium.Config{Kafka: debezium.Kafka{Brokers: []string{"127.0.0.1:1"}}}) // its sequencer; no debezium route there

	// What Debezium would have written, from the log.
	rows, err := src.Pool.Query(t.Context(), `SELECT op, coalesce(old::text, 'null'), coalesce(new::text, 'null') FROM change_log ORDER BY n`)
	require.NoError(t, err)
	var recs []*kgo.Record
	n, toasted := int64(0), 0
	var op, oldText, newText string
	_, err = pgx.ForEachRow(rows, []any{&op, &oldText, &newText}, func() error {
		n++
		var oldImg, newImg map[string]json.RawMessage
		require.NoError(t, json.Unmarshal([]byte(oldText), &oldImg))
		require.NoError(t, json.Unmarshal([]byte(newText), &newImg))
		const schemas = true // without schemas, dates, timestamps and numerics stay Debezium's (documented)
		ch := change{commit: 10 * n, lsn: 10*n + 5}
		switch op {
		case "INSERT":
			ch.op, ch.after = "c", toDebezium(t, newImg)
		case "DELETE":
			ch.op, ch.before = "d", toDebezium(t, oldImg)
		case "UPDATE":
			ch.op, ch.before, ch.after = "u", toDebezium(t, oldImg), toDebezium(t, newImg)
			if string(oldImg["body"]) == string(newImg["body"]) && len(oldImg["body"]) > 2000 {
				ch.after["body"] = debezium.Unavailable // an unchanged TOASTed value
				toasted++
			}
		}
		img := newImg
		if op == "DELETE" {
			img = oldImg
		}
		require.NoError(t, json.Unmarshal(img["id"], &ch.id))
		recs = append(recs, ch.record(schemas))
		if op == "DELETE" {
			recs = append(recs, tombstone(ch.id, schemas))
		}
		return nil
	})
	require.NoError(t, err)

	// The Debezium side, on one partition so that the order across keys is comparable too
	// (Kafka orders per partition, so per key).
	b := setup(t, 1, routesYAML)
	c := b.start(t, b.config())
	b.produce(t, recs...)

	feeds := make([]map[string][]string, 2)
	for i, side := range []*bundle{trig, b} {
		eventually(t, time.Minute, "the marker in the feed", func() bool {
			return side.count(t, `SELECT count(*) FROM tocsin.feed WHERE recipient = 'marker'`) == 1 &&
				side.count(t, `SELECT count(*) FROM tocsin.outbox`) == 0
		})
		feeds[i] = side.feedByRecipient(t)
	}
	total := 0
	for r, entries := range feeds[0] {
		total += len(entries)
		require.Equal(t, entries, feeds[1][r], "recipient %q", r)
	}
	require.Len(t, feeds[1], len(feeds[0]))
	require.Zero(t, c.Resent())
	require.Empty(t, c.Skipped()["not_envelope"])
	require.NotZero(t, toasted, "the workload had unchanged TOASTed values")
	t.Logf("%d statements, %d records (%d with a TOAST placeholder), %d recipients, %d entries, identical",
		len(stmts), len(recs), toasted, len(feeds[0]), total)
}

// feedByRecipient returns each recipient's feed entries in position order, without
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
	return out
}
