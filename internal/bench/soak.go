package bench

import (
	"bufio"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"golang.org/x/sync/errgroup"

	"github.com/tocsin/tocsin/internal/auth"
)

// Defaults of SoakConfig.
const (
	SoakClientsDefault           = 5000
	SoakDurationDefault          = 10 * time.Minute
	SoakRateDefault              = 200
	SoakReconnectIntervalDefault = time.Minute
	SoakReportIntervalDefault    = time.Minute
	// soakReconnectShare is the share of clients dropped by each reconnect wave.
	soakReconnectShare = 0.2
	// soakCatchUpTimeout bounds the wait, after the writer stopped, for clients to
	// receive what was sent.
	soakCatchUpTimeout = 60 * time.Second
	// soakShortPollInterval is how often a short-polling client asks.
	soakShortPollInterval = 5 * time.Second
	// soakLongPollWait is a long poll's wait.
	soakLongPollWait = 30
	// soakWriters is how many connections publish the events.
	soakWriters = 8
)

// SoakConfig configures RunSoak.
type SoakConfig struct {
	// DatabaseURL names a server for the scratch database; empty starts a private cluster.
	DatabaseURL string
	// Clients is how many clients follow their feed, a third each over SSE, long polling
	// and short polling, each for its own recipient.
	Clients int
	// Duration is how long events are published.
	Duration time.Duration
	// Rate is the steady number of events published per second, to recipients in turn.
	Rate int
	// ReconnectInterval separates reconnect waves: each drops a fifth of the clients,
	// which reconnect at once from their cursor.
	ReconnectInterval time.Duration
	// ReportInterval separates the samples of the server's RSS, goroutines and open files.
	ReportInterval time.Duration
	// Binary is the tocsin executable to run the server with (default: this executable).
	Binary string
	// StreamLifetime, when set, is the server's --sse-max-lifetime (its default otherwise):
	// streams then end with a final frame and their clients reconnect.
	StreamLifetime time.Duration
}

// SoakSample is one reading of the server process.
type SoakSample struct {
	At         time.Duration // since the start of publishing
	RSS        int64
	Goroutines float64
	OpenFiles  int
	Sent       int64
	Received   int64
}

// SoakResult is what a soak observed.
type SoakResult struct {
	Sent, Received, Duplicated, Lost int64
	Reconnects                       int64
	Errors                           int64 // failed requests (each followed by a retry from the cursor)
	// ErrorKinds counts failed requests by kind (the error with its numbers blanked).
	ErrorKinds map[string]int64
	// StreamEnds counts the streams the server ended cleanly, by final frame and reason.
	StreamEnds map[string]int64
	Samples    []SoakSample
	// MemoryGrowth is the last sample's RSS over the highest of the run's first half.
	MemoryGrowth float64
}

// soakClient is one follower and what it received.
type soakClient struct {
	transport string
	recipient string
	token     string
	cursor    string
	kick      chan struct{} // a reconnect wave asks the client to drop its connection

	mu   sync.Mutex
	seen map[int64]bool
}

// withDefaults fills the zero fields of c with the Soak…Default values.
func (c SoakConfig) withDefaults() SoakConfig {
	if c.Clients <= 0 {
		c.Clients = SoakClientsDefault
	}
	if c.Duration <= 0 {
		c.Duration = SoakDurationDefault
	}
	if c.Rate <= 0 {
		c.Rate = SoakRateDefault
	}
	if c.ReconnectInterval <= 0 {
		c.ReconnectInterval = SoakReconnectIntervalDefault
	}
	if c.ReportInterval <= 0 {
		c.ReportInterval = SoakReportIntervalDefault
	}
	return c
}

// RunSoak starts `tocsin serve` as a child process, has Clients clients follow their feeds
// over a mix of transports while Rate events per second are published for Duration, with
// a reconnect wave every ReconnectInterval, and reports the server's RSS, goroutines and
// open files every ReportInterval, and events sent, received, duplicated and lost. It
// fails when an event is lost or duplicated, or when the server's memory keeps growing
// (the last sample more than 25% and 32 MiB above the highest of the run's first half).
func RunSoak(ctx context.Context, cfg SoakConfig, out io.Writer) (SoakResult, error) {
	cfg = cfg.withDefaults()
	var res SoakResult
	sc, closeScratch, err := openScratch(ctx, cfg.DatabaseURL, 1)
	if err != nil {
		return res, err
	}
	defer closeScratch()
	publishers, err := sc.pool(ctx, soakWriters, nil)
	if err != nil {
		return res, err
	}
	defer publishers.Close()
	serveArgs := []string{"--max-connections", strconv.Itoa(cfg.Clients + 1000),
		"--long-poll-max", strconv.Itoa(soakLongPollWait) + "s"}
	if cfg.StreamLifetime > 0 {
		serveArgs = append(serveArgs, "--sse-max-lifetime", cfg.StreamLifetime.String())
	}
	base, pid, stop, err := startServe(ctx, cfg.Binary, sc, serveArgs...)
	if err != nil {
		return res, err
	}
	defer stop()

	transport := &http.Transport{MaxIdleConnsPerHost: cfg.Clients, MaxIdleConns: cfg.Clients, DisableCompression: true,
		IdleConnTimeout: 90 * time.Second}
	defer transport.CloseIdleConnections()
	httpc := &http.Client{Transport: transport}

	// Every client learns its starting cursor before anything is published.
	clients := make([]*soakClient, cfg.Clients)
	transports := []string{"sse", "long-poll", "short-poll"}
	for i := range clients {
		tok, err := auth.Mint(auth.Config{HS256Secret: []byte(latencySecret)}, recipient(i), 24*time.Hour, "")
		if err != nil {
			return res, err
		}
		clients[i] = &soakClient{transport: transports[i%3], recipient: recipient(i), token: tok,
			kick: make(chan struct{}, 1), seen: map[int64]bool{}}
	}
	var gate sync.WaitGroup
	sem := make(chan struct{}, 64)
	var startErr atomic.Value
	for _, c := range clients {
		sem <- struct{}{}
		gate.Go(func() {
			defer func() { <-sem }()
			_, cursor, err := c.poll(ctx, httpc, base, "now", 0)
			if err != nil {
				startErr.Store(err)
			}
			c.cursor = cursor
		})
	}
	gate.Wait()
	if err, ok := startErr.Load().(error); ok {
		return res, fmt.Errorf("resolving the clients' starting cursors: %w", err)
	}

	var (
		received, duplicated, reconnects atomic.Int64
		errs                             = &errorKinds{kinds: map[string]int64{}}
		followers                        sync.WaitGroup
	)
	followCtx, stopFollowing := context.WithCancel(ctx)
	defer stopFollowing()
	for _, c := range clients {
		followers.Go(func() {
			c.follow(followCtx, httpc, base, &received, &duplicated, &reconnects, errs)
		})
	}

	fmt.Fprintf(out, "soak — %d clients (SSE, long poll, short poll in thirds), %d events/s for %s, "+
		"a reconnect wave of %.0f%% every %s; %d cores, %s\n",
		cfg.Clients, cfg.Rate, cfg.Duration, 100*soakReconnectShare, cfg.ReconnectInterval, runtime.NumCPU(), runtime.Version())
	fmt.Fprintf(out, "%8s %10s %11s %11s %10s %10s\n", "minute", "RSS MiB", "goroutines", "open files", "sent", "received")

	start := time.Now()
	var sent atomic.Int64
	writerDone := make(chan error, 1)
	go func() { writerDone <- publishSteadily(ctx, publishers, cfg, &sent) }()

	sample := func() {
		_, gor := scrapeGo(base)
		s := SoakSample{At: time.Since(start).Round(time.Second), RSS: rss(pid), Goroutines: gor,
			OpenFiles: openFiles(pid), Sent: sent.Load(), Received: received.Load()}
		res.Samples = append(res.Samples, s)
		fmt.Fprintf(out, "%8.1f %10.1f %11.0f %11d %10d %10d\n", s.At.Minutes(), mib(s.RSS), s.Goroutines, s.OpenFiles, s.Sent, s.Received)
	}
	sample()
	report := time.NewTicker(cfg.ReportInterval)
	defer report.Stop()
	waves := time.NewTicker(cfg.ReconnectInterval)
	defer waves.Stop()
	var writerErr error
publishing:
	for {
		select {
		case <-ctx.Done():
			return res, ctx.Err()
		case writerErr = <-writerDone:
			break publishing
		case <-report.C:
			sample()
		case <-waves.C:
			for _, c := range clients {
				if rand.Float64() < soakReconnectShare {
					select {
					case c.kick <- struct{}{}:
					default:
					}
				}
			}
		}
	}
	if writerErr != nil {
		return res, fmt.Errorf("publishing: %w", writerErr)
	}
	res.Sent = sent.Load()
	deadline := time.Now().Add(soakCatchUpTimeout)
	for received.Load() < res.Sent && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	sample()
	stopFollowing()
	followers.Wait()

	res.Received, res.Duplicated, res.Reconnects = received.Load(), duplicated.Load(), reconnects.Load()
	res.Errors, res.ErrorKinds = errs.snapshot()
	res.StreamEnds = errs.endings()
	res.Lost = res.Sent - res.Received
	// The baseline is the highest RSS of the first half of the run, once clients connected
	// (the first sample is taken before): a server that keeps growing ends well above it.
	last := res.Samples[len(res.Samples)-1]
	warm := res.Samples[min(1, len(res.Samples)-1)]
	for _, smp := range res.Samples[1:max(2, len(res.Samples)/2+1)] {
		if smp.RSS > warm.RSS {
			warm = smp
		}
	}
	res.MemoryGrowth = float64(last.RSS) / float64(max(warm.RSS, 1))

	fmt.Fprintf(out, "events   sent %d, received %d, duplicated %d, lost %d\n", res.Sent, res.Received, res.Duplicated, res.Lost)
	fmt.Fprintf(out, "clients  %d reconnects (waves, stream ends, errors), %d failed requests retried\n", res.Reconnects, res.Errors)
	for _, k := range slices.SortedFunc(maps.Keys(res.ErrorKinds), func(a, b string) int {
		return cmp.Compare(res.ErrorKinds[b], res.ErrorKinds[a])
	}) {
		fmt.Fprintf(out, "  %8d  %s\n", res.ErrorKinds[k], k)
	}
	if len(res.StreamEnds) > 0 {
		fmt.Fprintf(out, "streams  ended by the server with a final frame (the client reconnects from its cursor):\n")
		for _, k := range slices.Sorted(maps.Keys(res.StreamEnds)) {
			fmt.Fprintf(out, "  %8d  %s\n", res.StreamEnds[k], k)
		}
	}
	fmt.Fprintf(out, "memory   RSS at most %.1f MiB in the first half, %.1f MiB at the end (x%.2f)\n", mib(warm.RSS), mib(last.RSS), res.MemoryGrowth)
	fmt.Fprintf(out, "reproduce: tocsin bench soak --clients %d --duration %s --rate %d\n", cfg.Clients, cfg.Duration, cfg.Rate)

	var failures []error
	if res.Lost != 0 {
		failures = append(failures, fmt.Errorf("%d events lost", res.Lost))
	}
	if res.Duplicated != 0 {
		failures = append(failures, fmt.Errorf("%d events duplicated", res.Duplicated))
	}
	if growth := last.RSS - warm.RSS; res.MemoryGrowth > 1.25 && growth > 32<<20 {
		failures = append(failures, fmt.Errorf("server memory grew from %.1f to %.1f MiB", mib(warm.RSS), mib(last.RSS)))
	}
	return res, errors.Join(failures...)
}

// publishSteadily publishes cfg.Rate events per second for cfg.Duration, to recipients in
// turn, each carrying its recipient's own sequence number n; sent counts committed ones.
// soakWriters connections publish side by side, so that the rate holds even when each
// durable commit waits for a disk flush; a slow publish is caught up by the next ones.
func publishSteadily(ctx context.Context, pool *pgxpool.Pool, cfg SoakConfig, sent *atomic.Int64) error {
	total := int64(cfg.Duration.Seconds() * float64(cfg.Rate))
	start := time.Now()
	var claimed atomic.Int64
	g, ctx := errgroup.WithContext(ctx)
	for range soakWriters {
		g.Go(func() error {
			for {
				i := claimed.Add(1) - 1
				if i >= total {
					return nil
				}
				if wait := time.Until(start.Add(time.Duration(float64(i) / float64(cfg.Rate) * float64(time.Second)))); wait > 0 {
					select {
					case <-ctx.Done():
						return ctx.Err()
					case <-time.After(wait):
					}
				}
				// Event i goes to recipient i mod Clients as its (i div Clients)-th event.
				r, n := i%int64(cfg.Clients), i/int64(cfg.Clients)
				if _, err := pool.Exec(ctx, benchPublishSoakSQL,
					recipient(int(r)), n); err != nil {
					return err
				}
				sent.Add(1)
			}
		})
	}
	return g.Wait()
}

// follow reads c's feed over its transport until ctx ends, reconnecting from its cursor
// after an error, the end of a stream, or a kick.
func (c *soakClient) follow(ctx context.Context, httpc *http.Client, base string, received, duplicated, reconnects *atomic.Int64, errs *errorKinds) {
	got := func(events []soakEvent) {
		c.mu.Lock()
		defer c.mu.Unlock()
		for _, e := range events {
			if c.seen[e.Data.N] {
				duplicated.Add(1)
				continue
			}
			c.seen[e.Data.N] = true
			received.Add(1)
		}
	}
	for ctx.Err() == nil {
		connCtx, cancel := context.WithCancel(ctx)
		go func() {
			select {
			case <-c.kick:
				cancel()
			case <-connCtx.Done():
			}
		}()
		var err error
		switch c.transport {
		case "sse":
			err = c.stream(connCtx, httpc, base, got)
		case "long-poll":
			for err == nil {
				var events []soakEvent
				if events, c.cursor, err = c.poll(connCtx, httpc, base, c.cursor, soakLongPollWait); err == nil {
					got(events)
				}
			}
		default:
			for err == nil {
				var events []soakEvent
				if events, c.cursor, err = c.poll(connCtx, httpc, base, c.cursor, 0); err == nil {
					got(events)
					select {
					case <-connCtx.Done():
						err = connCtx.Err()
					case <-time.After(soakShortPollInterval):
					}
				}
			}
		}
		kicked := connCtx.Err() != nil && ctx.Err() == nil
		cancel()
		if ctx.Err() != nil {
			return
		}
		reconnects.Add(1)
		var ended endedByServer
		if errors.As(err, &ended) {
			errs.ended(ended.frame)
			continue // a clean end: reconnect at once, as EventSource does after its retry delay
		}
		if !kicked && err != nil {
			errs.add(c.transport, err)
			time.Sleep(time.Duration(500+rand.IntN(1000)) * time.Millisecond)
		}
	}
}

type soakEvent struct {
	ID   string `json:"id"`
	Data struct {
		N int64 `json:"n"`
	} `json:"data"`
}

// poll is one GET /v1/feed; it returns the events and the next cursor.
func (c *soakClient) poll(ctx context.Context, httpc *http.Client, base, after string, wait int) ([]soakEvent, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet,
		fmt.Sprintf("%s/v1/feed?after=%s&wait=%d&limit=1000", base, url.QueryEscape(after), wait), nil)
	if err != nil {
		return nil, after, err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	resp, err := httpc.Do(req)
	if err != nil {
		return nil, after, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(resp.Body)
		return nil, after, fmt.Errorf("GET /v1/feed: %d %s", resp.StatusCode, body)
	}
	var page struct {
		Events []soakEvent `json:"events"`
		Cursor string      `json:"cursor"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&page); err != nil {
		return nil, after, err
	}
	return page.Events, page.Cursor, nil
}

// stream follows GET /v1/feed/stream from c's cursor until it ends.
func (c *soakClient) stream(ctx context.Context, httpc *http.Client, base string, got func([]soakEvent)) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/v1/feed/stream?after="+url.QueryEscape(c.cursor), nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	resp, err := httpc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(resp.Body)
		return fmt.Errorf("GET /v1/feed/stream: %d %s", resp.StatusCode, body)
	}
	br := bufio.NewReaderSize(resp.Body, 4096)
	var id, data, ending string
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			if errors.Is(err, io.EOF) && ending != "" {
				return endedByServer{ending}
			}
			return err
		}
		line = strings.TrimRight(line, "\r\n")
		switch {
		case line == "":
			if data != "" && id != "" {
				var e soakEvent
				if err := json.Unmarshal([]byte(data), &e); err != nil {
					return fmt.Errorf("decoding a stream event: %w", err)
				}
				got([]soakEvent{e})
				c.cursor = id
			}
			id, data = "", ""
		case strings.HasPrefix(line, "id: "):
			id = strings.TrimPrefix(line, "id: ")
			if data == "" {
				c.cursor = id // an id alone (the stream's opening) moves the cursor too
			}
		case strings.HasPrefix(line, "data: "):
			data = strings.TrimPrefix(line, "data: ")
		case strings.HasPrefix(line, "event: reconnect"), strings.HasPrefix(line, "event: push-disabled"):
			data, ending = "", strings.TrimPrefix(line, "event: ")
			if line, err = br.ReadString('\n'); err == nil {
				var d struct{ Reason string }
				if json.Unmarshal([]byte(strings.TrimPrefix(strings.TrimSpace(line), "data: ")), &d) == nil && d.Reason != "" {
					ending += " (" + d.Reason + ")"
				}
			}
		}
	}
}

// startServe runs `tocsin serve` (api and sequencer roles) on the scratch database as a
// child process and waits until it is ready. stop sends SIGTERM and waits for it.
func startServe(ctx context.Context, binary string, sc *scratch, extra ...string) (base string, pid int, stop func(), err error) {
	n := &serveNode{binary: binary, sc: sc, extra: extra}
	if err := n.start(ctx); err != nil {
		return "", 0, nil, err
	}
	return n.base, n.pid, n.stop, nil
}

// openFiles counts a process's open file descriptors.
func openFiles(pid int) int {
	entries, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return 0
	}
	return len(entries)
}

// endedByServer is a stream the server ended cleanly with a final frame (its event name and
// reason): a reconnect the protocol asks for, not a failure.
type endedByServer struct{ frame string }

func (e endedByServer) Error() string { return "stream ended by the server: " + e.frame }

// errorKinds counts failed requests by kind, and streams the server ended by their frame.
type errorKinds struct {
	mu    sync.Mutex
	total int64
	kinds map[string]int64
	ends  map[string]int64
}

func (e *errorKinds) ended(frame string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.ends == nil {
		e.ends = map[string]int64{}
	}
	e.ends[frame]++
}

var digits = regexp.MustCompile(`[0-9]+`)

func (e *errorKinds) add(transport string, err error) {
	msg := err.Error()
	var uerr *url.Error
	if errors.As(err, &uerr) {
		msg = uerr.Op + ": " + uerr.Err.Error() // the URL differs for every client
	}
	if len(msg) > 120 {
		msg = msg[:120]
	}
	kind := transport + ": " + digits.ReplaceAllString(msg, "N")
	e.mu.Lock()
	defer e.mu.Unlock()
	e.total++
	e.kinds[kind]++
}

func (e *errorKinds) snapshot() (int64, map[string]int64) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.total, maps.Clone(e.kinds)
}

// endings returns the streams ended by the server, by final frame.
func (e *errorKinds) endings() map[string]int64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	return maps.Clone(e.ends)
}
