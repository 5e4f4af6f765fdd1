package stream

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tocsin/tocsin/internal/feed"
)

const testTimeout = 10 * time.Second

// ended records how a stream ended and whether its handler had returned by then.
type ended struct {
	reason         EndReason
	handlerWasDone bool
}

type streamServer struct {
	*httptest.Server
	ss    *Streams
	ends  chan ended
	drain chan struct{}
}

// newStreamServer serves one stream per request with src (a new one per request when
// src is nil), as the API does: taken over on HTTP/1.1.
func newStreamServer(t *testing.T, cfg Config, h2 bool, src func() Source) *streamServer {
	t.Helper()
	s := &streamServer{ss: NewStreams(cfg), ends: make(chan ended, 16), drain: make(chan struct{})}
	s.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var mu sync.Mutex
		returned := false
		s.ss.Serve(r.Context(), w, r.ProtoMajor == 1 && r.ProtoMinor >= 1,
			Session{Source: src(), EncodeFunc: encodeJSON, Drain: s.drain},
			func(reason EndReason, _ error) {
				mu.Lock()
				defer mu.Unlock()
				s.ends <- ended{reason, returned}
			})
		mu.Lock()
		returned = true
		mu.Unlock()
	}))
	if h2 {
		s.EnableHTTP2 = true
		s.StartTLS()
	} else {
		s.Start()
	}
	t.Cleanup(s.Close)
	return s
}

func (s *streamServer) end(t *testing.T) ended {
	t.Helper()
	select {
	case e := <-s.ends:
		return e
	case <-time.After(testTimeout):
		t.Fatal("the stream did not end")
		return ended{}
	}
}

// rawGet sends a stream request on a new connection and returns it with its reader.
func rawGet(t *testing.T, addr string) (net.Conn, *bufio.Reader) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	_, err = fmt.Fprintf(conn, "GET /v1/feed/stream HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n")
	require.NoError(t, err)
	return conn, bufio.NewReader(conn)
}

// On HTTP/1.1 the stream takes its connection over: the handler returns while the stream
// lives, the body is chunked by the stream itself (exact bytes), and the stream's end is a
// final frame, the last chunk and a closed connection.
func TestTakenStreamBytes(t *testing.T) {
	t.Parallel()
	srv := newStreamServer(t, Config{HeartbeatInterval: time.Hour, MaxLifetime: 300 * time.Millisecond}, false,
		func() Source { return &fakeSource{events: []feed.Event{knownEvent}, wake: make(chan struct{})} })
	conn, br := rawGet(t, srv.Listener.Addr().String())
	require.NoError(t, conn.SetReadDeadline(time.Now().Add(testTimeout)))
	resp, err := http.ReadResponse(br, nil)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Equal(t, []string{"chunked"}, resp.TransferEncoding)
	require.True(t, resp.Close, "Connection: close")
	require.Equal(t, "text/event-stream", resp.Header.Get("Content-Type"))
	require.Equal(t, "no-cache", resp.Header.Get("Cache-Control"))
	require.Equal(t, "no", resp.Header.Get("X-Accel-Buffering"))

	raw, err := io.ReadAll(br) // until the server closes the connection
	require.NoError(t, err)
	e := srv.end(t)
	require.Equal(t, EndLifetime, e.reason)
	require.True(t, e.handlerWasDone, "the handler returned while the stream lived")

	data, _ := encodeJSON(knownEvent)
	opening := regexp.MustCompile(`^[0-9a-f]+\r\n(retry: \d+\n)`).FindStringSubmatch(string(raw))
	require.NotNil(t, opening, "%q", raw)
	frames := []string{opening[1] + "id: abcd1234-41\n\n",
		"id: abcd1234-42\nevent: message\ndata: " + string(data) + "\n\n",
		"event: reconnect\ndata: {\"reason\":\"lifetime\"}\n\n"}
	var want strings.Builder
	for _, f := range frames {
		fmt.Fprintf(&want, "%x\r\n%s\r\n", len(f), f)
	}
	want.WriteString("0\r\n\r\n")
	require.Equal(t, want.String(), string(raw))
	body, err := io.ReadAll(httputil.NewChunkedReader(strings.NewReader(string(raw))))
	require.NoError(t, err)
	require.Equal(t, strings.Join(frames, ""), string(body))
}

// A closed peer is noticed at once (its FIN), not at the next heartbeat an hour away.
func TestTakenStreamNoticesClosedPeer(t *testing.T) {
	t.Parallel()
	srv := newStreamServer(t, Config{HeartbeatInterval: time.Hour, MaxLifetime: time.Hour}, false,
		func() Source { return &fakeSource{wake: make(chan struct{})} })
	conn, br := rawGet(t, srv.Listener.Addr().String())
	resp, err := http.ReadResponse(br, nil)
	require.NoError(t, err)
	_, err = br.ReadString('\n') // the opening frame's chunk size: the stream runs
	require.NoError(t, err)
	require.Equal(t, int64(1), srv.ss.Counters().Open())
	require.NoError(t, conn.Close())
	e := srv.end(t)
	require.Equal(t, EndClientGone, e.reason)
	require.Zero(t, srv.ss.Counters().Open())
	require.Equal(t, int64(1), srv.ss.Counters().Ended(EndClientGone))
	_ = resp
}

// Without a poller, a one-byte read notices the closed peer.
func TestReadPeer(t *testing.T) {
	t.Parallel()
	a, b := net.Pipe()
	gone := make(chan struct{})
	readPeer(a, func() { close(gone) })
	require.NoError(t, b.Close())
	select {
	case <-gone:
	case <-time.After(testTimeout):
		t.Fatal("the closed peer was not noticed")
	}
}

// Streams on taken connections end over the drain window with a final frame, and Wait
// sees them end (http.Server.Shutdown does not); when Wait's context ends first, it closes
// their connections.
func TestTakenStreamsDrainAndWait(t *testing.T) {
	t.Parallel()
	srv := newStreamServer(t, Config{HeartbeatInterval: time.Hour, MaxLifetime: time.Hour, DrainWindow: 200 * time.Millisecond},
		false, func() Source { return &fakeSource{wake: make(chan struct{})} })
	var bodies []*bufio.Reader
	for range 3 {
		_, br := rawGet(t, srv.Listener.Addr().String())
		_, err := http.ReadResponse(br, nil)
		require.NoError(t, err)
		bodies = append(bodies, br)
	}
	require.Eventually(t, func() bool { return srv.ss.Counters().Open() == 3 }, testTimeout, time.Millisecond)
	close(srv.drain)
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	require.NoError(t, srv.ss.Wait(ctx))
	for _, br := range bodies {
		raw, err := io.ReadAll(br)
		require.NoError(t, err)
		require.True(t, strings.HasSuffix(string(raw), "event: reconnect\ndata: {\"reason\":\"shutdown\"}\n\n\r\n0\r\n\r\n"), "%q", raw)
	}
	for range 3 {
		require.Equal(t, EndShutdown, srv.end(t).reason)
	}

	// A stream that outlives Wait's context is closed.
	_, br := rawGet(t, srv.Listener.Addr().String())
	_, err := http.ReadResponse(br, nil)
	require.NoError(t, err)
	require.Eventually(t, func() bool { return srv.ss.Counters().Open() == 1 }, testTimeout, time.Millisecond)
	expired, cancel2 := context.WithCancel(context.Background())
	cancel2()
	require.ErrorIs(t, srv.ss.Wait(expired), context.Canceled)
	require.Zero(t, srv.ss.Counters().Open())
	srv.end(t)
}

// HTTP/2 cannot be taken over: the stream stays on the request's goroutine, framed by
// net/http, with the same frames.
func TestStreamOverHTTP2StaysOnRequest(t *testing.T) {
	t.Parallel()
	srv := newStreamServer(t, Config{HeartbeatInterval: time.Hour, MaxLifetime: 300 * time.Millisecond}, true,
		func() Source { return &fakeSource{events: []feed.Event{knownEvent}, wake: make(chan struct{})} })
	resp, err := srv.Client().Get(srv.URL + "/v1/feed/stream")
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, 2, resp.ProtoMajor)
	require.Empty(t, resp.Header.Get("Connection"))
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	e := srv.end(t)
	require.Equal(t, EndLifetime, e.reason)
	require.False(t, e.handlerWasDone, "the stream ran inside its handler")
	data, _ := encodeJSON(knownEvent)
	require.Contains(t, string(body), "id: abcd1234-42\nevent: message\ndata: "+string(data)+"\n\n")
	require.True(t, strings.HasSuffix(string(body), "event: reconnect\ndata: {\"reason\":\"lifetime\"}\n\n"))
}
