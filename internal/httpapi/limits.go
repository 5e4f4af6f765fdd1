package httpapi

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/tocsin/tocsin/internal/stream"
)

var (
	// errTooManyStreams is answered with 429 too-many-streams and Retry-After: the
	// recipient holds as many streams and long polls on this node as allowed.
	errTooManyStreams = errors.New("too many streams and long polls")
	// errOverloaded is answered with 503 and Retry-After: the node holds all the
	// connections it admits.
	errOverloaded = fmt.Errorf("%w: node at its connection limit", errUnavailable)
)

// limits admits long-lived requests: at most maxConns streams and parked long polls on
// the node, at most perRecipient of them per recipient (so that one token cannot take the
// node's whole budget).
type limits struct {
	perRecipient int
	maxConns     int64

	conns atomic.Int64

	mu   sync.Mutex
	held map[string]int // streams and long polls by recipient

	rejectedRecipient atomic.Int64
	rejectedNode      atomic.Int64
}

func newLimits(perRecipient, maxConns int) *limits {
	return &limits{perRecipient: perRecipient, maxConns: int64(maxConns), held: map[string]int{}}
}

// admit takes one of the node's connection slots; call release when done.
func (l *limits) admit() (release func(), err error) {
	if l.conns.Add(1) > l.maxConns {
		l.conns.Add(-1)
		l.rejectedNode.Add(1)
		return nil, fmt.Errorf("admitting a long-lived request (%d open): %w", l.maxConns, errOverloaded)
	}
	var once sync.Once
	return func() { once.Do(func() { l.conns.Add(-1) }) }, nil
}

// admitHeld takes a node slot and one of recipient's slots, for a stream or a long poll.
func (l *limits) admitHeld(recipient string) (release func(), err error) {
	l.mu.Lock()
	if l.held[recipient] >= l.perRecipient {
		l.mu.Unlock()
		l.rejectedRecipient.Add(1)
		return nil, fmt.Errorf("%w: %q already has %d open on this node", errTooManyStreams, recipient, l.perRecipient)
	}
	l.held[recipient]++
	l.mu.Unlock()
	releaseHeld := func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		if l.held[recipient]--; l.held[recipient] <= 0 {
			delete(l.held, recipient)
		}
	}
	releaseConn, err := l.admit()
	if err != nil {
		releaseHeld()
		return nil, err
	}
	var once sync.Once
	return func() { once.Do(func() { releaseConn(); releaseHeld() }) }, nil
}

// Stats is a snapshot of the API's admission counters, for metrics.
type Stats struct {
	// Connections is the number of open streams and parked long polls (a gauge).
	Connections int64
	// LongPolls is the number of long polls in flight (a gauge).
	LongPolls int64
	// RejectedTooManyStreams counts 429s for the per-recipient cap of streams and long polls.
	RejectedTooManyStreams int64
	// RejectedOverloaded counts 503s for the node-wide connection limit.
	RejectedOverloaded int64
}

// Stats returns the API's admission counters. Streams are counted by StreamCounters.
func (s *Server) Stats() Stats {
	return Stats{
		Connections:            s.limits.conns.Load(),
		LongPolls:              s.polls.Load(),
		RejectedTooManyStreams: s.limits.rejectedRecipient.Load(),
		RejectedOverloaded:     s.limits.rejectedNode.Load(),
	}
}

// StreamCounters returns the node's stream counters (open streams, events written, ends by
// reason), for metrics.
func (s *Server) StreamCounters() *stream.Counters { return s.streams.Counters() }
