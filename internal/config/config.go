// Package config reads Tocsin's configuration from flags and TOCSIN_* environment
// variables. A flag given on the command line wins over the environment, which wins over
// the default. Every setting is listed once, in settings(), which also feeds the README's
// configuration reference (`tocsin serve -h`).
package config

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// Config is the whole configuration of a Tocsin node.
type Config struct {
	DatabaseURL string
	Addr        string

	JWTSecret   string
	JWTIssuer   string
	JWTAudience string

	LongPollMax       time.Duration
	PollInterval      time.Duration // recommended short-poll interval, told to clients
	SequencerInterval time.Duration
	FallbackInterval  time.Duration

	RetentionChange time.Duration
	RetentionInbox  time.Duration

	Roles     string
	LogLevel  string
	LogFormat string
}

type setting struct {
	flag, env, def, usage string
	set                   func(c *Config, v string) error
}

func settings() []setting {
	str := func(p func(*Config) *string) func(*Config, string) error {
		return func(c *Config, v string) error { *p(c) = v; return nil }
	}
	dur := func(p func(*Config) *time.Duration) func(*Config, string) error {
		return func(c *Config, v string) error {
			d, err := ParseDuration(v)
			if err != nil {
				return err
			}
			if d <= 0 {
				return fmt.Errorf("must be positive, got %q", v)
			}
			*p(c) = d
			return nil
		}
	}
	return []setting{
		{"database-url", "TOCSIN_DATABASE_URL", "", "PostgreSQL connection string", str(func(c *Config) *string { return &c.DatabaseURL })},
		{"addr", "TOCSIN_ADDR", "127.0.0.1:8080", "address the API listens on", str(func(c *Config) *string { return &c.Addr })},
		{"jwt-secret", "TOCSIN_JWT_SECRET", "", "HS256 secret for bearer tokens (at least 32 bytes)", str(func(c *Config) *string { return &c.JWTSecret })},
		{"jwt-issuer", "TOCSIN_JWT_ISSUER", "", "required iss claim, when set", str(func(c *Config) *string { return &c.JWTIssuer })},
		{"jwt-audience", "TOCSIN_JWT_AUDIENCE", "", "required aud claim, when set", str(func(c *Config) *string { return &c.JWTAudience })},
		{"long-poll-max", "TOCSIN_LONG_POLL_MAX", "60s", "longest long poll; larger waits are clamped", dur(func(c *Config) *time.Duration { return &c.LongPollMax })},
		{"poll-interval", "TOCSIN_POLL_INTERVAL", "5s", "short-poll interval recommended to clients", dur(func(c *Config) *time.Duration { return &c.PollInterval })},
		{"sequencer-interval", "TOCSIN_SEQUENCER_INTERVAL", "5ms", "how often the sequencer probes the outbox", dur(func(c *Config) *time.Duration { return &c.SequencerInterval })},
		{"fallback-interval", "TOCSIN_FALLBACK_INTERVAL", "1s", "how often waiting clients are checked for a missed doorbell", dur(func(c *Config) *time.Duration { return &c.FallbackInterval })},
		{"retention-change", "TOCSIN_RETENTION_CHANGE", "24h", "how long change entries stay in the feed", dur(func(c *Config) *time.Duration { return &c.RetentionChange })},
		{"retention-inbox", "TOCSIN_RETENTION_INBOX", "90d", "how long notification, digest and message entries stay", dur(func(c *Config) *time.Duration { return &c.RetentionInbox })},
		{"roles", "TOCSIN_ROLES", "all", "roles of this node: all, or a comma list of api, sequencer, worker", str(func(c *Config) *string { return &c.Roles })},
		{"log-level", "TOCSIN_LOG_LEVEL", "info", "debug, info, warn or error", str(func(c *Config) *string { return &c.LogLevel })},
		{"log-format", "TOCSIN_LOG_FORMAT", "text", "text or json", str(func(c *Config) *string { return &c.LogFormat })},
	}
}

// Load reads the configuration from args (flags) and the environment. The flags are
// registered on fs, so that -h lists them with their environment variable.
func Load(fs *flag.FlagSet, args []string) (*Config, error) {
	all := settings()
	values := make([]*string, len(all))
	for i, s := range all {
		values[i] = fs.String(s.flag, s.def, fmt.Sprintf("%s (env %s)", s.usage, s.env))
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	c := &Config{}
	var errs []error
	for i, s := range all {
		v, source := *values[i], "--"+s.flag
		if env, ok := os.LookupEnv(s.env); ok && !given[s.flag] {
			v, source = env, s.env
		}
		if err := s.set(c, v); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", source, err))
		}
	}
	if err := c.validate(); err != nil {
		errs = append(errs, err)
	}
	return c, errors.Join(errs...)
}

func (c *Config) validate() error {
	var errs []error
	for _, r := range strings.Split(c.Roles, ",") {
		switch strings.TrimSpace(r) {
		case "all", "api", "sequencer", "worker":
		default:
			errs = append(errs, fmt.Errorf("--roles (TOCSIN_ROLES): unknown role %q (want all, api, sequencer, worker)", r))
		}
	}
	switch c.LogFormat {
	case "text", "json":
	default:
		errs = append(errs, fmt.Errorf("--log-format (TOCSIN_LOG_FORMAT): %q is not text or json", c.LogFormat))
	}
	return errors.Join(errs...)
}

// Has reports whether this node runs role ("api", "sequencer" or "worker").
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
