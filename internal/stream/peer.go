package stream

import "net"

// readPeer notices a closed peer with a one-byte read on a goroutine of its own (where no
// poller is available): a client sends nothing on a stream, so the read returns only when
// the connection ends. The goroutine ends when conn is closed.
func readPeer(conn net.Conn, gone func()) (unwatch func()) {
	go func() {
		var b [1]byte
		for {
			if _, err := conn.Read(b[:]); err != nil {
				gone()
				return
			}
		}
	}()
	return func() {}
}
