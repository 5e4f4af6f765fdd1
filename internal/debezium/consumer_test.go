package debezium_test

import (
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/tocsin/tocsin/internal/debezium"
)

// The item row of these tests, in Debezium's encodings.
var (
	atUTC = time.Date(2026, 11, 27, 4, 2, 23, 512942000, time.UTC)
	day   = time.Date(2026, 11, 27, 0, 0, 0, 0, time.UTC).Unix() / 86400
	ts    = time.Date(2026, 11, 27, 4, 2, 23, 500000000, time.UTC).UnixMicro()
)

// amount encodes numeric(10,2) cents/100 as Connect's Decimal does: the unscaled value,
// big-endian two's complement, shortest form, base64.
func amount(cents int64) string {
	b := make([]byte, 8)
	binary.BigEndian.PutUint64(b, uint64(cents))
	for len(b) > 1 && ((b[0] == 0 && b[1]&0x80 == 0) || (b[0] == 0xff && b[1]&0x80 != 0)) {
		b = b[1:]
	}
	return base64.StdEncoding.EncodeToString(b)
}

func item(id int64, owner string, team int, status string, cents int64, body string) row {
	return row{"id": id, "owner": owner, "team": team, "status": status, "amount": amount(cents),
		"at": atUTC.Format(time.RFC3339Nano), "day": day, "ts": ts, "doc": `{"a": [1, 2], "b": null}`, "body": body}
}

// keyOnly is a before image under REPLICA IDENTITY DEFAULT: the key, every other column null.
func keyOnly(id int64) row {
	r := row{"id": id}
	for _, c := range itemColumns[1:] {
		r[c.name] = nil
	}
	return r
}

// TestEveryOpBothEnvelopes sends one change event of every kind, in both envelope styles,
// and checks the feed entry by entry: inserts, updates inside and outside when_changed,
// an unchanged TOASTed value (placeholder), an update without before (REPLICA IDENTITY
// DEFAULT), snapshot reads and truncates ignored, a primary-key change (delete + tombstone
// + create at one LSN) and a delete whose before holds only the key.
func TestEveryOpBothEnvelopes(t *testing.T) {
	t.Parallel()
	for _, schemas := range []bool{true, false} {
		name := "schemas"
		if !schemas {
			name = "no-schemas"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, 1, routesYAML)
			c := b.start(t, b.config())
			long := strings.Repeat("long body ", 300)
			v1 := item(1, "alice", 1, "open", 1250, long)
			v2 := item(1, "alice", 1, "closed", 1250, long)
			v3 := item(1, "alice", 1, "closed", -5, debezium.Unavailable) // TOASTed body unchanged
			v3full := item(1, "alice", 1, "closed", -5, long)
			v4 := item(2, "alice", 1, "closed", -5, long)
			recs := records(schemas,
				change{op: "c", after: v1, id: 1, commit: 100, lsn: 110},
				change{op: "u", before: v1, after: v2, id: 1, commit: 120, lsn: 130},
				change{op: "u", before: v2, after: v3, id: 1, commit: 140, lsn: 150},
				change{op: "r", after: item(5, "bob", 2, "open", 0, "x"), id: 5, commit: 140, lsn: 150},
				change{op: "t", id: 0, commit: 160, lsn: 170},
				change{op: "d", before: v3full, id: 1, commit: 180, lsn: 190},
			)
			recs = append(recs, tombstone(1, schemas))
			recs = append(recs, records(schemas,
				change{op: "c", after: v4, id: 2, commit: 180, lsn: 190},
				change{op: "u", after: item(2, "carol", 2, "closed", -5, "short"), id: 2, commit: 200, lsn: 210},
				change{op: "d", before: keyOnly(2), id: 2, commit: 220, lsn: 230},
			)...)
			recs[4].Key = nil // a truncate has no key
			b.produce(t, recs...)
			eventually(t, 20*time.Second, "the whole stream applied", func() bool {
				return b.count(t, `SELECT count(*) FROM tocsin.debezium_offset WHERE next_offset = $1`, len(recs)) == 1 &&
					b.count(t, `SELECT count(*) FROM tocsin.outbox`) == 0
			})

			data := func(id int, status, amount, body string) string {
				if schemas {
					return `{"at": "2026-11-27T04:02:23.512942+00:00", "id": ` + fmt.Sprint(id) + `, "ts": "2026-11-27T04:02:23.5", "day": "2026-11-27", "doc": {"a": [1, 2], "b": null}, "body": ` + body + `, "team": 1, "owner": "alice", "amount": ` + amount + `, "status": "` + status + `"}`
				}
				return `{"at": "2026-11-27T04:02:23.512942Z", "id": ` + fmt.Sprint(id) + `, "ts": ` + fmt.Sprint(ts) + `, "day": ` + fmt.Sprint(day) + `, "doc": "{\"a\": [1, 2], \"b\": null}", "body": ` + body + `, "team": 1, "owner": "alice", "amount": ` + amount + `, "status": "` + status + `"}`
			}
			amt := func(s, b64 string) string {
				if schemas {
					return s
				}
				return `"` + b64 + `"`
			}
			longJSON := `"` + long + `"`
			// Routes fire in name order, as triggers do: item-audit, item-owner, item-status.
			want := []string{
				`service:audit item-audit insert {"id": 1} - - -`,
				`alice item-owner insert {"id": 1} ` + data(1, "open", amt("12.50", "BOI="), longJSON) + ` - -`,
				`alice item-owner update {"id": 1} ` + data(1, "closed", amt("12.50", "BOI="), longJSON) + ` {"status": "open"} status`,
				`m1 item-status update {"id": 1} - - status`,
				`m2 item-status update {"id": 1} - - status`,
				// The TOASTed body is unchanged and taken from before: not in changed.
				`alice item-owner update {"id": 1} ` + data(1, "closed", amt("-0.05", "+w=="), longJSON) + ` {"amount": ` + amt("12.50", "BOI=") + `} amount`,
				// The snapshot read and the truncate are ignored. The primary-key change:
				// delete of key 1 …
				`service:audit item-audit delete {"id": 1} - - -`,
				`alice item-owner delete {"id": 1} - ` + data(1, "closed", amt("-0.05", "+w=="), longJSON) + ` -`,
				`m1 item-status delete {"id": 1} - - -`,
				`m2 item-status delete {"id": 1} - - -`,
				// … and create of key 2, at the same LSN.
				`service:audit item-audit insert {"id": 2} - - -`,
				`alice item-owner insert {"id": 2} ` + data(2, "closed", amt("-0.05", "+w=="), longJSON) + ` - -`,
			}
			// An update without before (REPLICA IDENTITY DEFAULT): old values unknown, so every
			// watched column but the key counts as changed and the old owner is not reached.
			carol := strings.NewReplacer(`"team": 1`, `"team": 2`, `"owner": "alice"`, `"owner": "carol"`, longJSON, `"short"`).
				Replace(data(2, "closed", amt("-0.05", "+w=="), longJSON))
			want = append(want,
				`carol item-owner update {"id": 2} `+carol+` {} owner,team,status,amount,at,day,ts,doc,body`,
				`m3 item-status update {"id": 2} - - status`,
				// A delete whose before holds only the key: the owner and team are unknown.
				`service:audit item-audit delete {"id": 2} - - -`,
			)
			require.Equal(t, want, b.feed(t))
			if schemas {
				// The first entry's data is what PostgreSQL itself renders for the same row, as
				// a route trigger would (in a session whose TimeZone is UTC).
				tx, err := b.pool.Begin(b.ctx)
				require.NoError(t, err)
				defer func() { _ = tx.Rollback(b.ctx) }()
				var same bool
				require.NoError(t, tx.QueryRow(b.ctx, `
					SELECT set_config('TimeZone', 'UTC', true) IS NOT NULL AND (
					SELECT data::text FROM tocsin.feed WHERE route = 'item-owner' ORDER BY position LIMIT 1) = (
					SELECT to_jsonb(i)::text FROM (SELECT 1::bigint AS id, 'alice'::text AS owner, 1::int AS team,
					       'open'::text AS status, 12.50::numeric(10,2) AS amount,
					       '2026-11-27 04:02:23.512942+00'::timestamptz AS at, '2026-11-27'::date AS day,
					       '2026-11-27 04:02:23.5'::timestamp(6) AS ts, '{"a": [1, 2], "b": null}'::jsonb AS doc,
					       $1::text AS body) i)`, long).Scan(&same))
				require.True(t, same, "the same JSON as to_jsonb")
			}
			require.Contains(t, b.logs.String(), "REPLICA IDENTITY FULL")
			require.Equal(t, 1, strings.Count(b.logs.String(), "REPLICA IDENTITY FULL"), "warned once per table")
			require.Zero(t, c.Resent())
		})
	}
}

// TestSnapshotReadsOnRequest delivers snapshot reads as inserts only to routes that set
// snapshot: true.
func TestSnapshotReadsOnRequest(t *testing.T) {
	t.Parallel()
	b := setup(t, 1, `
routes:
  - name: with-snapshot
    table: item
    on: [insert]
    recipients: { column: owner }
    topic: item
    capture: debezium
    snapshot: true
  - name: without
    table: item
    recipients: { column: owner }
    topic: item
    capture: debezium
`)
	b.start(t, b.config())
	b.produce(t, records(true,
		change{op: "r", after: item(1, "alice", 1, "open", 0, "x"), id: 1, commit: 0, lsn: 50},
		change{op: "r", after: item(2, "bob", 1, "open", 0, "x"), id: 2, commit: 0, lsn: 50},
		change{op: "c", after: item(3, "carol", 1, "open", 0, "x"), id: 3, commit: 60, lsn: 70},
	)...)
	eventually(t, 20*time.Second, "three entries", func() bool { return b.count(t, `SELECT count(*) FROM tocsin.feed`) == 4 })
	var got []string
	for _, l := range b.feed(t) {
		got = append(got, strings.Join(strings.Fields(l)[:4], " "))
	}
	require.Equal(t, []string{
		`alice with-snapshot insert {"id":`, `bob with-snapshot insert {"id":`,
		`carol with-snapshot insert {"id":`, `carol without insert {"id":`}, got)
}

// TestRedelivery replays what Debezium sends again after its own restart (the same
// change events, at new offsets) and checks that nothing is delivered twice, while the
// new events after them all are.
func TestRedelivery(t *testing.T) {
	t.Parallel()
	b := setup(t, 3, routesYAML)
	c := b.start(t, b.config())
	var chs []change
	for i := range int64(20) {
		chs = append(chs, change{op: "c", after: item(i+1, "alice", 2, "open", i, "x"), id: i + 1, commit: 100 * i, lsn: 100*i + 10})
	}
	b.produce(t, records(true, chs[:15]...)...)
	eventually(t, 20*time.Second, "15 inserts", func() bool { return b.count(t, `SELECT count(*) FROM tocsin.feed`) == 30 })
	// Debezium restarts from its last flushed offset: events 6–15 again, then 16–20.
	b.produce(t, records(true, chs[5:]...)...)
	eventually(t, 20*time.Second, "20 inserts", func() bool {
		return b.count(t, `SELECT count(*) FROM tocsin.feed`) >= 40 && c.Resent() == 10
	})
	// The sequencer is caught up once the outbox is empty.
	eventually(t, 20*time.Second, "an empty outbox", func() bool { return b.count(t, `SELECT count(*) FROM tocsin.outbox`) == 0 })
	require.Equal(t, 40, b.count(t, `SELECT count(*) FROM tocsin.feed`))
	require.Zero(t, b.count(t, `SELECT count(*) FROM (SELECT recipient, key FROM tocsin.feed GROUP BY 1, 2 HAVING count(*) > 1) d`))
}

// TestPoisonIsSkipped sends what no consumer can apply between good events: the consumer
// logs each at ERROR with topic, partition and offset, counts it, and goes on.
func TestPoisonIsSkipped(t *testing.T) {
	t.Parallel()
	b := setup(t, 1, routesYAML)
	c := b.start(t, b.config())
	otherTable := change{op: "c", after: item(9, "x", 1, "open", 0, "x"), id: 9, commit: 5, lsn: 6}.record(false)
	otherTable.Value = []byte(strings.Replace(string(otherTable.Value), `"table":"item"`, `"table":"nope"`, 1))
	b.produce(t,
		change{op: "c", after: item(1, "alice", 1, "open", 0, "x"), id: 1, commit: 1, lsn: 2}.record(false),
		&kgo.Record{Key: []byte(`{"id":2}`), Value: []byte(`not json {`)},
		&kgo.Record{Key: []byte(`{"id":3}`), Value: []byte(`{"hello": "world"}`)},
		&kgo.Record{Key: []byte(`{"id":4}`), Value: []byte(`{"op": "x", "source": {}}`)},
		otherTable,
		change{op: "c", after: item(10, "bob", 1, "open", 0, "x"), id: 10, commit: 7, lsn: 8}.record(true),
	)
	eventually(t, 20*time.Second, "both good events", func() bool { return b.count(t, `SELECT count(*) FROM tocsin.feed`) == 4 })
	require.Equal(t, map[string]int64{"not_json": 1, "not_envelope": 2, "unknown_table": 1}, c.Skipped())
	logs := b.logs.String()
	for _, off := range []string{"offset=1", "offset=2", "offset=3", "offset=4"} {
		require.Contains(t, logs, "level=ERROR msg=\"skipping a Kafka record that is not a usable Debezium change event\" topic=app.public.item partition=0 "+off)
	}
}
