package bench

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/tocsin/tocsin/internal/auth"
)

// StreamsConfig configures RunStreams.
type StreamsConfig struct {
	// DatabaseURL names a server for the scratch database; empty starts a private cluster.
	DatabaseURL string
	// Streams is how many SSE streams to hold open, each for its own recipient.
	Streams int
	// Rest is how long the held streams are watched for CPU at rest.
	Rest time.Duration
	// Binary is the tocsin executable to run the server with (default: this executable).
	Binary string
	// Heartbeat is the server's heartbeat interval (its default when zero).
	Heartbeat time.Duration
}

// StreamsResult is what holding the streams cost the server process.
type StreamsResult struct {
	Streams         int
	RSSBefore       int64 // bytes, server process, before the streams
	RSSHeld         int64 // bytes, with every stream held
	RSSPerStream    float64
	RSSMin, RSSMax  int64   // bytes, over the rest
	HeapPerStream   float64 // Go heap in use per stream (from /metrics)
	CPUAtRest       float64 // share of one core, while holding the streams
	CPUAtRestIdle   float64 // share of one core, same server before any stream
	GoroutinesAdded float64
}

// RunStreams starts `tocsin serve` as a child process (so that the client's sockets do not
// count against the server's open-files limit), holds Streams SSE streams open against it,
// and reports the server's resident memory per stream and its CPU at rest.
func RunStreams(ctx context.Context, cfg StreamsConfig, out io.Writer) (StreamsResult, error) {
	if cfg.Streams <= 0 {
		cfg.Streams = 15000
	}
	if cfg.Rest <= 0 {
		cfg.Rest = 30 * time.Second
	}
	if cfg.Binary == "" {
		exe, err := os.Executable()
		if err != nil {
			return StreamsResult{}, err
		}
		cfg.Binary = exe
	}
	srv, err := openServer(ctx, cfg.DatabaseURL)
	if err != nil {
		return StreamsResult{}, err
	}
	defer srv.close()
	sc, err := newScratch(ctx, srv.adminURL, 1)
	if err != nil {
		return StreamsResult{}, err
	}
	defer sc.close()
	u, err := url.Parse(srv.adminURL)
	if err != nil {
		return StreamsResult{}, err
	}
	u.Path = "/" + sc.name

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return StreamsResult{}, err
	}
	addr := l.Addr().String()
	l.Close()
	args := []string{"serve", "--database-url", u.String(), "--addr", addr, "--jwt-secret", latencySecret,
		"--max-connections", strconv.Itoa(cfg.Streams + 1000), "--max-streams-per-recipient", "8",
		"--roles", "api,sequencer", "--log-level", "warn"}
	if cfg.Heartbeat > 0 {
		args = append(args, "--sse-heartbeat", cfg.Heartbeat.String())
	}
	cmd := exec.CommandContext(ctx, cfg.Binary, args...)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return StreamsResult{}, fmt.Errorf("starting tocsin serve: %w", err)
	}
	defer func() { _ = cmd.Process.Signal(syscall.SIGTERM); _ = cmd.Wait() }()
	base := "http://" + addr
	if err := waitReady(ctx, base); err != nil {
		return StreamsResult{}, err
	}
	pid := cmd.Process.Pid

	time.Sleep(2 * time.Second)
	r := StreamsResult{Streams: cfg.Streams}
	heap0, gor0 := scrapeGo(base)
	r.RSSBefore = rss(pid)
	cpu0 := cpuTicks(pid)
	time.Sleep(cfg.Rest / 3)
	r.CPUAtRestIdle = float64(cpuTicks(pid)-cpu0) / 100 / (cfg.Rest / 3).Seconds()

	// Open the streams, a few hundred at a time.
	transport := &http.Transport{MaxConnsPerHost: 0, MaxIdleConnsPerHost: 1, DisableCompression: true}
	client := &http.Client{Transport: transport}
	holdCtx, release := context.WithCancel(ctx)
	var (
		opened atomic.Int64
		failed atomic.Int64
		held   sync.WaitGroup
		gate   = make(chan struct{}, 200)
	)
	for i := range cfg.Streams {
		tok, err := auth.Mint(auth.Config{HS256Secret: []byte(latencySecret)}, recipient(i), 2*time.Hour, "")
		if err != nil {
			release()
			return r, err
		}
		gate <- struct{}{}
		held.Go(func() {
			released := false
			if !holdStream(holdCtx, client, base, tok, func() { opened.Add(1); released = true; <-gate }) {
				failed.Add(1)
			}
			if !released {
				<-gate
			}
		})
	}
	for opened.Load()+failed.Load() < int64(cfg.Streams) {
		time.Sleep(50 * time.Millisecond)
	}
	if failed.Load() > 0 {
		release()
		held.Wait()
		return r, fmt.Errorf("%d of %d streams could not be opened", failed.Load(), cfg.Streams)
	}
	time.Sleep(3 * time.Second)
	cpu1 := cpuTicks(pid)
	// Watch the resident set over the whole rest: it must hold steady, not creep up.
	r.RSSMin, r.RSSMax = 1<<62, 0
	for end := time.Now().Add(cfg.Rest); ; {
		v := rss(pid)
		r.RSSMin, r.RSSMax = min(r.RSSMin, v), max(r.RSSMax, v)
		left := time.Until(end)
		if left <= 0 {
			break
		}
		time.Sleep(min(left, 10*time.Second))
	}
	r.CPUAtRest = float64(cpuTicks(pid)-cpu1) / 100 / cfg.Rest.Seconds()
	r.RSSHeld = rss(pid)
	heap1, gor1 := scrapeGo(base)
	r.RSSPerStream = float64(r.RSSHeld-r.RSSBefore) / float64(cfg.Streams)
	r.HeapPerStream = (heap1 - heap0) / float64(cfg.Streams)
	r.GoroutinesAdded = (gor1 - gor0) / float64(cfg.Streams)
	release()
	held.Wait()

	fmt.Fprintf(out, "held SSE streams — one `tocsin serve` process, %d cores, %s\n", runtime.NumCPU(), runtime.Version())
	fmt.Fprintf(out, "  streams held            %d (one recipient each)\n", r.Streams)
	fmt.Fprintf(out, "  server RSS              %.1f MiB before, %.1f MiB held\n", mib(r.RSSBefore), mib(r.RSSHeld))
	fmt.Fprintf(out, "  RSS per held stream     %.1f KiB at the end (%.1f–%.1f KiB over the %s at rest)\n", r.RSSPerStream/1024,
		float64(r.RSSMin-r.RSSBefore)/float64(cfg.Streams)/1024, float64(r.RSSMax-r.RSSBefore)/float64(cfg.Streams)/1024, cfg.Rest)
	fmt.Fprintf(out, "  Go heap per stream      %.1f KiB (go_memstats_heap_inuse_bytes)\n", r.HeapPerStream/1024)
	fmt.Fprintf(out, "  goroutines per stream   %.2f\n", r.GoroutinesAdded)
	fmt.Fprintf(out, "  CPU at rest             %.1f%% of a core holding them (heartbeats included), %.1f%% before\n",
		100*r.CPUAtRest, 100*r.CPUAtRestIdle)
	fmt.Fprintf(out, "  CPU per held stream     %.2f µs per second (above the idle server)\n",
		max(r.CPUAtRest-r.CPUAtRestIdle, 0)*1e6/float64(r.Streams))
	fmt.Fprintf(out, "reproduce: tocsin bench streams --streams %d --rest %s\n", cfg.Streams, cfg.Rest)
	return r, nil
}

// holdStream opens one stream, calls opened once its first bytes arrive, and reads until
// ctx ends. It returns false, without calling opened, when the stream did not open.
func holdStream(ctx context.Context, client *http.Client, base, token string, opened func()) bool {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/v1/feed/stream?after=now", nil)
	if err != nil {
		return false
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := client.Do(req)
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return false
	}
	br := bufio.NewReaderSize(resp.Body, 512)
	if _, err := br.ReadString('\n'); err != nil {
		return false
	}
	opened()
	_, _ = io.Copy(io.Discard, br)
	return true
}

func waitReady(ctx context.Context, base string) error {
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get(base + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return fmt.Errorf("tocsin serve at %s did not become ready", base)
}

// rss is a process's resident set size in bytes.
func rss(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb * 1024
		}
	}
	return 0
}

// scrapeGo reads the server's Go heap in use and goroutine count from /metrics.
func scrapeGo(base string) (heap, goroutines float64) {
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		return 0, 0
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if v, ok := strings.CutPrefix(line, "go_memstats_heap_inuse_bytes "); ok {
			heap, _ = strconv.ParseFloat(v, 64)
		}
		if v, ok := strings.CutPrefix(line, "go_goroutines "); ok {
			goroutines, _ = strconv.ParseFloat(v, 64)
		}
	}
	return heap, goroutines
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }
