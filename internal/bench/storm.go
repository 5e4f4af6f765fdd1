package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"
)

// Defaults of StormConfig.
const (
	StormClientsDefault   = 10000
	StormRateDefault      = 1000
	StormDurationDefault  = 60 * time.Second
	StormDownDefault      = 2 * time.Second
	StormRetryDefault     = time.Second
	StormTransportDefault = TransportMixed
	StormStopDefault      = "term"
	// stormCPUWindow is the shortest window the storm's CPU is measured over, from the new
	// node's start (/proc counts in hundredths of a second).
	stormCPUWindow = 3 * time.Second
	// stormCatchUpTimeout bounds the wait for every client to catch up after the restart.
	stormCatchUpTimeout = 2 * time.Minute
)

// StormConfig configures RunStorm.
type StormConfig struct {
	// DatabaseURL names a server for the scratch database; empty starts a private cluster.
	DatabaseURL string
	// Clients is how many clients follow their feed, one recipient each.
	Clients int
	// Rate is events per second, to recipients in turn, published for the whole Duration
	// (while the node is down too).
	Rate     int
	Duration time.Duration
	// Down is how long the node stays stopped before it starts again.
	Down time.Duration
	// Retry is the longest random pause of a client before it reconnects after an error.
	Retry time.Duration
	// Transport of the clients: "sse", "long-poll" or "mixed".
	Transport string
	// Stop is how the node is stopped: "term" (SIGTERM: streams drain over the node's drain
	// window, as in a deploy) or "kill" (SIGKILL: a crash, every client cut at once).
	Stop string
	// Binary is the tocsin executable to run the server with (default: this executable).
	Binary string
}

func (c StormConfig) withDefaults() StormConfig {
	if c.Stop == "" {
		c.Stop = StormStopDefault
	}
	if c.Clients <= 0 {
		c.Clients = StormClientsDefault
	}
	if c.Rate <= 0 {
		c.Rate = StormRateDefault
	}
	if c.Duration <= 0 {
		c.Duration = StormDurationDefault
	}
	if c.Down <= 0 {
		c.Down = StormDownDefault
	}
	if c.Retry <= 0 {
		c.Retry = StormRetryDefault
	}
	if c.Transport == "" {
		c.Transport = StormTransportDefault
	}
	return c
}

// StormResult is what a restart under load cost.
type StormResult struct {
	Sent, Received, Lost, Duplicated int64
	// Stopping is how long the node took to stop (the signal until it exited); Starting,
	// from the new process's start until its /readyz answered 200 (it serves before).
	Stopping, Starting time.Duration
	// Behind is how many clients lacked an event committed before the new node started.
	Behind int
	// CaughtUp is the time from the new node's start (exec) until every client had every
	// event committed before that moment; CaughtUpHalf, until half of the clients that
	// were behind had.
	CaughtUp, CaughtUpHalf time.Duration
	Reconnects, Errors     int64
	ErrorKinds             map[string]int64
	// StreamEnds counts the streams the old node ended with a final frame, by frame.
	StreamEnds map[string]int64
	// Steady is the CPU while publishing before the restart; Storm, over StormWindow from
	// the new node's start (until every client caught up, at least stormCPUWindow).
	Steady, Storm CPUShare
	StormWindow   time.Duration
}

// RunStorm has Clients clients follow their feeds from cursors on one `tocsin serve` node
// while Rate events per second are published; a third into the run it stops the node
// (SIGTERM), keeps it down for Down, and starts it again on the same address: every client
// reconnects from its cursor. It reports the time until every client has everything
// committed before the new node started, the clients' errors by kind and the CPU of
// PostgreSQL and Tocsin during the storm, and fails when an event is lost or duplicated.
func RunStorm(ctx context.Context, cfg StormConfig, out io.Writer) (StormResult, error) {
	cfg = cfg.withDefaults()
	var res StormResult
	if err := checkTransport(cfg.Transport); err != nil {
		return res, err
	}
	if cfg.Stop != "term" && cfg.Stop != "kill" {
		return res, fmt.Errorf("unknown way to stop the node %q (term or kill)", cfg.Stop)
	}
	sc, closeScratch, err := openScratch(ctx, cfg.DatabaseURL, LatencyWritersDefault)
	if err != nil {
		return res, err
	}
	defer closeScratch()
	node := &serveNode{binary: cfg.Binary, sc: sc, extra: []string{"--max-connections", strconv.Itoa(cfg.Clients + 1000)}}
	if err := node.start(ctx); err != nil {
		return res, err
	}
	defer node.stop()
	clients, err := openClients(ctx, node.base, cfg.Clients, cfg.Transport)
	if err != nil {
		return res, err
	}
	defer clients.close()

	total := int(int64(cfg.Rate) * int64(cfg.Duration) / int64(time.Second))
	pub := &loadPublisher{Pool: sc.writers, Rate: cfg.Rate, PerTx: 1, Writers: LatencyWritersDefault, Total: total,
		Recipients: cfg.Clients}
	pub.init()
	arr := newArrivals(total)
	var received atomic.Int64
	stats := newFollowStats()
	followCtx, stopFollowing := context.WithCancel(ctx)
	defer stopFollowing()
	wait := clients.follow(followCtx, cfg.Retry, stats, func(c *loadClient, e soakEvent, at time.Time) {
		if arr.got(pub, e.Data.N, at) {
			received.Add(1)
			c.received.Add(1)
		}
	})
	waitConnected(ctx, node.base, cfg.Clients)
	time.Sleep(500 * time.Millisecond) // let the clients park
	postgres := postmasterPID(ctx, sc.ctl)

	pubDone := make(chan error, 1)
	go func() { pubDone <- pub.run(ctx) }()
	steady := startCPUWatch(node.pid, postgres)
	if err := sleep(ctx, cfg.Duration/3); err != nil {
		return res, err
	}
	res.Steady = steady.stop()

	stopAt := time.Now()
	if cfg.Stop == "kill" {
		node.kill()
	} else {
		node.stop()
	}
	res.Stopping = time.Since(stopAt)
	if err := sleep(ctx, cfg.Down); err != nil {
		return res, err
	}
	// What each client is owed: its events committed before the new node starts (those
	// committed while no node ran included).
	owed := make([]int64, cfg.Clients)
	for i := range owed {
		owed[i] = pub.perRecipient[i].Load()
	}
	behind := func() int {
		n := 0
		for _, c := range clients.list {
			if c.received.Load() < owed[c.index] {
				n++
			}
		}
		return n
	}
	res.Behind = behind()
	// The storm's CPU counts the new process from its exec (its CPU time starts at zero).
	storm := startCPUWatch(0, postgres)
	startAt := time.Now()
	// The node serves before /readyz answers: watch the clients catch up meanwhile.
	type catchUp struct {
		all, half time.Duration
		err       error
	}
	watchCtx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	caughtUp := make(chan catchUp, 1)
	go func() {
		var c catchUp
		for left := res.Behind; left > 0; left = behind() {
			if c.half == 0 && left <= res.Behind/2 {
				c.half = time.Since(startAt)
			}
			if time.Since(startAt) > stormCatchUpTimeout {
				c.err = fmt.Errorf("%d of %d clients still behind %s after the restart", left, cfg.Clients, stormCatchUpTimeout)
				break
			}
			if c.err = sleep(watchCtx, 5*time.Millisecond); c.err != nil {
				break
			}
		}
		c.all = time.Since(startAt)
		caughtUp <- c
	}()
	if err := node.start(ctx); err != nil {
		return res, fmt.Errorf("restarting tocsin serve: %w", err)
	}
	storm.tocsin = node.pid
	res.Starting = time.Since(startAt)
	c := <-caughtUp
	if c.err != nil {
		return res, c.err
	}
	res.CaughtUp, res.CaughtUpHalf = c.all, c.half
	if res.CaughtUpHalf == 0 {
		res.CaughtUpHalf = res.CaughtUp
	}
	if err := sleep(ctx, time.Until(startAt.Add(stormCPUWindow))); err != nil {
		return res, err
	}
	res.Storm = storm.stop()
	res.StormWindow = time.Since(startAt)

	if err := <-pubDone; err != nil {
		return res, fmt.Errorf("publishing: %w", err)
	}
	arr.waitAll(ctx, &received, int64(total), latencyCatchUpIdle)
	stopFollowing()
	wait()
	res.Sent, res.Received = pub.committed.Load(), received.Load()
	res.Lost, res.Duplicated = arr.lostAndDuplicated()
	res.Reconnects = stats.reconnects.Load()
	res.Errors, res.ErrorKinds = stats.errs.snapshot()
	res.StreamEnds = stats.errs.endings()

	signal := map[string]string{"term": "SIGTERM", "kill": "SIGKILL"}[cfg.Stop]
	fmt.Fprintf(out, "reconnect storm — %d %s clients with cursors, %d events/s for %s, the node stopped (%s) "+
		"a third in and started again after %s; %d cores, load average %s\n",
		cfg.Clients, cfg.Transport, cfg.Rate, cfg.Duration, signal, cfg.Down, runtime.NumCPU(), loadAverage())
	fmt.Fprintf(out, "  node stopping         %s (%s until it exited)\n", res.Stopping.Round(time.Millisecond), signal)
	fmt.Fprintf(out, "  node starting         %s (exec until /readyz answers; it serves clients before)\n", res.Starting.Round(time.Millisecond))
	fmt.Fprintf(out, "  clients behind        %d when the new node started\n", res.Behind)
	fmt.Fprintf(out, "  all caught up         %s after the start (half of them %s)\n",
		res.CaughtUp.Round(time.Millisecond), res.CaughtUpHalf.Round(time.Millisecond))
	fmt.Fprintf(out, "  CPU steady            %s\n", res.Steady)
	fmt.Fprintf(out, "  CPU storm             %s (the %s from the start)\n", res.Storm, res.StormWindow.Round(10*time.Millisecond))
	fmt.Fprintf(out, "  events                sent %d, received %d, lost %d, duplicated %d\n", res.Sent, res.Received, res.Lost, res.Duplicated)
	fmt.Fprintf(out, "  clients               %d reconnects, %d failed requests, by kind:\n%s", res.Reconnects, res.Errors, errorLines(res.ErrorKinds))
	if len(res.StreamEnds) > 0 {
		fmt.Fprintf(out, "  streams ended by the server with a final frame, by frame:\n%s", errorLines(res.StreamEnds))
	}
	fmt.Fprintf(out, "reproduce: tocsin bench storm --clients %d --rate %d --duration %s --down %s --retry %s --transport %s --stop %s\n",
		cfg.Clients, cfg.Rate, cfg.Duration, cfg.Down, cfg.Retry, cfg.Transport, cfg.Stop)
	var failures []error
	if res.Lost != 0 {
		failures = append(failures, fmt.Errorf("%d events lost", res.Lost))
	}
	if res.Duplicated != 0 {
		failures = append(failures, fmt.Errorf("%d events duplicated", res.Duplicated))
	}
	return res, errors.Join(failures...)
}

// serveNode is a `tocsin serve` child process (api and sequencer roles) on the scratch
// database that can be stopped and started again on the same address.
type serveNode struct {
	binary string
	sc     *scratch
	extra  []string

	addr, base string
	pid        int
	cmd        *exec.Cmd
}

// start runs the node, on a free port the first time and on the same address afterwards,
// and waits until it is ready.
func (n *serveNode) start(ctx context.Context) error {
	if n.binary == "" {
		exe, err := os.Executable()
		if err != nil {
			return err
		}
		n.binary = exe
	}
	if n.addr == "" {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		n.addr = l.Addr().String()
		l.Close()
		n.base = "http://" + n.addr
	}
	u, err := url.Parse(n.sc.adminURL)
	if err != nil {
		return err
	}
	u.Path = "/" + n.sc.name
	args := append([]string{"serve", "--database-url", u.String(), "--addr", n.addr, "--jwt-secret", latencySecret,
		"--roles", "api,sequencer", "--log-level", "warn"}, n.extra...)
	n.cmd = exec.CommandContext(ctx, n.binary, args...)
	n.cmd.Stderr = os.Stderr
	if err := n.cmd.Start(); err != nil {
		return fmt.Errorf("starting tocsin serve: %w", err)
	}
	n.pid = n.cmd.Process.Pid
	if err := waitReady(ctx, n.base); err != nil {
		n.stop()
		return err
	}
	return nil
}

// stop sends SIGTERM and waits for the node to exit; it does nothing when it is stopped.
func (n *serveNode) stop() {
	if n.cmd == nil {
		return
	}
	_ = n.cmd.Process.Signal(syscall.SIGTERM)
	_ = n.cmd.Wait()
	n.cmd = nil
}

// kill ends the node with SIGKILL, as a crash would, and waits for it.
func (n *serveNode) kill() {
	if n.cmd == nil {
		return
	}
	_ = n.cmd.Process.Kill()
	_ = n.cmd.Wait()
	n.cmd = nil
}
