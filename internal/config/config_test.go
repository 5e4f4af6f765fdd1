package config

import (
	"flag"
	"io"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func load(t *testing.T, args ...string) (*Config, error) {
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	return Load(fs, args)
}

func TestDefaultsEnvironmentAndFlags(t *testing.T) {
	t.Setenv("TOCSIN_LONG_POLL_MAX", "30s")
	t.Setenv("TOCSIN_ADDR", "127.0.0.1:9999")
	c, err := load(t, "--addr", "127.0.0.1:7777")
	require.NoError(t, err)
	require.Equal(t, 30*time.Second, c.LongPollMax, "environment over default")
	require.Equal(t, "127.0.0.1:7777", c.Addr, "flag over environment")
	require.Equal(t, 90*24*time.Hour, c.RetentionInbox)
	require.Equal(t, 2*time.Millisecond, c.SequencerInterval)
	require.True(t, c.Has("api") && c.Has("sequencer"))
}

func TestBadValuesNameTheirSource(t *testing.T) {
	t.Setenv("TOCSIN_LONG_POLL_MAX", "soon")
	_, err := load(t, "--retention-change", "-1h", "--roles", "api,cook")
	require.ErrorContains(t, err, `TOCSIN_LONG_POLL_MAX: invalid duration "soon"`)
	require.ErrorContains(t, err, `--retention-change: must be positive, got "-1h"`)
	require.ErrorContains(t, err, `unknown role "cook"`)
}

func TestRoles(t *testing.T) {
	c, err := load(t, "--roles", "api")
	require.NoError(t, err)
	require.True(t, c.Has("api"))
	require.False(t, c.Has("sequencer"))
}
