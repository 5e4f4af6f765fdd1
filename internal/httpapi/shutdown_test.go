package httpapi

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tocsin/tocsin/internal/stream"
)

// keepAliveConn is one client connection that sends requests one after another, as a
// proxy's pooled upstream connection does.
type keepAliveConn struct {
	conn net.Conn
	r    *bufio.Reader
}

func dialKeepAlive(t *testing.T, addr string) *keepAliveConn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	return &keepAliveConn{conn: c, r: bufio.NewReader(c)}
}

// get sends GET path on the connection and reads the whole answer.
func (k *keepAliveConn) get(t *testing.T, path, token string) (*http.Response, error) {
	t.Helper()
	req := "GET " + path + " HTTP/1.1\r\nHost: tocsin\r\n"
	if token != "" {
		req += "Authorization: Bearer " + token + "\r\n"
	}
	if _, err := io.WriteString(k.conn, req+"\r\n"); err != nil {
		return nil, err
	}
	resp, err := http.ReadResponse(k.r, nil)
	if err != nil {
		return nil, err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp, err
}

// serveForShutdown serves b's API through HTTPServer on a fresh listener.
func serveForShutdown(t *testing.T, b *testBundle) (*http.Server, net.Listener, <-chan error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	hs := b.server.HTTPServer(ln.Addr().String())
	served := make(chan error, 1)
	go func() { served <- hs.Serve(ln) }()
	t.Cleanup(func() { _ = hs.Close() })
	return hs, ln, served
}

// A draining node never closes a keep-alive connection under a request that a proxy is
// sending: it stops accepting, answers the next request on each open connection with
// "Connection: close" and closes it then. http.Server.Shutdown alone closes idle
// connections at once, so that a proxy's request on one of them gets no answer (seen
// behind HAProxy as a dropped POST /v1/stream-tickets).
func TestShutdownClosesKeepAliveConnectionsAfterAnAnswer(t *testing.T) {
	t.Parallel()
	b := setup(t, testOpts{cfg: Config{Stream: stream.Config{DrainWindow: time.Minute}}})
	hs, ln, served := serveForShutdown(t, b)
	addr := ln.Addr().String()

	pooled := dialKeepAlive(t, addr)
	resp, err := pooled.get(t, "/healthz", "")
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.False(t, resp.Close, "a connection closed before shutdown")

	stopped := make(chan error, 1)
	go func() { stopped <- b.server.Shutdown(context.Background(), hs, ln) }()
	require.Eventually(t, func() bool {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			return false
		}
		return true
	}, 10*time.Second, 5*time.Millisecond, "the listener still accepts connections")
	<-b.server.drainCtx.Done()

	// The pooled connection was idle when the drain began; its next request is answered,
	// and the answer closes it.
	resp, err = pooled.get(t, "/v1/feed?after=abcd-7", b.token)
	require.NoError(t, err, "the idle connection was closed under the request")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.True(t, resp.Close, "no Connection: close while draining")
	_, err = pooled.r.ReadByte()
	require.ErrorIs(t, err, io.EOF)

	// With every connection closed, the stop does not wait for the minute-long window.
	select {
	case err := <-stopped:
		require.NoError(t, err)
	case <-time.After(30 * time.Second):
		t.Fatal("Shutdown waited for the drain window although every connection had closed")
	}
	require.True(t, ServeStopped(<-served))
}

// A connection nobody uses during the drain window is closed at its end.
func TestShutdownClosesIdleConnectionsAtTheEndOfTheWindow(t *testing.T) {
	t.Parallel()
	b := setup(t, testOpts{cfg: Config{Stream: stream.Config{DrainWindow: 100 * time.Millisecond}}})
	hs, ln, served := serveForShutdown(t, b)

	idle := dialKeepAlive(t, ln.Addr().String())
	resp, err := idle.get(t, "/healthz", "")
	require.NoError(t, err)
	require.False(t, resp.Close)

	require.NoError(t, b.server.Shutdown(context.Background(), hs, ln))
	_, err = idle.r.ReadByte()
	require.ErrorIs(t, err, io.EOF)
	require.True(t, ServeStopped(<-served))
}

// A draining node is not ready: health checks take it out of rotation.
func TestReadyzWhileDraining(t *testing.T) {
	t.Parallel()
	b := setup(t, testOpts{})
	require.Equal(t, http.StatusOK, b.get(t, "/readyz", "").StatusCode)
	b.server.Drain()
	r := b.get(t, "/readyz", "")
	require.Equal(t, http.StatusServiceUnavailable, r.StatusCode, "body: %s", r.body)
	require.NotEmpty(t, r.Header.Get("Retry-After"))
}
