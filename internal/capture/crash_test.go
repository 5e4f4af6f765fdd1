package capture_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/tocsin/tocsin/internal/capture"
	"github.com/tocsin/tocsin/internal/routes"
	"github.com/tocsin/tocsin/internal/sequencer"
)

// childEnv switches the test binary into a capture process (sequencer + consumer) on the
// database it names, for the crash test to kill.
const childEnv = "TOCSIN_CAPTURE_TEST_CHILD_URL"

func runChild(url string) {
	ctx := context.Background()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	pool, err := pgxpool.New(ctx, url)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	seq := sequencer.New(pool, sequencer.Config{}, log)
	c := capture.New(pool, capture.Config{DatabaseURL: url, WakeFunc: seq.Wake, RetryInterval: 50 * time.Millisecond,
		StandbyInterval: 50 * time.Millisecond, IdleInterval: 50 * time.Millisecond, FlushRows: 50, BatchRows: 200}, log)
	go func() { _ = seq.Run(ctx) }()
	_ = c.Run(ctx)
	os.Exit(0)
}

// TestCrashNoLossNoDuplicate SIGKILLs a capture process again and again during a burst of
// writes; the feed ends with every committed change exactly once.
func TestCrashNoLossNoDuplicate(t *testing.T) {
	t.Parallel()
	b := setup(t, routes.CaptureReplication)

	start := func() *exec.Cmd {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), childEnv+"="+b.db.URL)
		cmd.Stderr = os.Stderr
		require.NoError(t, cmd.Start())
		return cmd
	}
	// Writers keep the burst going until the last kill.
	const writers, perWriter = 4, 100000
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range perWriter {
				select {
				case <-stop:
					return
				default:
				}
				id := 2 * (w*perWriter + i + 1)
				// Two rows per transaction on every third: multi-row commits get killed too.
				sql := fmt.Sprintf(`INSERT INTO item (id, owner, team, status) VALUES (%d, 'o%d', 1, 'open')`, id, id%7)
				if i%3 == 0 {
					sql = fmt.Sprintf(`INSERT INTO item (id, owner, team, status) VALUES (%d, 'o%d', 1, 'open'), (%d, 'o%d', 2, 'open')`,
						id, id%7, id+1, id%7)
				}
				if _, err := b.pool.Exec(b.ctx, sql); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	kills := 0
	feedCount := func() int { return b.count(t, `SELECT count(*) FROM tocsin.feed`) }
	for kills < 8 {
		before := feedCount()
		cmd := start()
		// Kill only after the process made progress, so each life applies something.
		deadline := time.Now().Add(30 * time.Second)
		for feedCount() == before && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
		require.NoError(t, cmd.Process.Signal(syscall.SIGKILL))
		_ = cmd.Wait()
		kills++
	}
	close(stop)
	wg.Wait()
	cmd := start()
	t.Cleanup(func() { _ = cmd.Process.Signal(syscall.SIGKILL); _ = cmd.Wait() })

	var rows int
	require.NoError(t, b.pool.QueryRow(b.ctx, `SELECT count(*) FROM item`).Scan(&rows))
	// Every insert reaches its owner (item-owner) and service:audit (item-audit).
	want := 2 * rows
	deadline := time.Now().Add(2 * time.Minute)
	for feedCount() < want || b.count(t, `SELECT count(*) FROM tocsin.outbox`) > 0 {
		if time.Now().After(deadline) {
			var state string
			_ = b.pool.QueryRow(b.ctx, `SELECT concat_ws(' ', s.slot_name, s.active, s.confirmed_flush_lsn, r.applied_lsn, pg_current_wal_lsn(),
				(SELECT count(*) FROM tocsin.outbox))
				FROM pg_replication_slots s LEFT JOIN tocsin.replication_state r USING (slot_name)`).Scan(&state)
			var routesState string
			_ = b.pool.QueryRow(b.ctx, `SELECT string_agg(concat_ws(':', route, n, lo, hi), ' ') FROM (
				SELECT route, count(*) n, min((key->>'id')::bigint) lo, max((key->>'id')::bigint) hi FROM tocsin.feed GROUP BY route) r`).Scan(&routesState)
			t.Fatalf("feed has %d of %d entries (%s); slot, active, confirmed, applied, current, outbox: %s", feedCount(), want, routesState, state)
		}
		time.Sleep(5 * time.Millisecond)
	}
	require.Equal(t, want, feedCount(), "no duplicates")
	require.Zero(t, b.count(t, `
		SELECT count(*) FROM (SELECT recipient, key FROM tocsin.feed GROUP BY 1, 2 HAVING count(*) > 1) d`), "no duplicates")
	require.Zero(t, b.count(t, `
		SELECT count(*) FROM item i WHERE NOT EXISTS (
			SELECT 1 FROM tocsin.feed f WHERE f.recipient = 'service:audit' AND f.key = jsonb_build_object('id', i.id))`), "no loss")
	t.Logf("%d kills, %d rows, %d feed entries", kills, rows, want)
}
