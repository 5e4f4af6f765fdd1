package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"runtime"
	"strconv"
	"sync/atomic"
	"time"
)

// Defaults of FanoutConfig.
const (
	FanoutClientsDefault   = 1000
	FanoutRoundsDefault    = 50
	FanoutTransportDefault = TransportMixed
	// fanoutPause separates a round's last arrival from the next publish, so that every
	// long poll is parked again.
	fanoutPause = 200 * time.Millisecond
	// fanoutRoundTimeout bounds the wait for a round's last arrival.
	fanoutRoundTimeout = 15 * time.Second
)

// FanoutConfig configures RunFanout.
type FanoutConfig struct {
	// DatabaseURL names a server for the scratch database; empty starts a private cluster.
	DatabaseURL string
	// Clients is how many recipients receive each change, one following client each.
	Clients int
	// Rounds is how many changes are published, one after the other.
	Rounds int
	// Transport of the clients: "sse", "long-poll" or "mixed".
	Transport string
	// Binary is the tocsin executable to run the server with (default: this executable).
	Binary string
}

func (c FanoutConfig) withDefaults() FanoutConfig {
	if c.Clients <= 0 {
		c.Clients = FanoutClientsDefault
	}
	if c.Rounds <= 0 {
		c.Rounds = FanoutRoundsDefault
	}
	if c.Transport == "" {
		c.Transport = FanoutTransportDefault
	}
	return c
}

// FanoutResult is how long one change took to reach all its recipients.
type FanoutResult struct {
	Rounds, Clients int
	// First and Last are, over the rounds, the time from just before COMMIT until the first
	// and the last client had the change.
	First, Last      percentiles
	Lost, Duplicated int64
	Errors           int64
	ErrorKinds       map[string]int64
	CPU              CPUShare
}

// RunFanout publishes Rounds changes, each to all Clients recipients in one transaction
// (tocsin.publish with an array of recipients), waits until every client has it, and
// reports the time until the first and the last client had it. It fails when a client
// misses a change or receives it twice.
func RunFanout(ctx context.Context, cfg FanoutConfig, out io.Writer) (FanoutResult, error) {
	cfg = cfg.withDefaults()
	res := FanoutResult{Rounds: cfg.Rounds, Clients: cfg.Clients}
	if err := checkTransport(cfg.Transport); err != nil {
		return res, err
	}
	sc, closeScratch, err := openScratch(ctx, cfg.DatabaseURL, 1)
	if err != nil {
		return res, err
	}
	defer closeScratch()
	base, pid, stopNode, err := startServe(ctx, cfg.Binary, sc, "--max-connections", strconv.Itoa(cfg.Clients+1000))
	if err != nil {
		return res, err
	}
	defer stopNode()
	clients, err := openClients(ctx, base, cfg.Clients, cfg.Transport)
	if err != nil {
		return res, err
	}
	defer clients.close()

	// Per round and client: how many times the change arrived, and when it first did.
	count := make([]atomic.Int32, cfg.Rounds*cfg.Clients)
	at := make([]atomic.Int64, cfg.Rounds*cfg.Clients)
	roundGot := make([]atomic.Int64, cfg.Rounds)
	stats := newFollowStats()
	followCtx, stopFollowing := context.WithCancel(ctx)
	defer stopFollowing()
	wait := clients.follow(followCtx, time.Second, stats, func(c *loadClient, e soakEvent, t time.Time) {
		n := e.Data.N
		if n < 0 || n >= int64(cfg.Rounds) {
			return
		}
		slot := int(n)*cfg.Clients + c.index
		if count[slot].Add(1) == 1 {
			at[slot].Store(t.UnixNano())
			roundGot[n].Add(1)
		}
	})
	recipients := make([]string, cfg.Clients)
	for i := range recipients {
		recipients[i] = recipient(i)
	}
	waitConnected(ctx, base, cfg.Clients)
	time.Sleep(500 * time.Millisecond) // let the clients park
	postgres := postmasterPID(ctx, sc.ctl)
	busy := startCPUWatch(pid, postgres)
	var first, last []time.Duration
	for round := range cfg.Rounds {
		t0, err := publishFanout(ctx, sc, recipients, int64(round))
		if err != nil {
			return res, err
		}
		deadline := time.Now().Add(fanoutRoundTimeout)
		for roundGot[round].Load() < int64(cfg.Clients) && time.Now().Before(deadline) {
			if err := sleep(ctx, time.Millisecond); err != nil {
				return res, err
			}
		}
		lo, hi := int64(1<<62), int64(0)
		for i := range cfg.Clients {
			if v := at[round*cfg.Clients+i].Load(); v != 0 {
				lo, hi = min(lo, v), max(hi, v)
			}
		}
		if hi != 0 {
			first, last = append(first, time.Duration(lo-t0)), append(last, time.Duration(hi-t0))
		}
		if err := sleep(ctx, fanoutPause); err != nil {
			return res, err
		}
	}
	res.CPU = busy.stop()
	stopFollowing()
	wait()
	for i := range count {
		switch c := count[i].Load(); {
		case c == 0:
			res.Lost++
		case c > 1:
			res.Duplicated += int64(c - 1)
		}
	}
	res.First, res.Last = percentilesOf(first), percentilesOf(last)
	res.Errors, res.ErrorKinds = stats.errs.snapshot()

	fmt.Fprintf(out, "fan-out — one change to %d recipients (one %s client each), %d rounds; %d cores, load average %s\n",
		cfg.Clients, cfg.Transport, cfg.Rounds, runtime.NumCPU(), loadAverage())
	fmt.Fprintf(out, "  first client has it   %s\n", res.First)
	fmt.Fprintf(out, "  last client has it    %s\n", res.Last)
	fmt.Fprintf(out, "  deliveries            %d expected, %d lost, %d duplicated\n", cfg.Rounds*cfg.Clients, res.Lost, res.Duplicated)
	fmt.Fprintf(out, "  CPU over the rounds   %s\n", res.CPU)
	if res.Errors > 0 {
		fmt.Fprintf(out, "  %d client requests failed or ended (each resumed from its cursor):\n%s", res.Errors, errorLines(res.ErrorKinds))
	}
	fmt.Fprintf(out, "reproduce: tocsin bench fanout --clients %d --rounds %d --transport %s\n", cfg.Clients, cfg.Rounds, cfg.Transport)
	var failures []error
	if res.Lost != 0 {
		failures = append(failures, fmt.Errorf("%d deliveries lost", res.Lost))
	}
	if res.Duplicated != 0 {
		failures = append(failures, fmt.Errorf("%d deliveries duplicated", res.Duplicated))
	}
	return res, errors.Join(failures...)
}

// publishFanout commits one change to every recipient and returns the clock just before
// its COMMIT (Unix ns).
func publishFanout(ctx context.Context, sc *scratch, recipients []string, n int64) (int64, error) {
	tx, err := sc.writers.Begin(ctx)
	if err != nil {
		return 0, fmt.Errorf("beginning the fan-out transaction: %w", err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	if _, err := tx.Exec(ctx, benchPublishFanoutSQL, recipients, n); err != nil {
		return 0, fmt.Errorf("publishing to %d recipients: %w", len(recipients), err)
	}
	t0 := time.Now().UnixNano()
	if err := tx.Commit(ctx); err != nil {
		return 0, fmt.Errorf("committing the fan-out: %w", err)
	}
	return t0, nil
}
