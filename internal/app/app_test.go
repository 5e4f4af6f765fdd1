package app_test

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/tocsin/tocsin/internal/app"
	"github.com/tocsin/tocsin/internal/auth"
	"github.com/tocsin/tocsin/internal/config"
	"github.com/tocsin/tocsin/internal/demo"
	"github.com/tocsin/tocsin/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

const secret = "an-hs256-secret-for-tests-only-0123456789"

// queryCounter is a pgx tracer that counts the node's queries by what they read.
type queryCounter struct {
	feedAfter atomic.Int64 // a client's own read (FeedListAfter)
	feedRange atomic.Int64 // the hub's one read per batch (FeedListRange)
}

func (q *queryCounter) TraceQueryStart(ctx context.Context, _ *pgx.Conn, d pgx.TraceQueryStartData) context.Context {
	switch {
	case strings.Contains(d.SQL, "LEFT JOIN tocsin.feed_horizon"):
		q.feedAfter.Add(1)
	case strings.Contains(d.SQL, "f.position > $1 AND f.position <= $2"): // of some recipients or all
		q.feedRange.Add(1)
	}
	return ctx
}
func (q *queryCounter) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

type bundle struct {
	db      *pgtest.DB
	logs    *syncBuffer // the node's WARN and ERROR logs
	base    string
	queries *queryCounter
	node    *app.Node
	// stop stops the node and waits for Run to return (also done at cleanup).
	stop func()
}

// setup starts a node on a fresh database holding the demo schema; args are extra flags.
func setup(t *testing.T, args ...string) *bundle {
	t.Helper()
	db := pgtest.New(t)
	_, err := demo.Install(context.Background(), db.Pool)
	require.NoError(t, err)
	return startNode(t, db, args...)
}

// startNode starts one more node on db (nodes of one deployment share a database).
func startNode(t *testing.T, db *pgtest.DB, args ...string) *bundle {
	t.Helper()
	return startNodeWith(t, db, app.Options{}, args...)
}

// startNodeWith is startNode with options; the node's pool always gets the query counter.
func startNodeWith(t *testing.T, db *pgtest.DB, opts app.Options, args ...string) *bundle {
	t.Helper()
	ctx := context.Background()
	cfg, err := config.Load(flag.NewFlagSet("test", flag.ContinueOnError), append([]string{
		"--database-url", db.URL, "--addr", "127.0.0.1:0", "--jwt-secret", secret,
		"--long-poll-max", "20s", "--fallback-interval", "200ms"}, args...))
	require.NoError(t, err)
	q := &queryCounter{}
	logs := &syncBuffer{}
	node, err := app.New(ctx, cfg, slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelWarn})),
		app.Options{PoolConfigFunc: func(c *pgxpool.Config) { c.ConnConfig.Tracer = q },
			DevPages: opts.DevPages, WithoutDoorbell: opts.WithoutDoorbell})
	require.NoError(t, err)
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- node.Run(runCtx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			// Errorf, not require: the shutdown test stops the node from another goroutine.
			if err := <-done; err != nil {
				t.Errorf("the node stopped with an error: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return &bundle{db: db, logs: logs, base: "http://" + node.Addr(), queries: q, node: node, stop: stop}
}

func token(t *testing.T, sub string) string {
	tok, err := auth.Mint(auth.Config{HS256Secret: []byte(secret)}, sub, time.Hour, "")
	require.NoError(t, err)
	return tok
}

type page struct {
	Events []struct {
		ID      string          `json:"id"`
		Topic   string          `json:"topic"`
		Kind    string          `json:"kind"`
		Op      *string         `json:"op"`
		Table   *string         `json:"table"`
		Key     json.RawMessage `json:"key"`
		Data    json.RawMessage `json:"data"`
		Old     json.RawMessage `json:"old"`
		Changed []string        `json:"changed"`
	} `json:"events"`
	Cursor string `json:"cursor"`
}

func getFeed(t *testing.T, client *http.Client, base, tok, query string) (int, page) {
	t.Helper()
	status, p, err := getFeedErr(client, base, tok, query)
	require.NoError(t, err)
	return status, p
}

// polled is what a GET /v1/feed made on another goroutine got.
type polled struct {
	status int
	page   page
	err    error
}

// getFeedErr is getFeed for goroutines other than the test's: it returns its error.
func getFeedErr(client *http.Client, base, tok, query string) (int, page, error) {
	var p page
	req, err := http.NewRequest(http.MethodGet, base+"/v1/feed?"+query, nil)
	if err != nil {
		return 0, p, err
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := client.Do(req)
	if err != nil {
		return 0, p, err
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusOK {
		if err := json.NewDecoder(resp.Body).Decode(&p); err != nil {
			return resp.StatusCode, p, fmt.Errorf("decoding the page: %w", err)
		}
	}
	return resp.StatusCode, p, nil
}

// The README's walkthrough: a long poll receives a row inserted in another session, with
// the route's payload; bob's feed holds it too (he is a member), and an update that touches
// no watched column of a when_changed route produces nothing.
func TestWalkthroughLongPollReceivesInsert(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t)
	alice := token(t, "alice")

	result := make(chan polled, 1)
	go func() {
		status, p, err := getFeedErr(http.DefaultClient, b.base, alice, "after=now&wait=15")
		result <- polled{status, p, err}
	}()
	require.Eventually(t, func() bool { return b.queries.feedAfter.Load() >= 1 }, 5*time.Second, 5*time.Millisecond)
	_, err := b.db.Pool.Exec(ctx, `INSERT INTO comment (portfolio_id, author_id, body) VALUES (1, 'bob', 'Nice work')`)
	require.NoError(t, err)
	r := <-result
	require.NoError(t, r.err)
	require.Equal(t, http.StatusOK, r.status)
	p := r.page
	require.Len(t, p.Events, 1)
	e := p.Events[0]
	require.Equal(t, "comment", e.Topic)
	require.Equal(t, "notification", e.Kind)
	require.Equal(t, "insert", *e.Op)
	require.Equal(t, "public.comment", *e.Table)
	require.JSONEq(t, `{"id": 1}`, string(e.Key))
	require.JSONEq(t, `{"id": 1, "portfolio_id": 1, "author_id": "bob", "body": "Nice work"}`, string(e.Data))
	require.Equal(t, e.ID, p.Cursor)

	// An update of a column the portfolio route does not watch is not an event; a status
	// change is, for the owner only.
	_, err = b.db.Pool.Exec(ctx, `UPDATE portfolio SET owner_id = owner_id WHERE id = 1`)
	require.NoError(t, err)
	_, err = b.db.Pool.Exec(ctx, `UPDATE portfolio SET status = 'submitted' WHERE id = 1`)
	require.NoError(t, err)
	status, next := getFeed(t, http.DefaultClient, b.base, alice, "after="+p.Cursor+"&wait=10")
	require.Equal(t, http.StatusOK, status)
	require.Len(t, next.Events, 1)
	require.Equal(t, "portfolio", next.Events[0].Topic)
	require.Equal(t, []string{"status"}, next.Events[0].Changed)

	_, bobs := getFeed(t, http.DefaultClient, b.base, token(t, "bob"), "")
	require.Len(t, bobs.Events, 1, "bob sees the comment and not alice's portfolio change")
	require.Equal(t, "comment", bobs.Events[0].Topic)
}

// Idle is free: 500 parked long polls cost no database query while they wait, and one
// event for all of them is served by one fan-out read per node, not one per client.
func TestParkedLongPollsCostNoQuery(t *testing.T) {
	t.Parallel()
	parkAndPublish(t, []*bundle{setup(t)}, 500)
}

// The same across nodes: 1,000 clients parked on two nodes of one database; each node
// reads the batch once for all of its clients, and /metrics says so too.
func TestParkedLongPollsAcrossNodesOneReadPerNode(t *testing.T) {
	t.Parallel()
	a := setup(t)
	b := startNode(t, a.db)
	parkAndPublish(t, []*bundle{a, b}, 1000)

	resp, err := http.Get(b.base + "/metrics")
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.Contains(t, string(body), "tocsin_hub_fanout_reads_total 1\n")
	require.Contains(t, string(body), "tocsin_long_polls_parked 0\n")
	require.Contains(t, string(body), "tocsin_outbox_backlog 0\n")
}

// parkAndPublish parks clients long polls spread over nodes, checks that parking costs no
// query, then publishes one message to all of them in one transaction and checks that
// every client got it with one fan-out read per node.
func parkAndPublish(t *testing.T, nodes []*bundle, clients int) {
	t.Helper()
	ctx := context.Background()
	transport := &http.Transport{MaxIdleConnsPerHost: clients, MaxConnsPerHost: clients}
	client := &http.Client{Transport: transport}
	defer transport.CloseIdleConnections()

	recipients := make([]string, clients)
	tokens := make([]string, clients)
	for i := range recipients {
		recipients[i] = fmt.Sprintf("user-%d", i)
		tokens[i] = token(t, recipients[i])
	}
	var wg sync.WaitGroup
	got := make([]page, clients)
	statuses, errs := make([]int, clients), make([]error, clients)
	for i := range clients {
		wg.Go(func() {
			statuses[i], got[i], errs[i] = getFeedErr(client, nodes[i%len(nodes)].base, tokens[i], "after=now&wait=20")
		})
	}
	// Each request reads its feed once and then parks.
	reads := func() (after, fanout int64) {
		for _, n := range nodes {
			after += n.queries.feedAfter.Load()
			fanout += n.queries.feedRange.Load()
		}
		return after, fanout
	}
	require.Eventually(t, func() bool { a, _ := reads(); return a >= int64(clients) }, 30*time.Second, 10*time.Millisecond)
	require.Eventually(t, func() bool {
		parked := 0
		for _, n := range nodes {
			parked += n.node.Hub.Waiting()
		}
		return parked == clients
	}, 30*time.Second, 10*time.Millisecond)
	parkedAfter, parkedFanout := reads()
	time.Sleep(time.Second) // a window in which only the fallback timer may run
	a, f := reads()
	require.Equal(t, parkedAfter, a, "a parked long poll read the feed")
	require.Equal(t, parkedFanout, f, "nothing happened, yet a hub read the feed")

	_, err := nodes[0].db.Pool.Exec(ctx, `SELECT tocsin.publish($1::text[], 'broadcast', '{"hello": "world"}')`, recipients)
	require.NoError(t, err)
	wg.Wait()
	for i, p := range got {
		require.NoError(t, errs[i], "client %d", i)
		require.Equal(t, http.StatusOK, statuses[i], "client %d", i)
		require.Len(t, p.Events, 1, "client %d", i)
	}
	for i, n := range nodes {
		fanout := n.queries.feedRange.Load()
		t.Logf("node %d: fan-out reads for %d clients: %d", i, clients/len(nodes), fanout)
		require.Equal(t, int64(1), fanout, "node %d: one read per batch, not per client", i)
	}
	a, _ = reads()
	require.Equal(t, parkedAfter, a, "woken long polls re-read the feed")
}

// syncBuffer is a log sink safe for the node's goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
