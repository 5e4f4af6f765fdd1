package stream

import "sync/atomic"

// EndReason says why a stream ended. The reasons a client is told about are the data of
// the final "reconnect" frame ({"reason":"lifetime"}, …).
type EndReason string

// End reasons.
const (
	// EndClientGone: the client closed the connection.
	EndClientGone EndReason = "client-gone"
	// EndWriteFailed: a write failed or missed its deadline (a stalled client).
	EndWriteFailed EndReason = "write-failed"
	// EndSlowConsumer: the client fell further behind than its queue allows.
	EndSlowConsumer EndReason = "slow-consumer"
	// EndLifetime: the stream reached its maximum lifetime (client told to reconnect).
	EndLifetime EndReason = "lifetime"
	// EndTokenExpired: the token the stream was opened with expired (reconnect).
	EndTokenExpired EndReason = "token-expired"
	// EndShutdown: the node is shutting down (reconnect, to another node).
	EndShutdown EndReason = "shutdown"
	// EndCursorExpired: the feed was reset under the stream; reconnecting answers 410.
	EndCursorExpired EndReason = "cursor-expired"
	// EndPushDisabled: push was switched off (push-disabled; fall back to polling).
	EndPushDisabled EndReason = "push-disabled"
	// EndError: an unexpected failure, logged (reconnect).
	EndError EndReason = "error"
)

// EndReasons lists every EndReason, for metrics.
var EndReasons = []EndReason{EndClientGone, EndWriteFailed, EndSlowConsumer, EndLifetime,
	EndTokenExpired, EndShutdown, EndCursorExpired, EndPushDisabled, EndError}

// Counters count a node's streams. The zero value is ready; it is safe for concurrent use.
// Read it from a metrics collector: Open is a gauge, the others are counters.
type Counters struct {
	open   atomic.Int64
	events atomic.Int64
	ended  [9]atomic.Int64 // indexed like EndReasons
}

func (c *Counters) endedOf(r EndReason) *atomic.Int64 {
	for i, known := range EndReasons {
		if known == r {
			return &c.ended[i]
		}
	}
	return &c.ended[len(c.ended)-1] // EndError
}

// Open returns how many streams are open.
func (c *Counters) Open() int64 { return c.open.Load() }

// Events returns how many events streams have written.
func (c *Counters) Events() int64 { return c.events.Load() }

// Ended returns how many streams ended for reason.
func (c *Counters) Ended(reason EndReason) int64 { return c.endedOf(reason).Load() }
