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

func TestKafkaSettings(t *testing.T) {
	t.Setenv("TOCSIN_KAFKA_BROKERS", "k1:9092,k2:9092")
	t.Setenv("TOCSIN_KAFKA_SASL_PASSWORD", "s3cret")
	c, err := load(t, "--kafka-sasl-mechanism", "scram-sha-512", "--kafka-tls", "true", "--debezium-topic-prefix", "app")
	require.NoError(t, err)
	require.Equal(t, "k1:9092,k2:9092", c.KafkaBrokers)
	require.Equal(t, "tocsin", c.KafkaGroup)
	require.Equal(t, "earliest", c.DebeziumStart)
	require.True(t, c.KafkaTLS)
	require.Equal(t, "scram-sha-512", c.KafkaSASLMechanism)
	require.Equal(t, "s3cret", c.KafkaSASLPassword)

	_, err = load(t, "--kafka-sasl-mechanism", "gssapi", "--kafka-tls", "maybe", "--debezium-start", "now")
	require.ErrorContains(t, err, `--kafka-tls: must be true or false, got "maybe"`)
	require.ErrorContains(t, err, `TOCSIN_KAFKA_SASL_MECHANISM): "gssapi" is not plain, scram-sha-256 or scram-sha-512`)
	require.ErrorContains(t, err, `TOCSIN_DEBEZIUM_START): "now" is not earliest or latest`)
}

// A command that needs only some settings registers only their flags (so -h lists only
// them) and reads only their variables: an unrelated bad variable does not stop it.
func TestLoadOnlyRegistersAndReadsTheNamedSettings(t *testing.T) {
	t.Setenv("TOCSIN_LONG_POLL_MAX", "soon")
	t.Setenv("TOCSIN_DATABASE_URL", "postgres://env/db")
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	c, err := LoadOnly(fs, nil, "database-url")
	require.NoError(t, err)
	require.Equal(t, "postgres://env/db", c.DatabaseURL)
	require.Equal(t, 60*time.Second, c.LongPollMax, "others keep their defaults")
	var names []string
	fs.VisitAll(func(f *flag.Flag) { names = append(names, f.Name) })
	require.Equal(t, []string{"database-url"}, names)

	fs = flag.NewFlagSet("test", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	_, err = LoadOnly(fs, []string{"--long-poll-max", "1s"}, "database-url")
	require.ErrorContains(t, err, "flag provided but not defined: -long-poll-max")
}

// Each flag says its type for -h: duration, int, bytes or string.
func TestFlagsKnowTheirType(t *testing.T) {
	t.Parallel()
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	_, err := Load(fs, nil)
	require.NoError(t, err)
	typeOf := func(name string) string { return fs.Lookup(name).Value.(*Value).Type() }
	require.Equal(t, "duration", typeOf("long-poll-max"))
	require.Equal(t, "int", typeOf("sse-buffer"))
	require.Equal(t, "bytes", typeOf("slot-wal-warn-bytes"))
	require.Equal(t, "string", typeOf("addr"))
	require.Equal(t, "60s", fs.Lookup("long-poll-max").DefValue)
}

// Profiles are served without authentication, so only on a loopback address, and only
// when asked for.
func TestPprofAddrIsOffByDefaultAndLoopbackOnly(t *testing.T) {
	c, err := load(t)
	require.NoError(t, err)
	require.Empty(t, c.PprofAddr)
	for _, ok := range []string{"127.0.0.1:6060", "[::1]:0", "localhost:6060"} {
		c, err := load(t, "--pprof-addr", ok)
		require.NoError(t, err, ok)
		require.Equal(t, ok, c.PprofAddr)
	}
	for _, bad := range []string{"0.0.0.0:6060", ":6060", "10.0.0.1:6060", "127.0.0.1"} {
		_, err := load(t, "--pprof-addr", bad)
		require.ErrorContains(t, err, "--pprof-addr (TOCSIN_PPROF_ADDR)", bad)
	}
}
