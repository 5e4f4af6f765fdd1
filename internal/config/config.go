// Package config reads Tocsin's configuration from flags and TOCSIN_* environment
// variables. A flag given on the command line wins over the environment, which wins over
// the default. Every setting is listed once, in settings(), which also feeds the README's
// configuration reference (`tocsin serve -h`).
package config

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"
)

// Config is the whole configuration of a Tocsin node.
type Config struct {
	DatabaseURL string
	Addr        string

	JWTSecret     string
	JWKSURL       string
	JWTAlgorithms string // comma list, with JWKSURL
	JWTIssuer     string
	JWTAudience   string
	JWTLeeway     time.Duration

	LongPollMax       time.Duration
	PollInterval      time.Duration // recommended short-poll interval, told to clients
	SequencerInterval time.Duration
	// SequencerIdleInterval is the slowest probe of an idle outbox (sequencer.Config.IdlePollInterval).
	SequencerIdleInterval time.Duration
	FallbackInterval      time.Duration

	RetentionChange time.Duration
	RetentionInbox  time.Duration

	// Push over Server-Sent Events, stream tickets, admission and CORS.
	SSEHeartbeatInterval   time.Duration
	SSEMaxLifetime         time.Duration
	SSEWriteTimeout        time.Duration
	SSEBuffer              int
	StreamTicketTTL        time.Duration
	MaxStreamsPerRecipient int
	MaxConnections         int // 0: 80% of the open-files limit
	CORSOrigins            string
	DrainWindow            time.Duration

	// Replication capture.
	CaptureDefault   string // capture mode of routes that name none: trigger, replication or debezium
	SlotWALWarnBytes int64  // retained WAL past which /readyz fails and a warning is logged

	// Debezium capture: Kafka and the connector's topics.
	KafkaBrokers        string // comma list
	KafkaGroup          string
	KafkaInstanceID     string
	KafkaTLS            bool
	KafkaTLSCAFile      string
	KafkaTLSCertFile    string
	KafkaTLSKeyFile     string
	KafkaTLSServerName  string
	KafkaSASLMechanism  string
	KafkaSASLUser       string
	KafkaSASLPassword   string
	DebeziumTopicPrefix string
	DebeziumStart       string // earliest or latest

	// Grouping, inbox and publishing.
	MessageGroupWindow time.Duration
	MessageGroupMax    int
	GroupTick          time.Duration
	MaxMessageBytes    int
	BodyReadTimeout    time.Duration
	MaxRecipients      int
	PublishPolicySQL   string
	IdempotencyTTL     time.Duration
	// River's job cleaner: how long finished jobs are kept.
	RiverCompletedRetention time.Duration
	RiverDiscardedRetention time.Duration

	Roles     string
	LogLevel  string
	LogFormat string
	// PprofAddr is the loopback address of the profiling listener (net/http/pprof); empty:
	// no profiling endpoint.
	PprofAddr string
}

type setting struct {
	flag, env, def, usage string
	set                   setter
}

// setter parses a setting's value into a Config; kind names the value's type in -h.
type setter struct {
	kind string
	fn   func(c *Config, v string) error
}

func settings() []setting {
	str := func(p func(*Config) *string) setter {
		return setter{"string", func(c *Config, v string) error { *p(c) = v; return nil }}
	}
	dur := func(p func(*Config) *time.Duration) setter {
		return setter{"duration", func(c *Config, v string) error {
			d, err := ParseDuration(v)
			if err != nil {
				return err
			}
			if d <= 0 {
				return fmt.Errorf("must be positive, got %q", v)
			}
			*p(c) = d
			return nil
		}}
	}
	boolean := func(p func(*Config) *bool) setter {
		return setter{"bool", func(c *Config, v string) error {
			b, err := strconv.ParseBool(v)
			if err != nil {
				return fmt.Errorf("must be true or false, got %q", v)
			}
			*p(c) = b
			return nil
		}}
	}
	num := func(p func(*Config) *int) setter {
		return setter{"int", func(c *Config, v string) error {
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 {
				return fmt.Errorf("must be a whole number >= 0, got %q", v)
			}
			*p(c) = n
			return nil
		}}
	}
	return []setting{
		{"database-url", "TOCSIN_DATABASE_URL", "", "PostgreSQL connection string", str(func(c *Config) *string { return &c.DatabaseURL })},
		{"addr", "TOCSIN_ADDR", "127.0.0.1:8080", "address the API listens on", str(func(c *Config) *string { return &c.Addr })},
		{"jwt-secret", "TOCSIN_JWT_SECRET", "", "HS256 secret for bearer tokens (at least 32 bytes)", str(func(c *Config) *string { return &c.JWTSecret })},
		{"jwks-url", "TOCSIN_JWKS_URL", "", "identity provider's JSON Web Key Set; tokens are verified with its keys (instead of --jwt-secret)", str(func(c *Config) *string { return &c.JWKSURL })},
		{"jwt-algorithms", "TOCSIN_JWT_ALGORITHMS", "RS256", "comma list of algorithms accepted with --jwks-url: RS256, RS384, RS512, PS256, ES256, ES384, EdDSA", str(func(c *Config) *string { return &c.JWTAlgorithms })},
		{"jwt-leeway", "TOCSIN_JWT_LEEWAY", "30s", "clock skew tolerated on a token's exp, nbf and iat", setter{"duration", func(c *Config, v string) error {
			d, err := ParseDuration(v)
			if err != nil {
				return err
			}
			if d < 0 {
				return fmt.Errorf("must not be negative, got %q", v)
			}
			c.JWTLeeway = d
			return nil
		}}},
		{"jwt-issuer", "TOCSIN_JWT_ISSUER", "", "required iss claim, when set", str(func(c *Config) *string { return &c.JWTIssuer })},
		{"jwt-audience", "TOCSIN_JWT_AUDIENCE", "", "required aud claim, when set", str(func(c *Config) *string { return &c.JWTAudience })},
		{"long-poll-max", "TOCSIN_LONG_POLL_MAX", "60s", "longest long poll; larger waits are clamped", dur(func(c *Config) *time.Duration { return &c.LongPollMax })},
		{"poll-interval", "TOCSIN_POLL_INTERVAL", "5s", "short-poll interval recommended to clients", dur(func(c *Config) *time.Duration { return &c.PollInterval })},
		{"sequencer-interval", "TOCSIN_SEQUENCER_INTERVAL", "2ms", "how often the sequencer probes the outbox", dur(func(c *Config) *time.Duration { return &c.SequencerInterval })},
		{"sequencer-idle-interval", "TOCSIN_SEQUENCER_IDLE_INTERVAL", "64ms", "slowest outbox probe: each silent second doubles the interval up to this (the first event after a silence waits up to this long)", dur(func(c *Config) *time.Duration { return &c.SequencerIdleInterval })},
		{"fallback-interval", "TOCSIN_FALLBACK_INTERVAL", "1s", "how often waiting clients are checked for a missed doorbell", dur(func(c *Config) *time.Duration { return &c.FallbackInterval })},
		{"retention-change", "TOCSIN_RETENTION_CHANGE", "24h", "how long change entries stay in the feed", dur(func(c *Config) *time.Duration { return &c.RetentionChange })},
		{"retention-inbox", "TOCSIN_RETENTION_INBOX", "90d", "how long notification, digest and message entries stay", dur(func(c *Config) *time.Duration { return &c.RetentionInbox })},
		{"sse-heartbeat", "TOCSIN_SSE_HEARTBEAT", "15s", "longest silence on a stream before a heartbeat comment", dur(func(c *Config) *time.Duration { return &c.SSEHeartbeatInterval })},
		{"sse-max-lifetime", "TOCSIN_SSE_MAX_LIFETIME", "10m", "a stream's lifetime (±10%) before it asks its client to reconnect", dur(func(c *Config) *time.Duration { return &c.SSEMaxLifetime })},
		{"sse-write-timeout", "TOCSIN_SSE_WRITE_TIMEOUT", "10s", "deadline of each stream write; a stalled client is cut off", dur(func(c *Config) *time.Duration { return &c.SSEWriteTimeout })},
		{"sse-buffer", "TOCSIN_SSE_BUFFER", "4096", "live events queued per stream; a client further behind is disconnected", num(func(c *Config) *int { return &c.SSEBuffer })},
		{"stream-ticket-ttl", "TOCSIN_STREAM_TICKET_TTL", "60s", "lifetime of a single-use stream ticket", dur(func(c *Config) *time.Duration { return &c.StreamTicketTTL })},
		{"max-streams-per-recipient", "TOCSIN_MAX_STREAMS_PER_RECIPIENT", "8", "open streams plus long polls per recipient per node (429 beyond)", num(func(c *Config) *int { return &c.MaxStreamsPerRecipient })},
		{"max-connections", "TOCSIN_MAX_CONNECTIONS", "0", "open streams plus long polls per node (503 beyond); 0 = 80% of the open-files limit", num(func(c *Config) *int { return &c.MaxConnections })},
		{"cors-origins", "TOCSIN_CORS_ORIGINS", "", "comma list of exact origins allowed to call the API from a browser", str(func(c *Config) *string { return &c.CORSOrigins })},
		{"drain-window", "TOCSIN_DRAIN_WINDOW", "5s", "on shutdown, streams end at random moments within this window", dur(func(c *Config) *time.Duration { return &c.DrainWindow })},
		{"capture-default", "TOCSIN_CAPTURE_DEFAULT", "trigger", "capture mode of routes that do not name one: trigger, replication or debezium", str(func(c *Config) *string { return &c.CaptureDefault })},
		{"slot-wal-warn-bytes", "TOCSIN_SLOT_WAL_WARN_BYTES", "1073741824", "WAL the replication slot may retain before /readyz fails and a warning is logged", setter{"bytes", func(c *Config, v string) error {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil || n <= 0 {
				return fmt.Errorf("must be a positive number of bytes, got %q", v)
			}
			c.SlotWALWarnBytes = n
			return nil
		}}},
		{"kafka-brokers", "TOCSIN_KAFKA_BROKERS", "", "comma list of Kafka brokers (host:port) that debezium routes read from", str(func(c *Config) *string { return &c.KafkaBrokers })},
		{"kafka-group", "TOCSIN_KAFKA_GROUP", "tocsin", "Kafka consumer group of the Debezium consumer", str(func(c *Config) *string { return &c.KafkaGroup })},
		{"kafka-instance-id", "TOCSIN_KAFKA_INSTANCE_ID", "", "static group membership: an id unique to this node, which keeps its partitions across a quick restart", str(func(c *Config) *string { return &c.KafkaInstanceID })},
		{"kafka-tls", "TOCSIN_KAFKA_TLS", "false", "connect to Kafka over TLS (system roots unless a CA file is given)", boolean(func(c *Config) *bool { return &c.KafkaTLS })},
		{"kafka-tls-ca-file", "TOCSIN_KAFKA_TLS_CA_FILE", "", "PEM file of the CA that signed the brokers' certificates (implies TLS)", str(func(c *Config) *string { return &c.KafkaTLSCAFile })},
		{"kafka-tls-cert-file", "TOCSIN_KAFKA_TLS_CERT_FILE", "", "PEM client certificate for mutual TLS (with the key file)", str(func(c *Config) *string { return &c.KafkaTLSCertFile })},
		{"kafka-tls-key-file", "TOCSIN_KAFKA_TLS_KEY_FILE", "", "PEM key of the client certificate", str(func(c *Config) *string { return &c.KafkaTLSKeyFile })},
		{"kafka-tls-server-name", "TOCSIN_KAFKA_TLS_SERVER_NAME", "", "name to verify in the brokers' certificates, when not the host dialed", str(func(c *Config) *string { return &c.KafkaTLSServerName })},
		{"kafka-sasl-mechanism", "TOCSIN_KAFKA_SASL_MECHANISM", "", "SASL authentication: plain, scram-sha-256 or scram-sha-512 (none when empty)", str(func(c *Config) *string { return &c.KafkaSASLMechanism })},
		{"kafka-sasl-user", "TOCSIN_KAFKA_SASL_USER", "", "SASL user name", str(func(c *Config) *string { return &c.KafkaSASLUser })},
		{"kafka-sasl-password", "TOCSIN_KAFKA_SASL_PASSWORD", "", "SASL password (prefer the environment to the flag)", str(func(c *Config) *string { return &c.KafkaSASLPassword })},
		{"debezium-topic-prefix", "TOCSIN_DEBEZIUM_TOPIC_PREFIX", "", "Debezium's topic.prefix: a debezium route on table S.T reads topic PREFIX.S.T", str(func(c *Config) *string { return &c.DebeziumTopicPrefix })},
		{"debezium-start", "TOCSIN_DEBEZIUM_START", "earliest", "where a partition Tocsin never read starts: earliest (every retained event) or latest", str(func(c *Config) *string { return &c.DebeziumStart })},
		{"message-group-window", "TOCSIN_MESSAGE_GROUP_WINDOW", "30s", "window of published messages that name a group", dur(func(c *Config) *time.Duration { return &c.MessageGroupWindow })},
		{"message-group-max", "TOCSIN_MESSAGE_GROUP_MAX", "50", "messages of a group that close its window early", num(func(c *Config) *int { return &c.MessageGroupMax })},
		{"group-tick", "TOCSIN_GROUP_TICK", "100ms", "shortest pause between two promotions of due digests (a window's end is met within about this)", dur(func(c *Config) *time.Duration { return &c.GroupTick })},
		{"max-message-bytes", "TOCSIN_MAX_MESSAGE_BYTES", "65536", "largest request body, e.g. of POST /v1/messages (413 beyond)", num(func(c *Config) *int { return &c.MaxMessageBytes })},
		{"body-read-timeout", "TOCSIN_BODY_READ_TIMEOUT", "10s", "time a request body may take to arrive (400 and the connection closed beyond)", dur(func(c *Config) *time.Duration { return &c.BodyReadTimeout })},
		{"max-recipients", "TOCSIN_MAX_RECIPIENTS", "1000", "most recipients of one published message (400 beyond)", num(func(c *Config) *int { return &c.MaxRecipients })},
		{"publish-policy-sql", "TOCSIN_PUBLISH_POLICY_SQL", "", "query (one boolean; :sender, :recipient) allowing user-to-user messages without the tocsin:publish scope", str(func(c *Config) *string { return &c.PublishPolicySQL })},
		{"idempotency-ttl", "TOCSIN_IDEMPOTENCY_TTL", "24h", "how long Idempotency-Key answers are kept", dur(func(c *Config) *time.Duration { return &c.IdempotencyTTL })},
		{"river-completed-retention", "TOCSIN_RIVER_COMPLETED_RETENTION", "24h", "how long River keeps completed (and cancelled) jobs", dur(func(c *Config) *time.Duration { return &c.RiverCompletedRetention })},
		{"river-discarded-retention", "TOCSIN_RIVER_DISCARDED_RETENTION", "7d", "how long River keeps discarded jobs", dur(func(c *Config) *time.Duration { return &c.RiverDiscardedRetention })},
		{"roles", "TOCSIN_ROLES", "all", "roles of this node: all, or a comma list of api, sequencer, worker, capture", str(func(c *Config) *string { return &c.Roles })},
		{"log-level", "TOCSIN_LOG_LEVEL", "info", "debug, info, warn or error", str(func(c *Config) *string { return &c.LogLevel })},
		{"log-format", "TOCSIN_LOG_FORMAT", "text", "text or json", str(func(c *Config) *string { return &c.LogFormat })},
		{"pprof-addr", "TOCSIN_PPROF_ADDR", "", "loopback address (e.g. 127.0.0.1:6060) of a separate listener serving Go's profiles at /debug/pprof/; off when empty", str(func(c *Config) *string { return &c.PprofAddr })},
	}
}

// Load reads the whole configuration from args (flags) and the environment. Every setting
// is registered on fs, so that -h lists them with their type, default and variable.
func Load(fs *flag.FlagSet, args []string) (*Config, error) {
	return loadSettings(fs, args, nil)
}

// LoadOnly is Load for a command that uses only the named settings (flag names, e.g.
// "database-url"): only those become flags and are read from the environment; the others
// keep their defaults.
func LoadOnly(fs *flag.FlagSet, args []string, names ...string) (*Config, error) {
	only := map[string]bool{}
	for _, n := range names {
		only[n] = true
	}
	return loadSettings(fs, args, only)
}

func loadSettings(fs *flag.FlagSet, args []string, only map[string]bool) (*Config, error) {
	all := settings()
	values := make([]*Value, len(all))
	for i, s := range all {
		values[i] = &Value{s: s.def, kind: s.set.kind}
		if only == nil || only[s.flag] {
			fs.Var(values[i], s.flag, fmt.Sprintf("%s (env %s)", s.usage, s.env))
		}
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	c := &Config{}
	var errs []error
	for i, s := range all {
		v, source := values[i].s, "--"+s.flag
		if env, ok := os.LookupEnv(s.env); ok && !given[s.flag] && (only == nil || only[s.flag]) {
			v, source = env, s.env
		}
		if err := s.set.fn(c, v); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", source, err))
		}
	}
	if err := c.validate(); err != nil {
		errs = append(errs, err)
	}
	return c, errors.Join(errs...)
}

// Value is a setting's flag. It keeps the text given and checks it after parsing, so
// that an error names where the value came from (flag or variable). Type names the value's
// type for usage listings: string, duration, int or bytes.
type Value struct {
	s, kind string
}

func (v *Value) String() string {
	if v == nil {
		return ""
	}
	return v.s
}

// Set records the flag's text.
func (v *Value) Set(s string) error { v.s = s; return nil }

// Type is the setting's type, for usage listings.
func (v *Value) Type() string { return v.kind }

func (c *Config) validate() error {
	var errs []error
	for _, r := range strings.Split(c.Roles, ",") {
		switch strings.TrimSpace(r) {
		case "all", "api", "sequencer", "worker", "capture":
		default:
			errs = append(errs, fmt.Errorf("--roles (TOCSIN_ROLES): unknown role %q (want all, api, sequencer, worker, capture)", r))
		}
	}
	switch c.CaptureDefault {
	case "trigger", "replication", "debezium":
	default:
		errs = append(errs, fmt.Errorf("--capture-default (TOCSIN_CAPTURE_DEFAULT): %q is not trigger, replication or debezium", c.CaptureDefault))
	}
	switch c.DebeziumStart {
	case "earliest", "latest":
	default:
		errs = append(errs, fmt.Errorf("--debezium-start (TOCSIN_DEBEZIUM_START): %q is not earliest or latest", c.DebeziumStart))
	}
	switch c.KafkaSASLMechanism {
	case "", "plain", "scram-sha-256", "scram-sha-512":
	default:
		errs = append(errs, fmt.Errorf("--kafka-sasl-mechanism (TOCSIN_KAFKA_SASL_MECHANISM): %q is not plain, scram-sha-256 or scram-sha-512", c.KafkaSASLMechanism))
	}
	switch c.LogFormat {
	case "text", "json":
	default:
		errs = append(errs, fmt.Errorf("--log-format (TOCSIN_LOG_FORMAT): %q is not text or json", c.LogFormat))
	}
	if c.PprofAddr != "" {
		if err := checkLoopback(c.PprofAddr); err != nil {
			errs = append(errs, fmt.Errorf("--pprof-addr (TOCSIN_PPROF_ADDR): %w", err))
		}
	}
	return errors.Join(errs...)
}

// checkLoopback accepts host:port addresses whose host is a loopback IP or localhost: the
// profiles show the process's internals and are served without authentication.
func checkLoopback(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q is not host:port", addr)
	}
	if host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("%q is not a loopback address (127.0.0.1, ::1 or localhost): profiles are served without authentication", addr)
	}
	return nil
}

// Has reports whether this node runs role ("api", "sequencer", "worker" or "capture").
func (c *Config) Has(role string) bool {
	for _, r := range strings.Split(c.Roles, ",") {
		if r = strings.TrimSpace(r); r == "all" || r == role {
			return true
		}
	}
	return false
}

// ParseDuration is time.ParseDuration that also accepts whole days ("90d").
func ParseDuration(s string) (time.Duration, error) {
	if days, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.Atoi(days)
		if err != nil {
			return 0, fmt.Errorf("invalid duration %q", s)
		}
		return time.Duration(n) * 24 * time.Hour, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("invalid duration %q", s)
	}
	return d, nil
}

// Reference returns the configuration reference as a Markdown table (for the README).
func Reference() string {
	var b strings.Builder
	b.WriteString("| flag | environment | default | meaning |\n|---|---|---|---|\n")
	for _, s := range settings() {
		def := s.def
		if def == "" {
			def = "—"
		}
		fmt.Fprintf(&b, "| `--%s` | `%s` | `%s` | %s |\n", s.flag, s.env, def, s.usage)
	}
	return b.String()
}
