package stream

import (
	"io"
	"net"
	"os"
	"runtime"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// What the socket takes at once goes out without a deadline; a write that has to wait for
// room is still guarded by one, so a client that stops reading is cut off.
func TestConnSinkWritesAtOnceAndWaitsWithItsDeadline(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	client, err := net.Dial("tcp", ln.Addr().String())
	require.NoError(t, err)
	defer client.Close()
	server, err := ln.Accept()
	require.NoError(t, err)
	defer server.Close()

	c := &connSink{conn: server, timeout: 200 * time.Millisecond, now: newWriteNow(server)}
	if runtime.GOOS == "linux" {
		require.NotNil(t, c.now.raw, "a TCP connection has the fast path")
	}
	require.NoError(t, c.heartbeat())
	got := make([]byte, len(heartbeatChunk))
	require.NoError(t, client.SetReadDeadline(time.Now().Add(10*time.Second)))
	_, err = io.ReadFull(client, got)
	require.NoError(t, err)
	require.Equal(t, string(heartbeatChunk), string(got))

	big := make([]byte, 1<<20)
	for i := 0; i < 1000 && err == nil; i++ {
		err = c.send(big)
	}
	require.ErrorIs(t, err, os.ErrDeadlineExceeded, "the client stopped reading")
}
