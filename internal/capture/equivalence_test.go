package capture_test

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/tocsin/tocsin/internal/capture"
	"github.com/tocsin/tocsin/internal/routes"
)

// workload is a list of transactions, each a list of statements, and whether it commits.
type workload []struct {
	stmts  []string
	commit bool
}

// newWorkload builds a random workload: inserts (some with TOASTed bodies), updates that
// do and do not touch when_changed columns, owner changes, deletes, multi-row
// transactions and rollbacks.
func newWorkload(seed uint64, txs int) workload {
	rng := rand.New(rand.NewPCG(seed, seed))
	owners := []string{"alice", "bob", "carol", ""}
	statuses := []string{"draft", "open", "closed"}
	var live []int
	next := 1
	insert := func() string {
		id := next
		next++
		live = append(live, id)
		body := fmt.Sprintf("'body %d'", id)
		if rng.IntN(5) == 0 { // TOASTed: big and incompressible
			body = fmt.Sprintf("(SELECT string_agg(md5(g::text || '-%d'), '') FROM generate_series(1, %d) g)", id, 100+rng.IntN(100))
		}
		return fmt.Sprintf(`INSERT INTO item VALUES (%d, %s, %d, %s, %d.%02d, %t, '2024-0%d-1%d 1%d:3%d:00.%d+02', '2024-03-0%d',
			'{"n": %d, "tags": ["a", "b"], "nested": {"k": null}}', ARRAY['t%d', 'with "quote"', NULL], '{%d,%d}', '%08d-1111-2222-3333-444455556666', %d.5, %s)`,
			id, lit(owners[rng.IntN(len(owners))]), 1+rng.IntN(2), lit(statuses[rng.IntN(3)]), rng.IntN(1000), rng.IntN(100),
			rng.IntN(2) == 1, 1+rng.IntN(9), rng.IntN(10), rng.IntN(10), rng.IntN(10), rng.IntN(1000), 1+rng.IntN(9),
			rng.IntN(100), rng.IntN(10), rng.IntN(10), rng.IntN(10), id, rng.IntN(100), body)
	}
	pick := func() int { return live[rng.IntN(len(live))] }
	stmt := func() string {
		if len(live) < 3 || rng.IntN(10) < 3 {
			return insert()
		}
		id := pick()
		switch rng.IntN(7) {
		case 0:
			return fmt.Sprintf(`UPDATE item SET status = %s WHERE id = %d`, lit(statuses[rng.IntN(3)]), id)
		case 1:
			return fmt.Sprintf(`UPDATE item SET amount = amount + 1, flag = NOT flag WHERE id = %d`, id)
		case 2:
			return fmt.Sprintf(`UPDATE item SET owner = %s WHERE id = %d`, lit(owners[rng.IntN(len(owners))]), id)
		case 3:
			return fmt.Sprintf(`UPDATE item SET team = %d, status = %s WHERE id = %d`, 1+rng.IntN(2), lit(statuses[rng.IntN(3)]), id)
		case 4:
			// Rows of one statement reach the feed in the order the statement touched them,
			// which only a multi-row INSERT fixes: other multi-row statements follow the heap.
			if rng.IntN(2) == 0 {
				return fmt.Sprintf(`UPDATE item SET tags = tags || 'more'::text WHERE id = %d`, id)
			}
			a, b := insert(), insert()
			return a + ", " + strings.TrimPrefix(b, "INSERT INTO item VALUES ")
		case 5:
			for i, l := range live {
				if l == id {
					live = append(live[:i], live[i+1:]...)
				}
			}
			return fmt.Sprintf(`DELETE FROM item WHERE id = %d`, id)
		default:
			return fmt.Sprintf(`UPDATE item SET doc = doc || '{"x": 1}' WHERE id = %d`, id) // body (TOAST) unchanged
		}
	}
	var w workload
	for range txs {
		n := 1 + rng.IntN(4)
		commit := rng.IntN(6) != 0
		snapshot := append([]int(nil), live...)
		var stmts []string
		for range n {
			stmts = append(stmts, stmt())
		}
		if !commit {
			live = snapshot
		}
		w = append(w, struct {
			stmts  []string
			commit bool
		}{stmts, commit})
	}
	return w
}

func lit(s string) string {
	if s == "" {
		return "NULL"
	}
	return "'" + strings.ReplaceAll(s, "'", "''") + "'"
}

// run applies w on one connection, in order, with the session in UTC.
func (b *bundle) run(t *testing.T, w workload) {
	t.Helper()
	conn, err := b.pool.Acquire(b.ctx)
	require.NoError(t, err)
	defer conn.Release()
	_, err = conn.Exec(b.ctx, `SET TIME ZONE 'UTC'`)
	require.NoError(t, err)
	for _, tx := range w {
		err := pgx.BeginFunc(b.ctx, conn, func(ptx pgx.Tx) error {
			for _, s := range tx.stmts {
				if _, err := ptx.Exec(b.ctx, s); err != nil {
					return fmt.Errorf("%s: %w", s, err)
				}
			}
			if !tx.commit {
				return errRollback
			}
			return nil
		})
		if err != errRollback {
			require.NoError(t, err)
		}
	}
	_, err = conn.Exec(b.ctx, `RESET TIME ZONE`)
	require.NoError(t, err)
}

var errRollback = fmt.Errorf("rollback")

// TestEquivalence runs one random workload against trigger routes and replication routes
// and requires the same feed, recipient by recipient.
func TestEquivalence(t *testing.T) {
	t.Parallel()
	seed := uint64(time.Now().UnixNano())
	t.Logf("workload seed %d", seed)
	w := newWorkload(seed, 300)
	// The marker ends the workload: once it is in a feed, everything before it is too.
	marker := struct {
		stmts  []string
		commit bool
	}{[]string{`INSERT INTO item (id, owner) VALUES (999999999, 'marker')`}, true}
	w = append(w, marker)

	feeds := make([]map[string][]string, 2)
	for i, mode := range []routes.Capture{routes.CaptureTrigger, routes.CaptureReplication} {
		b := setup(t, mode)
		b.start(t, capture.Config{FlushRows: 7}, nil) // small flushes: exercise flushing mid-transaction
		b.run(t, w)
		eventually(t, time.Minute, "the marker in the "+string(mode)+" feed", func() bool {
			return b.count(t, `SELECT count(*) FROM tocsin.feed WHERE recipient = 'marker'`) == 1 &&
				b.count(t, `SELECT count(*) FROM tocsin.outbox`) == 0
		})
		feeds[i] = b.feedByRecipient(t)
	}
	require.NotEmpty(t, feeds[0])
	total := 0
	for r, entries := range feeds[0] {
		total += len(entries)
		require.Equal(t, entries, feeds[1][r], "recipient %q", r)
	}
	require.Len(t, feeds[1], len(feeds[0]))
	t.Logf("%d recipients, %d entries, identical", len(feeds[0]), total)
}
