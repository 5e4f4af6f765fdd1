package stream

import (
	"net"
	"sync"
	"syscall"
)

// On Linux one goroutine watches every taken-over connection for its peer's FIN or RST
// with an epoll set of its own (EPOLLRDHUP, one-shot). The Go runtime's poller keeps the
// same descriptors in its own set; the two do not interfere. Events carry a registration
// number, never the descriptor, so a descriptor reused after a close cannot be mistaken
// for the old connection.

const (
	epollRDHUP   = 0x2000  // EPOLLRDHUP: the peer closed its side
	epollOneShot = 1 << 30 // EPOLLONESHOT
)

type peerWatcher struct {
	once sync.Once
	epfd int
	err  error

	mu   sync.Mutex
	next uint64
	gone map[uint64]func()
}

var peers peerWatcher

// watchPeer calls gone (once, from another goroutine) when conn's peer closes the
// connection or it breaks. Call unwatch before closing conn.
func watchPeer(conn net.Conn, gone func()) (unwatch func()) {
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return readPeer(conn, gone)
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return readPeer(conn, gone)
	}
	peers.once.Do(peers.start)
	if peers.err != nil {
		return readPeer(conn, gone)
	}
	peers.mu.Lock()
	peers.next++
	id := peers.next
	peers.gone[id] = gone
	peers.mu.Unlock()
	var addErr error
	err = raw.Control(func(fd uintptr) {
		ev := syscall.EpollEvent{Events: epollRDHUP | epollOneShot, Fd: int32(id), Pad: int32(id >> 32)}
		addErr = syscall.EpollCtl(peers.epfd, syscall.EPOLL_CTL_ADD, int(fd), &ev)
	})
	if err != nil || addErr != nil {
		peers.forget(id)
		return readPeer(conn, gone)
	}
	return func() {
		peers.forget(id)
		_ = raw.Control(func(fd uintptr) {
			_ = syscall.EpollCtl(peers.epfd, syscall.EPOLL_CTL_DEL, int(fd), &syscall.EpollEvent{})
		})
	}
}

func (p *peerWatcher) forget(id uint64) {
	p.mu.Lock()
	delete(p.gone, id)
	p.mu.Unlock()
}

// start creates the epoll set and its goroutine, which lives as long as the process.
func (p *peerWatcher) start() {
	p.epfd, p.err = syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if p.err != nil {
		return
	}
	p.gone = map[uint64]func(){}
	go p.run()
}

func (p *peerWatcher) run() {
	var events [128]syscall.EpollEvent
	for {
		n, err := syscall.EpollWait(p.epfd, events[:], -1)
		if err != nil {
			continue // EINTR
		}
		for _, ev := range events[:n] {
			id := uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
			p.mu.Lock()
			gone := p.gone[id]
			delete(p.gone, id)
			p.mu.Unlock()
			if gone != nil {
				gone()
			}
		}
	}
}
