package routes_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/tocsin/tocsin/internal/routes"
)

// replicated applies src and drops the database's slot when the test ends (a database with
// a slot cannot be dropped).
func (b *bundle) replicated(t *testing.T) string {
	t.Helper()
	slot, err := routes.SlotName(b.ctx, b.pool)
	require.NoError(t, err)
	t.Cleanup(func() { _, _ = routes.DropSlot(context.Background(), b.pool, slot) })
	return slot
}

func (b *bundle) one(t *testing.T, sql string, args ...any) any {
	t.Helper()
	var v any
	require.NoError(t, b.pool.QueryRow(b.ctx, sql, args...).Scan(&v))
	return v
}

func TestApplyReplicationLifecycle(t *testing.T) {
	t.Parallel()
	b := setup(t)
	slot := b.replicated(t)

	s := b.apply(t, `
routes:
  - name: status
    table: comment
    on: [update]
    when_changed: [status]
    recipients: { column: owner_id }
    topic: comment
    capture: replication
  - name: portfolio
    table: portfolio
    on: [insert]
    recipients: { column: owner_id }
    topic: portfolio
    capture: replication
`)
	require.Equal(t, []string{"portfolio", "status"}, sortedCopy(s.Created))
	out := s.String()
	require.Contains(t, out, `set REPLICA IDENTITY FULL on table "public.comment"`)
	require.Contains(t, out, `route "status": when_changed`)
	require.NotContains(t, out, `REPLICA IDENTITY FULL on table "public.portfolio"`, "insert-only routes need no old values")
	require.Contains(t, out, "created the publication and the replication slot")
	require.Equal(t, "f", b.one(t, `SELECT relreplident::text FROM pg_class WHERE oid = 'public.comment'::regclass`))
	require.Equal(t, int64(1), b.one(t, `SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1 AND plugin = 'pgoutput'`, slot))
	require.Equal(t, int64(1), b.one(t, `SELECT count(*) FROM tocsin.replication_state WHERE slot_name = $1`, slot))
	require.Equal(t, "comment,portfolio,route,setting", b.one(t,
		`SELECT string_agg(tablename, ',' ORDER BY tablename) FROM pg_publication_tables WHERE pubname = 'tocsin'`))
	require.Equal(t, int64(0), b.one(t, `SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'tocsin:%'`), "no trigger")

	// Same file again: nothing changes.
	s = b.apply(t, `
routes:
  - name: status
    table: comment
    on: [update]
    when_changed: [status]
    recipients: { column: owner_id }
    topic: comment
    capture: replication
  - name: portfolio
    table: portfolio
    on: [insert]
    recipients: { column: owner_id }
    topic: portfolio
    capture: replication
`)
	require.False(t, s.Changed())
	require.Empty(t, s.Notes)

	// One route moves to trigger capture: its table leaves the publication.
	s = b.apply(t, `
routes:
  - name: status
    table: comment
    on: [update]
    when_changed: [status]
    recipients: { column: owner_id }
    topic: comment
    capture: replication
  - name: portfolio
    table: portfolio
    on: [insert]
    recipients: { column: owner_id }
    topic: portfolio
`)
	require.Equal(t, []string{"portfolio"}, s.Updated)
	require.Equal(t, "comment,route,setting", b.one(t,
		`SELECT string_agg(tablename, ',' ORDER BY tablename) FROM pg_publication_tables WHERE pubname = 'tocsin'`))
	require.Equal(t, int64(1), b.one(t, `SELECT count(*) FROM pg_trigger WHERE tgname = 'tocsin:portfolio'`))

	// The last replication route goes: slot, record and publication go with it.
	s = b.apply(t, `routes: []`)
	require.Contains(t, s.String(), "dropped the replication slot")
	require.Equal(t, int64(0), b.one(t, `SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1`, slot))
	require.Equal(t, int64(0), b.one(t, `SELECT count(*) FROM tocsin.replication_state`))
	require.Equal(t, int64(0), b.one(t, `SELECT count(*) FROM pg_publication WHERE pubname = 'tocsin'`))
}

func TestApplyReplicationRefuses(t *testing.T) {
	t.Parallel()
	b := setup(t)
	slot := b.replicated(t)
	b.exec(t, `CREATE TABLE nothing (id int PRIMARY KEY, owner text); ALTER TABLE nothing REPLICA IDENTITY NOTHING`)
	f, err := routes.Parse("routes.yaml", []byte(`
routes:
  - name: nopk
    table: no_key
    recipients: { column: owner_id }
    topic: t
    capture: replication
  - name: nothing
    table: nothing
    recipients: { column: owner }
    topic: t
    capture: replication
`))
	require.NoError(t, err)
	_, err = routes.Apply(b.ctx, b.pool, f)
	require.ErrorContains(t, err, `routes.yaml:4: route "nopk": table: table "public.no_key" has no primary key (entries carry the row's key) and so no replica identity`)
	require.ErrorContains(t, err, `routes.yaml:9: route "nothing": table: table "public.nothing" has REPLICA IDENTITY NOTHING`)
	require.Equal(t, int64(0), b.one(t, `SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1`, slot), "a failed apply leaves no slot")
	require.Equal(t, int64(0), b.one(t, `SELECT count(*) FROM tocsin.route`))
}

func TestSetDefaultCapture(t *testing.T) {
	t.Parallel()
	f, err := routes.Parse("routes.yaml", []byte(`
routes:
  - name: a
    table: t
    recipients: { static: [x] }
    topic: t
  - name: b
    table: t
    recipients: { static: [x] }
    topic: t
    capture: trigger
`))
	require.NoError(t, err)
	f.SetDefaultCapture(routes.CaptureReplication)
	require.Equal(t, routes.CaptureReplication, f.Routes[0].Capture)
	require.Equal(t, routes.CaptureTrigger, f.Routes[1].Capture, "a route's own capture wins")
}

func sortedCopy(s []string) []string {
	out := append([]string(nil), s...)
	for i := range out {
		for j := i + 1; j < len(out); j++ {
			if out[j] < out[i] {
				out[i], out[j] = out[j], out[i]
			}
		}
	}
	return out
}
