package bench

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"golang.org/x/sync/errgroup"

	"github.com/tocsin/tocsin/internal/sequencer"

	"github.com/tocsin/tocsin/internal/settings"
)

// measurement is one mode measured once.
type measurement struct {
	txPerSec float64
	// writerCPU and serverCPU are CPU seconds per 1,000 commits during the measured window:
	// of the writers' own backends (where a trigger is paid), and of the whole PostgreSQL
	// server (negative when it is not on this machine).
	writerCPU, serverCPU float64
	inserts              int64 // rows in the mode's table afterwards, warm-up included
	captured             int64 // outbox, feed and naive outbox rows afterwards
	sequenced            int64 // feed rows afterwards
}

// warmupFor is the uncounted run before a measurement of d: connections busy, plans cached,
// the sequencer (when there is one) caught up with the first rows.
func warmupFor(d time.Duration) time.Duration { return min(d/10, time.Second) }

// measure resets the database, then runs the writers against m's table for d.
func (s *scratch) measure(ctx context.Context, m *mode, writers int, d time.Duration) (measurement, error) {
	var res measurement
	if err := s.reset(ctx, m.capture); err != nil {
		return res, err
	}
	stop := func() error { return nil }
	if m.sequencer {
		var err error
		if stop, err = s.startSequencer(ctx); err != nil {
			return res, err
		}
	}
	w, err := runWriters(ctx, s.writers, m.insertStatement(), writers, warmupFor(d), d, s.postmaster)
	if serr := stop(); err == nil {
		err = serr
	}
	if err != nil {
		return res, err
	}
	res.txPerSec, res.writerCPU, res.serverCPU = w.rate, w.writerCPU, w.serverCPU
	err = s.ctl.QueryRow(ctx, `
		SELECT (SELECT count(*) FROM `+m.table+`),
		       (SELECT count(*) FROM tocsin.outbox) + (SELECT count(*) FROM tocsin.feed)
		           + (SELECT count(*) FROM bench_naive_outbox),
		       (SELECT count(*) FROM tocsin.feed)`).Scan(&res.inserts, &res.captured, &res.sequenced)
	if err != nil {
		return res, fmt.Errorf("counting inserted and captured rows: %w", err)
	}
	return res, nil
}

// reset empties every bench table, the outbox and the feed, sets the capture switch and
// checkpoints, so that each measurement starts from the same state.
func (s *scratch) reset(ctx context.Context, capture bool) error {
	if _, err := s.ctl.Exec(ctx, "TRUNCATE "+benchTables()+" RESTART IDENTITY"); err != nil {
		return fmt.Errorf("truncating the bench tables: %w", err)
	}
	if err := settings.Set(ctx, s.ctl, settings.SwitchCapture, capture); err != nil {
		return err
	}
	// VACUUM refuses to run in a transaction, so each statement goes alone.
	if _, err := s.ctl.Exec(ctx, "VACUUM (ANALYZE) "+benchTables()); err != nil {
		return fmt.Errorf("vacuuming the bench tables: %w", err)
	}
	if s.checkpoint {
		if _, err := s.ctl.Exec(ctx, "CHECKPOINT"); err != nil {
			return fmt.Errorf("checkpointing: %w", err)
		}
	}
	return nil
}

var sequencerLeadingSQL = queries.Get("sequencer_leading")

// startSequencer runs a sequencer on its own connections until the returned stop is called.
// It returns once the sequencer leads.
func (s *scratch) startSequencer(ctx context.Context) (stop func() error, err error) {
	pool, err := s.pool(ctx, 2, nil)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- sequencer.New(pool, sequencer.Config{}, slog.New(slog.DiscardHandler)).Run(ctx)
	}()
	// The writers start once it leads, so that even a short run is sequenced while it lasts.
	for leading := false; !leading; {
		if err := s.ctl.QueryRow(ctx, sequencerLeadingSQL).Scan(&leading); err != nil {
			cancel()
			<-done
			pool.Close()
			return nil, fmt.Errorf("waiting for the sequencer to lead: %w", err)
		}
		select {
		case err := <-done:
			cancel()
			pool.Close()
			if err == nil {
				err = ctx.Err()
			}
			return nil, fmt.Errorf("running the sequencer: %w", err)
		case <-time.After(5 * time.Millisecond):
		}
	}
	return func() error {
		cancel()
		err := <-done
		pool.Close()
		if err != nil {
			return fmt.Errorf("running the sequencer: %w", err)
		}
		return nil
	}, nil
}

// writersRun is what runWriters measured after the warm-up.
type writersRun struct {
	rate                 float64 // commits per second
	writerCPU, serverCPU float64 // CPU seconds per 1,000 commits (serverCPU < 0: not measured)
}

// runWriters runs writers loops of the prepared INSERT stmt, each on its own connection,
// and returns the commits per second counted during d, after warmup, with the CPU the
// writers' backends and the PostgreSQL server (postmaster's pid; 0: not on this machine)
// used meanwhile.
func runWriters(ctx context.Context, pool *pgxpool.Pool, stmt string, writers int, warmup, d time.Duration, postmaster int) (writersRun, error) {
	var (
		commits atomic.Int64
		stop    atomic.Bool
		ready   sync.WaitGroup
		start   = make(chan struct{})
		run     = writersRun{serverCPU: -1}
		pids    = make([]int, writers)
	)
	g, gctx := errgroup.WithContext(ctx)
	ready.Add(writers)
	for i := range writers {
		g.Go(func() error {
			conn, err := pool.Acquire(gctx)
			if err == nil {
				pids[i] = int(conn.Conn().PgConn().PID())
			}
			ready.Done()
			if err != nil {
				return fmt.Errorf("acquiring a writer connection: %w", err)
			}
			defer conn.Release()
			select {
			case <-start:
			case <-gctx.Done():
				return gctx.Err()
			}
			rows := newRowSource(uint64(i))
			for !stop.Load() {
				if _, err := conn.Exec(gctx, stmt, rows.next()...); err != nil {
					return fmt.Errorf("inserting: %w", err)
				}
				commits.Add(1)
			}
			return nil
		})
	}
	g.Go(func() error {
		defer stop.Store(true)
		ready.Wait()
		close(start)
		if err := sleep(gctx, warmup); err != nil {
			return err
		}
		writerTicks := func() (n int64) {
			for _, pid := range pids {
				n += cpuTicks(pid)
			}
			return n
		}
		n0, t0, w0, s0 := commits.Load(), time.Now(), writerTicks(), serverTicks(postmaster)
		if err := sleep(gctx, d); err != nil {
			return err
		}
		n1, t1, w1, s1 := commits.Load(), time.Now(), writerTicks(), serverTicks(postmaster)
		run.rate = float64(n1-n0) / t1.Sub(t0).Seconds()
		if n := float64(n1-n0) / 1000; n > 0 {
			run.writerCPU = float64(w1-w0) / 100 / n
			if postmaster != 0 {
				run.serverCPU = float64(s1-s0) / 100 / n
			}
		}
		return nil
	})
	if err := g.Wait(); err != nil {
		return writersRun{}, err
	}
	return run, nil
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// rowSource makes the rows one writer inserts: comments by 1,000 users on 10,000
// portfolios, with a body of about 100 bytes.
type rowSource struct {
	rng *rand.Rand
}

var commentBodies = []string{
	"Thanks for the feedback on my reflection. I added two sources and rewrote the conclusion as advised.",
	"Great progress on this artefact! Could you link it to competency C3 before the review on Thursday?",
	"I uploaded the revised lab report; the methods section now explains the sampling choices in detail.",
	"Please check the evidence for outcome 2: the video is private and the jury cannot see it right now.",
	"The internship journal for week 6 is ready. I would value your comments on the last entry, thanks.",
	"Nice synthesis. The diagram on page 3 is hard to read; a larger export would help the jury a lot.",
}

func newRowSource(seed uint64) *rowSource {
	return &rowSource{rng: rand.New(rand.NewPCG(seed, 0x746f6373696e))}
}

// next returns the arguments of one INSERT: portfolio_id, owner_id, body.
func (r *rowSource) next() []any {
	return []any{
		r.rng.Int64N(10000) + 1,
		"user-" + strconv.Itoa(r.rng.IntN(1000)+1),
		commentBodies[r.rng.IntN(len(commentBodies))],
	}
}
