package stream

import (
	"net"
	"syscall"
)

// writeNow writes as much of b as the connection's socket buffer takes at once, without
// waiting and without a deadline: a heartbeat or an event on a healthy connection fits,
// and then the two deadline updates of a guarded write (timers of the runtime's poller,
// for a held stream most of a heartbeat's cost besides the system call) are saved. It
// returns how many bytes went out; the caller writes the rest with the deadline.
type writeNow struct {
	raw syscall.RawConn // nil: no fast path for this connection
	b   []byte
	n   int
	err error
	fn  func(fd uintptr) bool // w.attempt, bound once: no allocation per write
}

func newWriteNow(conn net.Conn) *writeNow {
	w := &writeNow{}
	if sc, ok := conn.(syscall.Conn); ok {
		if raw, err := sc.SyscallConn(); err == nil {
			w.raw = raw
		}
	}
	w.fn = w.attempt
	return w
}

// attempt makes one non-blocking write; the connection's descriptor is non-blocking.
func (w *writeNow) attempt(fd uintptr) bool {
	n, err := syscall.Write(int(fd), w.b)
	switch {
	case err == nil:
		w.n = n
	case err == syscall.EAGAIN || err == syscall.EINTR:
		w.n = 0 // full (or interrupted): the guarded write waits for room
	default:
		w.n, w.err = 0, err
	}
	return true // never wait here
}

func (w *writeNow) write(b []byte) (int, error) {
	if w == nil || w.raw == nil {
		return 0, nil
	}
	w.b, w.n, w.err = b, 0, nil
	if err := w.raw.Write(w.fn); err != nil {
		return 0, err
	}
	n, err := w.n, w.err
	w.b, w.err = nil, nil
	return n, err
}
