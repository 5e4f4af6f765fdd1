package capture

import (
	"github.com/jackc/pglogrepl"
)

// acks gates the progress the receiver may confirm on the server's WAL flush.
//
// The consumer commits its outbox rows without waiting for the flush (synchronous_commit
// off for that transaction): the rows are visible to the sequencer at once, and the
// sequencer's batch, which commits durably, flushes them before any client sees a position
// (its commit record comes after theirs in the WAL). What must wait for the flush is the
// slot's confirmation: a PostgreSQL crash forgets an unflushed commit — its outbox rows and
// its applied LSN together — and the server must then send those source transactions
// again. So progress that depends on a Tocsin commit is handed to the receiver only once
// the server reports its WAL flushed past that commit.
type acks struct {
	prog *progress
	// flushed is the server's WAL flush position as last read.
	flushed pglogrepl.LSN
	// pending is the progress waiting for the flush, oldest first, needs increasing.
	pending []ack
}

// ack is progress that waits for the WAL up to needs to be flushed.
type ack struct {
	needs pglogrepl.LSN // the end of the Tocsin commits this progress rests on
	end   pglogrepl.LSN // the source WAL that may then be confirmed
	seq   uint64        // the last message that progress covers
}

// advance records that the source WAL up to end (message seq) is applied, resting on
// Tocsin commits whose WAL ends at or before needs.
func (k *acks) advance(needs, end pglogrepl.LSN, seq uint64) {
	if len(k.pending) == 0 && needs <= k.flushed {
		k.publish(end, seq)
		return
	}
	if n := len(k.pending); n > 0 && needs <= k.pending[n-1].needs {
		k.pending[n-1].end, k.pending[n-1].seq = end, seq
		return
	}
	k.pending = append(k.pending, ack{needs: needs, end: end, seq: seq})
}

// flushedTo records the server's WAL flush position and publishes the progress it covers.
func (k *acks) flushedTo(lsn pglogrepl.LSN) {
	k.flushed = max(k.flushed, lsn)
	i := 0
	for i < len(k.pending) && k.pending[i].needs <= k.flushed {
		i++
	}
	if i == 0 {
		return
	}
	k.publish(k.pending[i-1].end, k.pending[i-1].seq)
	k.pending = append(k.pending[:0], k.pending[i:]...)
}

// waiting reports whether some progress waits for the flush.
func (k *acks) waiting() bool { return len(k.pending) > 0 }

func (k *acks) publish(end pglogrepl.LSN, seq uint64) {
	k.prog.durable.Store(uint64(end))
	k.prog.doneSeq.Store(seq)
}
