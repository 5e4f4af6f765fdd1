package capture

import (
	"testing"

	"github.com/jackc/pglogrepl"
	"github.com/stretchr/testify/require"
)

// TestAcksWaitForTheFlush: progress reaches the receiver only once the WAL it rests on is
// flushed, in order, never ahead of an unflushed commit.
func TestAcksWaitForTheFlush(t *testing.T) {
	t.Parallel()
	var prog progress
	k := acks{prog: &prog}
	published := func() (pglogrepl.LSN, uint64) { return pglogrepl.LSN(prog.durable.Load()), prog.doneSeq.Load() }

	k.advance(0, 100, 1) // nothing written yet: nothing to wait for
	end, seq := published()
	require.Equal(t, pglogrepl.LSN(100), end)
	require.Equal(t, uint64(1), seq)

	k.advance(500, 200, 4) // a commit ending at 500, not flushed
	k.advance(500, 250, 5) // later progress resting on the same commit
	k.advance(700, 300, 8) // the next commit
	require.True(t, k.waiting())
	end, _ = published()
	require.Equal(t, pglogrepl.LSN(100), end, "nothing flushed yet")

	k.flushedTo(499)
	end, _ = published()
	require.Equal(t, pglogrepl.LSN(100), end, "the first commit is not flushed yet")

	k.flushedTo(600)
	end, seq = published()
	require.Equal(t, pglogrepl.LSN(250), end)
	require.Equal(t, uint64(5), seq)
	require.True(t, k.waiting())

	k.flushedTo(550) // an older reading changes nothing
	k.advance(700, 350, 9)
	k.flushedTo(700)
	end, seq = published()
	require.Equal(t, pglogrepl.LSN(350), end)
	require.Equal(t, uint64(9), seq)
	require.False(t, k.waiting())

	k.advance(700, 400, 10) // resting on a flushed commit: at once
	end, seq = published()
	require.Equal(t, pglogrepl.LSN(400), end)
	require.Equal(t, uint64(10), seq)
}
