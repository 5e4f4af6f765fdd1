package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// binary is the tocsin command built once for the tests that run it as a user would.
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "tocsin-cli-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "tocsin")
	build := exec.Command("go", "build", "-o", binary, ".")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "building tocsin: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

type result struct {
	stdout, stderr string
	code           int
}

// cleanEnv is the environment without TOCSIN_* variables, so that a developer's own
// settings do not leak into the commands under test.
func cleanEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "TOCSIN_") {
			env = append(env, kv)
		}
	}
	return append(env, extra...)
}

// tocsin runs the binary in dir (a fresh folder when empty) with env added to a clean
// environment.
func tocsin(t *testing.T, dir string, env []string, args ...string) result {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, args...)
	cmd.Dir = dir
	cmd.Env = cleanEnv(env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		code = exit.ExitCode()
	} else {
		require.NoError(t, err)
	}
	return result{stdout.String(), stderr.String(), code}
}

// flagsListed returns the flag names of a --help listing.
func flagsListed(help string) []string {
	var names []string
	for _, line := range strings.Split(help, "\n") {
		if rest, ok := strings.CutPrefix(line, "  --"); ok {
			names = append(names, strings.Fields(rest)[0])
		}
	}
	return names
}

func TestCommandHelpListsOnlyItsFlagsWithTypesAndDefaults(t *testing.T) {
	t.Parallel()
	tests := []struct {
		args  []string
		flags []string // exactly these, when set
		lines []string // listing lines (whitespace collapsed) that must appear
	}{
		{args: []string{"migrate"}, flags: []string{"database-url"},
			lines: []string{"--database-url string PostgreSQL connection string (env TOCSIN_DATABASE_URL)"}},
		{args: []string{"token"}, flags: []string{"jwt-audience", "jwt-issuer", "jwt-secret", "scope", "sub", "ttl"},
			lines: []string{"--ttl duration lifetime of the token (default 1h0m0s)", "--sub string the recipient (sub claim); required"}},
		{args: []string{"routes", "check"}, flags: []string{"capture-default", "database-url"},
			lines: []string{"--capture-default string capture mode of routes that do not name one: trigger, replication or debezium (env TOCSIN_CAPTURE_DEFAULT) (default trigger)"}},
		{args: []string{"routes", "apply"}, flags: []string{"capture-default", "database-url"}},
		{args: []string{"switch", "push"}, flags: []string{"database-url"}},
		{args: []string{"capture", "drop-slot"}, flags: []string{"database-url"}},
		{args: []string{"bench", "latency"}, flags: []string{"clients", "database-url", "duration", "per-tx", "private", "rate", "rest", "roles", "transports", "writers"},
			lines: []string{"--rate int events per second (default 1000)", "--private use a private durable cluster even where another server is configured"}},
		{args: []string{"bench", "replication"}, flags: []string{"connections", "database-url", "duration", "lag", "lag-duration",
			"modes", "private", "rates", "rounds", "sequencer", "throughput", "writers"},
			lines: []string{"--rates string comma list of change rates (single-row transactions per second) whose lag is measured (default 1000,5000)",
				"--modes string throughput modes to measure (default none,replication-paused,replication)"}},
		{args: []string{"version"}, flags: []string{}},
		{args: []string{"serve"}, lines: []string{
			"--long-poll-max duration longest long poll; larger waits are clamped (env TOCSIN_LONG_POLL_MAX) (default 60s)",
			"--sse-buffer int live events queued per stream; a client further behind is disconnected (env TOCSIN_SSE_BUFFER) (default 4096)",
			"--slot-wal-warn-bytes bytes",
		}},
		{args: []string{"dev"}, lines: []string{"--addr string address the API listens on (env TOCSIN_ADDR) (default 127.0.0.1:8080)"}},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			t.Parallel()
			for _, help := range [][]string{append(tt.args, "--help"), append(tt.args, "-h"), append([]string{"help"}, tt.args...)} {
				r := tocsin(t, "", nil, help...)
				require.Equal(t, 0, r.code, "%v: %s", help, r.stderr)
				require.Empty(t, r.stderr, "%v", help)
				require.True(t, strings.HasPrefix(r.stdout, "Usage: tocsin "+strings.Join(tt.args, " ")), "%v:\n%s", help, r.stdout)
				require.NotContains(t, r.stdout, "`sub`", "no backquote artefacts")
				if tt.flags != nil {
					require.ElementsMatch(t, tt.flags, flagsListed(r.stdout), "%v:\n%s", help, r.stdout)
				}
				collapsed := map[string]bool{}
				for _, line := range strings.Split(r.stdout, "\n") {
					collapsed[strings.Join(strings.Fields(line), " ")] = true
				}
				for _, want := range tt.lines {
					found := false
					for line := range collapsed {
						found = found || strings.HasPrefix(line, want)
					}
					require.True(t, found, "%v: no line %q in:\n%s", help, want, r.stdout)
				}
			}
		})
	}
}

func TestCommandGroupsPrintTheirUsage(t *testing.T) {
	t.Parallel()
	for group, subs := range map[string][]string{
		"routes":  {"check FILE", "apply FILE"},
		"switch":  {"push on|off", "capture on|off"},
		"capture": {"drop-slot"},
		"bench":   {"capture", "replication", "latency", "streams", "soak", "fanout", "storm"},
	} {
		for _, args := range [][]string{{group, "--help"}, {group, "-h"}, {"help", group}} {
			r := tocsin(t, "", nil, args...)
			require.Equal(t, 0, r.code, "%v: %s", args, r.stderr)
			require.True(t, strings.HasPrefix(r.stdout, "Usage: tocsin "+group+" "), "%v:\n%s", args, r.stdout)
			for _, sub := range subs {
				require.Contains(t, r.stdout, "\n  "+sub+" ", "%v", args)
			}
		}
		// Without a subcommand: one line of usage on stderr, exit 1.
		r := tocsin(t, "", nil, group)
		require.Equal(t, 1, r.code)
		require.Equal(t, 1, strings.Count(r.stderr, "\n"), r.stderr)
		require.Contains(t, r.stderr, "usage: tocsin "+group)
	}
	r := tocsin(t, "", nil, "help")
	require.Equal(t, 0, r.code)
	require.Contains(t, r.stdout, "  version ")
}

func TestUnknownFlagIsOneErrorWithASuggestion(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"migrate", "--databse-url", "x"}, "tocsin: unknown flag --databse-url (did you mean --database-url?); see `tocsin migrate --help`\n"},
		{[]string{"serve", "--long-pol-max", "1s"}, "tocsin: unknown flag --long-pol-max (did you mean --long-poll-max?); see `tocsin serve --help`\n"},
		{[]string{"token", "--sub", "a", "--tt", "1h"}, "tocsin: unknown flag --tt (did you mean --ttl?); see `tocsin token --help`\n"},
		{[]string{"token", "--colour", "red"}, "tocsin: unknown flag --colour; see `tocsin token --help`\n"},
		{[]string{"token", "--sub", "a", "--ttl", "soon"}, "tocsin: invalid value \"soon\" for --ttl: parse error; see `tocsin token --help`\n"},
		{[]string{"routes", "check", "f.yaml", "--database-url"}, "tocsin: flag --database-url needs a value; see `tocsin routes check --help`\n"},
		{[]string{"capture", "drop-slot", "now"}, "tocsin: unexpected argument \"now\"; usage: tocsin capture drop-slot [flags]\n"},
		{[]string{"migrate", "up"}, "tocsin: unexpected argument \"up\"; usage: tocsin migrate [flags]\n"},
		{[]string{"serv"}, "tocsin: unknown command \"serv\" (did you mean \"serve\"?); run `tocsin help` for the list\n"},
	} {
		r := tocsin(t, "", nil, tt.args...)
		require.Equal(t, 1, r.code, "%v", tt.args)
		require.Equal(t, tt.want, r.stderr, "%v", tt.args)
		require.Empty(t, r.stdout, "%v", tt.args)
	}
}

func TestErrorsNameTheFlagAndTheVariable(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		args []string
		env  []string
		want string
	}{
		{[]string{"token", "--sub", "carol"}, nil,
			"tocsin: no JWT secret: set TOCSIN_JWT_SECRET or --jwt-secret (at least 32 bytes)\n"},
		{[]string{"token", "--sub", "carol"}, []string{"TOCSIN_JWT_SECRET=short"},
			"tocsin: JWT secret too short: TOCSIN_JWT_SECRET or --jwt-secret has 5 bytes, needs at least 32\n"},
		{[]string{"token"}, nil, "tocsin: --sub is required: the recipient the token is for\n"},
		{[]string{"migrate"}, nil,
			"tocsin: no database: set TOCSIN_DATABASE_URL or --database-url (or start `tocsin dev` in this folder)\n"},
		{[]string{"switch", "push", "off"}, nil,
			"tocsin: no database: set TOCSIN_DATABASE_URL or --database-url (or start `tocsin dev` in this folder)\n"},
		{[]string{"serve"}, []string{"TOCSIN_DATABASE_URL=postgres://127.0.0.1:1/x"},
			"tocsin: no JWT secret: set TOCSIN_JWT_SECRET or --jwt-secret (at least 32 bytes)\n"},
		{[]string{"serve"}, []string{"TOCSIN_LONG_POLL_MAX=soon"}, "tocsin: TOCSIN_LONG_POLL_MAX: invalid duration \"soon\"\n"},
		{[]string{"serve", "--roles", "cook"}, nil,
			"tocsin: --roles (TOCSIN_ROLES): unknown role \"cook\" (want all, api, sequencer, worker, capture)\n"},
	} {
		r := tocsin(t, "", tt.env, tt.args...)
		require.Equal(t, 1, r.code, "%v", tt.args)
		require.Equal(t, tt.want, r.stderr, "%v", tt.args)
		require.NotContains(t, r.stderr, "tocsin: tocsin", "no duplicated prefix")
	}
}

func TestVersionPrintsBuildInformation(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{{"version"}, {"--version"}} {
		r := tocsin(t, "", nil, args...)
		require.Equal(t, 0, r.code, r.stderr)
		require.True(t, strings.HasPrefix(r.stdout, "tocsin "), r.stdout)
		require.Contains(t, r.stdout, "module     github.com/tocsin/tocsin\n")
		require.Contains(t, r.stdout, "go         "+runtime.Version()+"\n")
		require.Contains(t, r.stdout, "platform   "+runtime.GOOS+"/"+runtime.GOARCH+"\n")
	}
}

// A YAML mistake deep in a routes file is reported at its line, before any database is
// needed.
func TestRoutesFileYAMLErrorNamesItsLine(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	src := "routes:\n  - name: r\n    table: public.comment\n    recipients: { column: author_id }\n    topic: t\n   kind: change\n"
	require.NoError(t, os.WriteFile(filepath.Join(dir, "routes.yaml"), []byte(src), 0o644))
	r := tocsin(t, dir, nil, "routes", "check", "routes.yaml")
	require.Equal(t, 1, r.code)
	require.Equal(t, "tocsin: routes.yaml:6: invalid YAML: did not find expected '-' indicator\n", r.stderr)
}
