package leader_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/tocsin/tocsin/internal/leader"
	"github.com/tocsin/tocsin/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

const testKey int64 = 0x746573742d6c6561

var (
	keyHi = uint32(uint64(testKey) >> 32)
	keyLo = uint32(uint64(testKey) & 0xffffffff)
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func cfg() leader.Config {
	return leader.Config{Role: "test", Key: testKey, StandbyInterval: 5 * time.Millisecond, RetryInterval: 5 * time.Millisecond}
}

// leading is a LeadFunc that reports its backend pid, then holds leadership until ctx ends
// or its connection fails (a query every few milliseconds, as a real leader's work). Every
// query that succeeds also asks the server whether this session holds the role's lock at
// that moment; one that does not is leader work running unguarded, and sets unguarded.
//
// Two LeadFuncs may well run at once in Go: a standby can take over as soon as the old
// leader's session is gone, before the old LeadFunc's next query tells it so. What the
// Elector promises is that only the one whose session holds the lock gets work done.
func leading(pids chan<- uint32, running *atomic.Int32, unguarded *atomic.Bool) leader.LeadFunc {
	return func(ctx context.Context, conn *pgx.Conn) error {
		running.Add(1)
		defer running.Add(-1)
		pids <- conn.PgConn().PID()
		for {
			var holds bool
			err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT FROM pg_sleep(0.005), pg_locks
				WHERE locktype = 'advisory' AND granted AND pid = pg_backend_pid()
				  AND classid = $1 AND objid = $2)`, keyHi, keyLo).Scan(&holds)
			if err != nil {
				if ctx.Err() != nil {
					return nil
				}
				return err
			}
			if !holds {
				unguarded.Store(true)
			}
		}
	}
}

// Three electors, one key: one leads at a time; when the leader's session is terminated
// its lock goes with it and a standby takes over; again and again.
func TestOneLeaderAtATimeAndTakeoverWhenTheSessionDies(t *testing.T) {
	t.Parallel()
	db := pgtest.New(t)
	ctx, cancel := context.WithCancel(context.Background())
	pids := make(chan uint32, 16)
	var running atomic.Int32
	var unguarded atomic.Bool
	done := make(chan error, 3)
	for range 3 {
		e := leader.New(db.Pool, cfg(), quiet)
		go func() { done <- e.Run(ctx, leading(pids, &running, &unguarded)) }()
	}
	seen := map[uint32]bool{}
	for range 4 {
		var pid uint32
		select {
		case pid = <-pids:
		case <-time.After(30 * time.Second):
			t.Fatal("no leader took over")
		}
		require.False(t, seen[pid], "a new session leads")
		seen[pid] = true
		var holder uint32
		require.NoError(t, db.Pool.QueryRow(context.Background(), `SELECT pid FROM pg_locks
			WHERE locktype = 'advisory' AND granted AND classid = $1 AND objid = $2
			  AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`,
			keyHi, keyLo).Scan(&holder))
		require.Equal(t, pid, holder, "the leader's own session holds the lock")
		var ok bool
		require.NoError(t, db.Pool.QueryRow(context.Background(), `SELECT pg_terminate_backend($1)`, pid).Scan(&ok))
		require.True(t, ok)
	}
	cancel()
	for range 3 {
		require.NoError(t, <-done, "Run returns nil when its context ends")
	}
	require.False(t, unguarded.Load(), "a LeadFunc's work succeeded on a session without the lock")
	require.Zero(t, running.Load())
}

// A LeadFunc that gives up releases the lock at once: the standby leads next, and the
// elector that gave up tries again.
func TestLeadFuncErrorReleasesTheLockAndRetries(t *testing.T) {
	t.Parallel()
	db := pgtest.New(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var calls atomic.Int32
	turns := make(chan uint32, 8)
	e := leader.New(db.Pool, cfg(), quiet)
	runDone := make(chan error, 1)
	go func() {
		runDone <- e.Run(ctx, func(ctx context.Context, conn *pgx.Conn) error {
			turns <- conn.PgConn().PID()
			if calls.Add(1) < 3 {
				return errors.New("giving up")
			}
			<-ctx.Done()
			return nil
		})
	}()
	var pids []uint32
	for range 3 {
		select {
		case pid := <-turns:
			pids = append(pids, pid)
		case <-time.After(30 * time.Second):
			t.Fatal("no retry")
		}
	}
	require.NotEqual(t, pids[0], pids[1], "each turn leads on a fresh connection")
	cancel()
	require.NoError(t, <-runDone)
	var held int
	require.NoError(t, db.Pool.QueryRow(context.Background(), `SELECT count(*) FROM pg_locks
		WHERE locktype = 'advisory' AND classid = $1 AND objid = $2
		  AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`,
		keyHi, keyLo).Scan(&held))
	require.Zero(t, held, "no lock outlives its LeadFunc")
}

// A standby whose context ends while another session holds the lock returns nil without
// ever running its LeadFunc.
func TestLeadReturnsWhenContextEndsWhileStandby(t *testing.T) {
	t.Parallel()
	db := pgtest.New(t)
	holder, err := db.Pool.Acquire(context.Background())
	require.NoError(t, err)
	defer holder.Release()
	_, err = holder.Exec(context.Background(), `SELECT pg_advisory_lock($1)`, testKey)
	require.NoError(t, err)
	defer func() { _, _ = holder.Exec(context.Background(), `SELECT pg_advisory_unlock($1)`, testKey) }()

	ctx, cancel := context.WithCancel(context.Background())
	tried := make(chan struct{})
	go func() {
		// The standby has tried at least once when its backend shows up in pg_stat_activity
		// having run the lock query.
		for {
			var n int
			_ = db.Pool.QueryRow(context.Background(), `SELECT count(*) FROM pg_stat_activity
				WHERE datname = current_database() AND query LIKE '%pg_try_advisory_lock%'
				  AND pid <> pg_backend_pid()`).Scan(&n)
			if n > 0 {
				close(tried)
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()
	ran := false
	res := make(chan error, 1)
	go func() {
		res <- leader.New(db.Pool, cfg(), quiet).Lead(ctx, func(context.Context, *pgx.Conn) error {
			ran = true
			return nil
		})
	}()
	select {
	case <-tried:
	case <-time.After(30 * time.Second):
		t.Fatal("the standby never tried")
	}
	cancel()
	require.NoError(t, <-res)
	require.False(t, ran)
}

// The leader's session is named after its role, so pg_stat_activity (and the benches'
// CPU per connection) tell the role's connection from the pool's.
func TestLeaderSessionIsNamedAfterItsRole(t *testing.T) {
	t.Parallel()
	db := pgtest.New(t)
	err := leader.New(db.Pool, cfg(), quiet).Lead(context.Background(), func(ctx context.Context, conn *pgx.Conn) error {
		var name string
		if err := conn.QueryRow(ctx, `SELECT current_setting('application_name')`).Scan(&name); err != nil {
			return err
		}
		require.Equal(t, "tocsin-test", name)
		return nil
	})
	require.NoError(t, err)

	// A node named in its database URL keeps its name, with the role after it.
	pcfg, err := pgxpool.ParseConfig(db.URL)
	require.NoError(t, err)
	pcfg.ConnConfig.RuntimeParams["application_name"] = "node-a"
	pool, err := pgxpool.NewWithConfig(context.Background(), pcfg)
	require.NoError(t, err)
	defer pool.Close()
	err = leader.New(pool, cfg(), quiet).Lead(context.Background(), func(ctx context.Context, conn *pgx.Conn) error {
		var name string
		if err := conn.QueryRow(ctx, `SELECT current_setting('application_name')`).Scan(&name); err != nil {
			return err
		}
		require.Equal(t, "node-a-test", name)
		return nil
	})
	require.NoError(t, err)
}
