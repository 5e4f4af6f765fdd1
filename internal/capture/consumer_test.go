package capture_test

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tocsin/tocsin/internal/capture"
	"github.com/tocsin/tocsin/internal/routes"
)

// TestLargeTransaction sends one transaction far beyond logical_decoding_work_mem: the
// server spills it, the consumer writes it in FlushRows chunks inside one transaction, and
// every row arrives once.
func TestLargeTransaction(t *testing.T) {
	t.Parallel()
	b := setup(t, routes.CaptureReplication)
	b.exec(t, fmt.Sprintf(`ALTER DATABASE %s SET logical_decoding_work_mem = '64kB'`, b.db.Name))
	var mu sync.Mutex
	var applied []capture.Applied
	b.start(t, capture.Config{FlushRows: 500, AppliedFunc: func(a capture.Applied) {
		mu.Lock()
		applied = append(applied, a)
		mu.Unlock()
	}}, nil)
	const n = 20000
	b.exec(t, fmt.Sprintf(`INSERT INTO item (id, owner, body) SELECT g, 'o' || (g %% 10), repeat('x', 200) FROM generate_series(1, %d) g`, n))
	eventually(t, 2*time.Minute, "the large transaction in the feed", func() bool {
		return b.count(t, `SELECT count(*) FROM tocsin.feed`) == 2*n
	})
	require.Equal(t, n, b.count(t, `SELECT count(DISTINCT key) FROM tocsin.feed WHERE recipient = 'service:audit'`))
	mu.Lock()
	defer mu.Unlock()
	require.Len(t, applied, 1)
	require.Equal(t, 3*n, applied[0].Rows, "item-owner, item-team (grouped) and item-audit")
}

// TestCaptureOffConsumesAndConfirms switches capture off: changes are consumed and the
// slot confirmed past them, but nothing is written; switched back on, capture resumes at
// the switch's place in the stream. A quiet database (writes only to unpublished tables)
// does not pin WAL either.
func TestCaptureOffConsumesAndConfirms(t *testing.T) {
	t.Parallel()
	b := setup(t, routes.CaptureReplication)
	b.start(t, capture.Config{StatusInterval: 50 * time.Millisecond}, nil)
	slot, err := routes.SlotName(b.ctx, b.pool)
	require.NoError(t, err)
	b.exec(t, `UPDATE tocsin.setting SET value = 'false' WHERE key = 'capture'`)
	b.exec(t, `INSERT INTO item (id, owner) SELECT g, 'off' FROM generate_series(1, 100) g`)
	b.exec(t, `UPDATE tocsin.setting SET value = 'true' WHERE key = 'capture'`)
	b.exec(t, `INSERT INTO item (id, owner) VALUES (1000, 'on')`)
	eventually(t, time.Minute, "the change after capture came back on", func() bool {
		return b.count(t, `SELECT count(*) FROM tocsin.feed WHERE recipient = 'on'`) == 1
	})
	require.Zero(t, b.count(t, `SELECT count(*) FROM tocsin.feed WHERE recipient = 'off'`))

	// Unpublished writes only: the slot's confirmed position still follows the WAL.
	b.exec(t, `CREATE TABLE quiet (x int)`)
	b.exec(t, `INSERT INTO quiet SELECT generate_series(1, 1000)`)
	var target string
	require.NoError(t, b.pool.QueryRow(b.ctx, `SELECT pg_current_wal_lsn()::text`).Scan(&target))
	eventually(t, time.Minute, "the slot confirmed past quiet writes", func() bool {
		return b.count(t, `SELECT count(*) FROM pg_replication_slots
			WHERE slot_name = $1 AND confirmed_flush_lsn >= $2::pg_lsn`, slot, target) == 1
	})
}
