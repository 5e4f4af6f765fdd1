package sequencer

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// Silent waits slow the probe down step by step to the idle interval; one find brings the
// fastest back at once.
func TestNextPollInterval(t *testing.T) {
	t.Parallel()
	fast, slow := 2*time.Millisecond, 16*time.Millisecond
	var got []time.Duration
	for cur := fast; len(got) < 5; {
		cur = nextPollInterval(cur, false, fast, slow)
		got = append(got, cur)
	}
	require.Equal(t, []time.Duration{4 * time.Millisecond, 8 * time.Millisecond, slow, slow, slow}, got)
	require.Equal(t, fast, nextPollInterval(slow, true, fast, slow))

	c := Config{PollInterval: 100 * time.Millisecond}
	c.withDefaults()
	require.Equal(t, 100*time.Millisecond, c.IdlePollInterval, "never faster than PollInterval")
}
