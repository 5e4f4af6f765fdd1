package app_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tocsin/tocsin/internal/auth"
	"github.com/tocsin/tocsin/internal/stream"
)

const streamTimeout = 10 * time.Second

// rawFeedEvents returns the events of a short poll exactly as the API encoded them.
func rawFeedEvents(t *testing.T, b *bundle, tok, after string) []json.RawMessage {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, b.base+"/v1/feed?after="+after, nil)
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	var p struct{ Events []json.RawMessage }
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&p))
	return p.Events
}

// The stream's bytes, exactly: headers flushed at once, the opening frame with the retry
// hint and the starting cursor, then each event framed with the very JSON GET /v1/feed
// returns — and a payload full of CR/LF and field names stays inside its data line.
func TestStreamFramingGolden(t *testing.T) {
	t.Parallel()
	b := setup(t)
	tok := token(t, "alice")
	status, start := getFeed(t, http.DefaultClient, b.base, tok, "after=now")
	require.Equal(t, http.StatusOK, status)

	s := openStream(t, b.base, "after=now", bearer(tok))
	require.Equal(t, http.StatusOK, s.Resp.StatusCode) // headers arrive before any event
	require.Equal(t, "text/event-stream", s.Resp.Header.Get("Content-Type"))
	require.Equal(t, "no-cache", s.Resp.Header.Get("Cache-Control"))
	require.Equal(t, "no", s.Resp.Header.Get("X-Accel-Buffering"))
	require.Empty(t, s.Resp.Header.Get("Content-Encoding"))

	evil := "a\n\nid: x\nevent: reconnect\ndata: evil\r\n\r\nretry: 1\r:"
	_, err := b.db.Pool.Exec(context.Background(), `SELECT tocsin.publish('alice', 'chat', jsonb_build_object('text', $1::text))`, evil)
	require.NoError(t, err)
	e, ok := s.NextEvent(streamTimeout)
	require.True(t, ok)
	require.Equal(t, "message", e.Event)
	var got struct{ Data struct{ Text string } }
	require.NoError(t, json.Unmarshal([]byte(e.Data), &got))
	require.Equal(t, evil, got.Data.Text, "the payload arrives intact, as data")

	raw := rawFeedEvents(t, b, tok, start.Cursor)
	require.Len(t, raw, 1)
	var id struct{ ID string }
	require.NoError(t, json.Unmarshal(raw[0], &id))
	require.Equal(t, id.ID, e.ID)
	want := fmt.Sprintf("retry: RETRY\nid: %s\n\nid: %s\nevent: message\ndata: %s\n\n", start.Cursor, id.ID, raw[0])
	gotRaw := regexp.MustCompile(`^retry: \d+\n`).ReplaceAllString(s.Raw(), "retry: RETRY\n")
	require.Equal(t, want, gotRaw)
	require.NotContains(t, s.Raw(), "\nid: x")
}

// Entries committed while the backlog replays appear exactly once, in order: the seam
// between the database pages and the hub's live hand-over has no gap and no duplicate.
func TestStreamSeamWhileBacklogReplays(t *testing.T) {
	t.Parallel()
	b := setup(t)
	tok := token(t, "alice")
	const backlog, live = 2500, 300 // more than two pages of backlog
	_, err := b.db.Pool.Exec(context.Background(), `
		SELECT tocsin.publish('alice', 'chat', jsonb_build_object('n', n)) FROM generate_series(0, $1 - 1) n`, backlog)
	require.NoError(t, err)

	s := openStream(t, b.base, "", bearer(tok))
	require.Equal(t, http.StatusOK, s.Resp.StatusCode)
	done := make(chan error, 1)
	go func() { done <- publishErr(b, "alice", backlog, backlog+live) }()
	var got []received
	for len(got) < backlog+live {
		e, ok := s.NextEvent(deliveryTimeout)
		require.True(t, ok, "got %d of %d", len(got), backlog+live)
		got = append(got, received{ID: e.ID, N: payloadN(t, json.RawMessage(e.Data))})
	}
	require.NoError(t, <-done)
	requireSequence(t, got, 0, backlog+live)
	_, more := s.NextEvent(100 * time.Millisecond)
	require.False(t, more, "no event after the last one")
}

// A client that stops reading is cut off (its write deadline passes, or its queue
// overflows: hub.TestFollowerSlowConsumer covers that path alone), while another client of
// the same recipient receives everything, in order, and the hub never waits for it.
func TestStreamSlowConsumerCutOff(t *testing.T) {
	t.Parallel()
	// The write deadline must cut the slow client off, never the fast one: a client
	// reading 12.8 MB under -race on a loaded two-core machine can pause for over a second,
	// so the deadline leaves it room (the slow client is cut off a few seconds later).
	b := setup(t, "--sse-write-timeout", "4s")
	tok := token(t, "alice")

	// The slow client: a raw connection with a tiny receive buffer that never reads.
	conn, err := net.Dial("tcp", strings.TrimPrefix(b.base, "http://"))
	require.NoError(t, err)
	defer conn.Close()
	require.NoError(t, conn.(*net.TCPConn).SetReadBuffer(4096))
	_, err = fmt.Fprintf(conn, "GET /v1/feed/stream?after=now HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n\r\n", tok)
	require.NoError(t, err)
	require.Eventually(t, func() bool { return b.node.API.StreamCounters().Open() == 1 }, streamTimeout, 5*time.Millisecond)

	fast := openStream(t, b.base, "after=now", bearer(tok))
	require.Equal(t, http.StatusOK, fast.Resp.StatusCode)
	require.Eventually(t, func() bool { return b.node.API.StreamCounters().Open() == 2 }, streamTimeout, 5*time.Millisecond)

	// 12.8 MB in batches of ten: more than the slow client's socket buffers and queue hold.
	const events, batch = 200, 10
	for i := 0; i < events; i += batch {
		_, err = b.db.Pool.Exec(context.Background(), `
			SELECT tocsin.publish('alice', 'chat', jsonb_build_object('n', n, 'pad', repeat('x', 64000)))
			FROM generate_series($1::int, $2::int - 1) n`, i, i+batch)
		require.NoError(t, err)
	}

	var got []received
	for len(got) < events {
		e, ok := fast.NextEvent(deliveryTimeout)
		require.True(t, ok, "the fast client got %d of %d", len(got), events)
		got = append(got, received{ID: e.ID, N: payloadN(t, json.RawMessage(e.Data))})
	}
	requireSequence(t, got, 0, events)
	c := b.node.API.StreamCounters()
	require.Eventually(t, func() bool {
		return c.Ended(stream.EndSlowConsumer)+c.Ended(stream.EndWriteFailed) == 1
	}, 3*streamTimeout, 10*time.Millisecond, "the slow client was not cut off")
	require.Equal(t, int64(1), c.Open(), "the fast client's stream stays open")
	t.Logf("slow client cut off: slow-consumer=%d write-failed=%d", c.Ended(stream.EndSlowConsumer), c.Ended(stream.EndWriteFailed))
}

// postTicket gets a stream ticket with tok.
func postTicket(t *testing.T, base, tok string) (int, string, time.Time) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, base+"/v1/stream-tickets", nil)
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	var body struct {
		Ticket    string    `json:"ticket"`
		ExpiresAt time.Time `json:"expires_at"`
	}
	if resp.StatusCode == http.StatusCreated {
		require.NoError(t, json.NewDecoder(resp.Body).Decode(&body))
	}
	return resp.StatusCode, body.Ticket, body.ExpiresAt
}

// Tickets are single-use, expire, work on any node of the deployment, and a stream opened
// with one ends when the token the ticket was issued for expires.
func TestStreamTickets(t *testing.T) {
	t.Parallel()
	b := setup(t)
	other := startNode(t, b.db) // a second node on the same database
	tok := token(t, "alice")

	status, ticket, expiresAt := postTicket(t, b.base, tok)
	require.Equal(t, http.StatusCreated, status)
	require.NotEmpty(t, ticket)
	require.True(t, expiresAt.After(time.Now().Add(30*time.Second)), "default lifetime is a minute: %s", expiresAt)

	t.Run("SingleUseAcrossNodes", func(t *testing.T) {
		s := openStream(t, other.base, "after=now&ticket="+ticket, nil)
		require.Equal(t, http.StatusOK, s.Resp.StatusCode, s.Raw())
		publish(t, b, "alice", 0, 1)
		e, ok := s.NextEvent(streamTimeout)
		require.True(t, ok)
		require.Equal(t, 0, payloadN(t, json.RawMessage(e.Data)))

		for _, base := range []string{b.base, other.base} {
			again := openStream(t, base, "after=now&ticket="+ticket, nil)
			require.Equal(t, http.StatusUnauthorized, again.Resp.StatusCode)
			require.Contains(t, again.Raw(), "token-invalid")
			require.NotContains(t, again.Raw(), ticket)
		}
	})
	t.Run("Expired", func(t *testing.T) {
		_, expired, _ := postTicket(t, b.base, tok)
		_, err := b.db.Pool.Exec(context.Background(), `UPDATE tocsin.stream_ticket SET expires_at = now() - interval '1 second'`)
		require.NoError(t, err)
		s := openStream(t, b.base, "ticket="+expired, nil)
		require.Equal(t, http.StatusUnauthorized, s.Resp.StatusCode)
	})
	t.Run("OnlyOnTheStream", func(t *testing.T) {
		_, tk, _ := postTicket(t, b.base, tok)
		req, err := http.NewRequest(http.MethodGet, b.base+"/v1/feed?ticket="+tk, nil)
		require.NoError(t, err)
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		resp.Body.Close()
		require.Equal(t, http.StatusUnauthorized, resp.StatusCode)
	})
	t.Run("StreamEndsAtTokenExpiry", func(t *testing.T) {
		short, err := auth.Mint(auth.Config{HS256Secret: []byte(secret)}, "alice", 2*time.Second, "")
		require.NoError(t, err)
		_, tk, exp := postTicket(t, b.base, short)
		require.False(t, exp.After(time.Now().Add(2*time.Second)), "a ticket never outlives its token")
		s := openStream(t, other.base, "after=now&ticket="+tk, nil)
		require.Equal(t, http.StatusOK, s.Resp.StatusCode, s.Raw())
		e, ok := s.NextEvent(streamTimeout)
		require.True(t, ok)
		require.Equal(t, "reconnect", e.Event)
		require.JSONEq(t, `{"reason":"token-expired"}`, e.Data)
		s.Ended(t, streamTimeout)
	})
}

// A stream opened with a bearer token ends when the token expires.
func TestStreamEndsAtTokenExpiry(t *testing.T) {
	t.Parallel()
	b := setup(t)
	short, err := auth.Mint(auth.Config{HS256Secret: []byte(secret)}, "alice", 2*time.Second, "")
	require.NoError(t, err)
	s := openStream(t, b.base, "after=now", bearer(short))
	require.Equal(t, http.StatusOK, s.Resp.StatusCode, s.Raw())
	e, ok := s.NextEvent(streamTimeout)
	require.True(t, ok)
	require.Equal(t, "reconnect", e.Event)
	require.JSONEq(t, `{"reason":"token-expired"}`, e.Data)
	s.Ended(t, streamTimeout)
}

// A stream ends at its (jittered) maximum lifetime with reconnect, after heartbeats.
func TestStreamLifetimeAndHeartbeat(t *testing.T) {
	t.Parallel()
	b := setup(t, "--sse-max-lifetime", "1s", "--sse-heartbeat", "100ms")
	s := openStream(t, b.base, "after=now", bearer(token(t, "alice")))
	require.Equal(t, http.StatusOK, s.Resp.StatusCode)
	heartbeats := 0
	for {
		e, ok := s.Next(streamTimeout)
		require.True(t, ok, "the stream ended without reconnect")
		if e.Event == ":comment" {
			require.Equal(t, " heartbeat", e.Data)
			heartbeats++
			continue
		}
		require.Equal(t, "reconnect", e.Event)
		require.JSONEq(t, `{"reason":"lifetime"}`, e.Data)
		break
	}
	require.Positive(t, heartbeats)
	s.Ended(t, streamTimeout)
	require.Contains(t, s.Raw(), "event: reconnect\ndata: {\"reason\":\"lifetime\"}\n\n")
}

// setPush flips the push switch as `tocsin switch push on|off` does.
func setPush(t *testing.T, b *bundle, on bool) {
	t.Helper()
	_, err := b.db.Pool.Exec(context.Background(), `
		INSERT INTO tocsin.setting (key, value, updated_at) VALUES ('push', to_jsonb($1::boolean), now())
		ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = now()`, on)
	require.NoError(t, err)
}

func capabilities(t *testing.T, base string) map[string]any {
	t.Helper()
	resp, err := http.Get(base + "/v1/capabilities")
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	var c map[string]any
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&c))
	return c
}

// The settings watcher reads the switch every 500ms, so its effect is bounded by one
// second on every node. The deadlines here leave room for a loaded machine.
const switchDeadline = 3 * time.Second

// Push off ends open streams on every node with push-disabled and answers new streams
// with 204, while polling carries on; push on accepts streams again.
func TestPushSwitch(t *testing.T) {
	t.Parallel()
	b := setup(t)
	other := startNode(t, b.db)
	tok := token(t, "alice")
	streams := []*sseStream{
		openStream(t, b.base, "after=now", bearer(tok)),
		openStream(t, other.base, "after=now", bearer(tok)),
	}
	for _, s := range streams {
		require.Equal(t, http.StatusOK, s.Resp.StatusCode)
	}
	require.Equal(t, true, capabilities(t, b.base)["push"])

	setPush(t, b, false)
	for _, s := range streams {
		e, ok := s.NextEvent(switchDeadline)
		require.True(t, ok, "push-disabled did not arrive")
		require.Equal(t, "push-disabled", e.Event)
		s.Ended(t, streamTimeout)
	}
	for _, base := range []string{b.base, other.base} {
		s := openStream(t, base, "after=now", bearer(tok))
		require.Equal(t, http.StatusNoContent, s.Resp.StatusCode)
		require.Equal(t, false, capabilities(t, base)["push"])
	}
	// Polling is unaffected.
	publish(t, b, "alice", 0, 1)
	status, p := getFeed(t, http.DefaultClient, other.base, tok, "wait=5")
	require.Equal(t, http.StatusOK, status)
	require.Len(t, p.Events, 1)

	setPush(t, b, true)
	for _, base := range []string{b.base, other.base} {
		require.Eventually(t, func() bool {
			s := openStream(t, base, "after=now", bearer(tok))
			defer s.Close()
			return s.Resp.StatusCode == http.StatusOK
		}, switchDeadline, 20*time.Millisecond)
		require.Equal(t, true, capabilities(t, base)["push"])
	}
}

// More than the per-recipient cap of streams on one node: 429 with Retry-After; other
// recipients are not affected; a closed stream frees its slot.
func TestStreamPerRecipientCap(t *testing.T) {
	t.Parallel()
	b := setup(t, "--max-streams-per-recipient", "2")
	tok := token(t, "alice")
	first := openStream(t, b.base, "after=now", bearer(tok))
	require.Equal(t, http.StatusOK, first.Resp.StatusCode)
	second := openStream(t, b.base, "after=now", bearer(tok))
	require.Equal(t, http.StatusOK, second.Resp.StatusCode)

	third := openStream(t, b.base, "after=now", bearer(tok))
	require.Equal(t, http.StatusTooManyRequests, third.Resp.StatusCode)
	require.Equal(t, "application/problem+json", third.Resp.Header.Get("Content-Type"))
	require.NotEmpty(t, third.Resp.Header.Get("Retry-After"))
	require.Contains(t, third.Raw(), "too-many-streams")

	bob := openStream(t, b.base, "after=now", bearer(token(t, "bob")))
	require.Equal(t, http.StatusOK, bob.Resp.StatusCode)

	first.Close()
	require.Eventually(t, func() bool {
		s := openStream(t, b.base, "after=now", bearer(tok))
		defer s.Close()
		return s.Resp.StatusCode == http.StatusOK
	}, streamTimeout, 20*time.Millisecond)
}

// Past the node's connection limit, new streams and long polls get 503 with Retry-After;
// short polls are still served.
func TestAdmissionControl(t *testing.T) {
	t.Parallel()
	b := setup(t, "--max-connections", "1")
	tok := token(t, "alice")
	s := openStream(t, b.base, "after=now", bearer(tok))
	require.Equal(t, http.StatusOK, s.Resp.StatusCode)

	again := openStream(t, b.base, "after=now", bearer(token(t, "bob")))
	require.Equal(t, http.StatusServiceUnavailable, again.Resp.StatusCode)
	require.NotEmpty(t, again.Resp.Header.Get("Retry-After"))
	status, _ := getFeed(t, http.DefaultClient, b.base, tok, "after=now&wait=5")
	require.Equal(t, http.StatusServiceUnavailable, status)
	status, _ = getFeed(t, http.DefaultClient, b.base, tok, "after=now")
	require.Equal(t, http.StatusOK, status)
	require.Equal(t, int64(2), b.node.API.Stats().RejectedOverloaded)
}

func TestCORS(t *testing.T) {
	t.Parallel()
	b := setup(t, "--cors-origins", "https://app.example, http://localhost:5173")
	do := func(method, path, origin string, h http.Header) *http.Response {
		req, err := http.NewRequest(method, b.base+path, nil)
		require.NoError(t, err)
		for k, v := range h {
			req.Header[k] = v
		}
		if origin != "" {
			req.Header.Set("Origin", origin)
		}
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp
	}
	preflight := http.Header{"Access-Control-Request-Method": {"GET"}, "Access-Control-Request-Headers": {"authorization,last-event-id"}}

	resp := do(http.MethodOptions, "/v1/feed/stream", "https://app.example", preflight)
	require.Equal(t, http.StatusNoContent, resp.StatusCode)
	require.Equal(t, "https://app.example", resp.Header.Get("Access-Control-Allow-Origin"))
	require.Contains(t, resp.Header.Get("Access-Control-Allow-Headers"), "Authorization")
	require.Contains(t, resp.Header.Get("Access-Control-Allow-Headers"), "Last-Event-ID")
	require.Contains(t, resp.Header.Values("Vary"), "Origin")
	require.Empty(t, resp.Header.Get("Access-Control-Allow-Credentials"))

	resp = do(http.MethodOptions, "/v1/feed", "https://evil.example", preflight)
	require.Empty(t, resp.Header.Get("Access-Control-Allow-Origin"))
	require.Contains(t, resp.Header.Values("Vary"), "Origin")

	resp = do(http.MethodGet, "/v1/feed", "http://localhost:5173", bearer(token(t, "alice")))
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Equal(t, "http://localhost:5173", resp.Header.Get("Access-Control-Allow-Origin"))
	require.Contains(t, resp.Header.Get("Access-Control-Expose-Headers"), "Retry-After")
	require.Contains(t, resp.Header.Values("Vary"), "Origin")

	resp = do(http.MethodGet, "/v1/capabilities", "https://app.example.evil", nil)
	require.Empty(t, resp.Header.Get("Access-Control-Allow-Origin"), "origins match exactly")
}

func TestCapabilities(t *testing.T) {
	t.Parallel()
	b := setup(t, "--sse-heartbeat", "20s", "--poll-interval", "7s")
	c := capabilities(t, b.base) // no token needed
	require.Equal(t, map[string]any{"push": true, "heartbeat_seconds": float64(20),
		"long_poll_max_seconds": float64(20), "poll_interval_seconds": float64(7)}, c)
}

// On shutdown, open streams end with reconnect spread over the drain window, parked long
// polls are answered with an empty page and their unchanged cursor, and the node stops.
func TestShutdownDrainsStreamsAndPolls(t *testing.T) {
	t.Parallel()
	b := setup(t, "--drain-window", "300ms")
	tok := token(t, "alice")
	var streams []*sseStream
	for range 3 {
		s := openStream(t, b.base, "after=now", bearer(tok))
		require.Equal(t, http.StatusOK, s.Resp.StatusCode)
		streams = append(streams, s)
	}
	_, start := getFeed(t, http.DefaultClient, b.base, tok, "after=now")
	poll := make(chan polled, 1)
	parkedBefore := b.queries.feedAfter.Load()
	go func() {
		status, p, err := getFeedErr(http.DefaultClient, b.base, tok, "after="+start.Cursor+"&wait=20")
		poll <- polled{status, p, err}
	}()
	require.Eventually(t, func() bool { return b.node.API.Stats().LongPolls == 1 && b.queries.feedAfter.Load() > parkedBefore },
		streamTimeout, 5*time.Millisecond)

	stopped := make(chan struct{})
	go func() { b.stop(); close(stopped) }()
	r := <-poll
	require.NoError(t, r.err)
	require.Equal(t, http.StatusOK, r.status)
	require.Empty(t, r.page.Events)
	require.Equal(t, start.Cursor, r.page.Cursor)
	// Each stream is read on its own goroutine (they end concurrently); the test goroutine
	// checks what each saw.
	type ending struct {
		last sseEvent
		ok   bool
		err  error
	}
	endings := make([]ending, len(streams))
	var wg sync.WaitGroup
	for i, s := range streams {
		wg.Go(func() {
			endings[i].last, endings[i].ok = s.NextEvent(streamTimeout)
			if endings[i].ok {
				endings[i].err = s.ended(streamTimeout)
			}
		})
	}
	wg.Wait()
	for i, e := range endings {
		require.True(t, e.ok, "stream %d", i)
		require.Equal(t, "reconnect", e.last.Event, "stream %d", i)
		require.JSONEq(t, `{"reason":"shutdown"}`, e.last.Data, "stream %d", i)
		require.NoError(t, e.err, "stream %d", i)
	}
	<-stopped
}
