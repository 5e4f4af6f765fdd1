// Package pgcluster starts a private PostgreSQL cluster from the local installation: the
// embedded default behind `tocsin dev`, and the throwaway server of the test suite.
//
// initdb and postgres refuse to run as root, so when the caller is root the server runs as
// the `postgres` user, and the data and socket directories are handed to that user first.
package pgcluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// ErrNoInstallation is returned when no PostgreSQL server binaries can be found.
var ErrNoInstallation = errors.New("no PostgreSQL installation found: install the server " +
	"(Debian/Ubuntu: apt-get install -y postgresql; macOS: brew install postgresql@15), " +
	"or set TOCSIN_DATABASE_URL to an existing database")

// Config describes a private cluster.
type Config struct {
	// Dir holds the data directory ("data") and the server log ("log"). It is created when
	// missing; an existing data directory is reused.
	Dir string
	// Port to listen on, on 127.0.0.1. Zero picks a free port.
	Port int
	// Durable keeps fsync on. Tests leave it off for speed; benchmarks that quote write
	// throughput turn it on.
	Durable bool
	// Settings are extra `-c name=value` server settings.
	Settings map[string]string
}

// Cluster is a running private PostgreSQL server.
type Cluster struct {
	cfg     Config
	bindir  string
	dataDir string
	sockDir string
	port    int
	cred    *syscall.Credential
}

// BinDir finds the PostgreSQL server binaries: `pg_config --bindir` when it holds initdb,
// else the newest /usr/lib/postgresql/*/bin.
func BinDir() (string, error) {
	if out, err := exec.Command("pg_config", "--bindir").Output(); err == nil {
		dir := strings.TrimSpace(string(out))
		if fileExists(filepath.Join(dir, "initdb")) {
			return dir, nil
		}
	}
	matches, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	sort.Slice(matches, func(i, j int) bool { return versionOf(matches[i]) > versionOf(matches[j]) })
	if len(matches) > 0 {
		return filepath.Dir(matches[0]), nil
	}
	return "", ErrNoInstallation
}

func versionOf(initdbPath string) int {
	v, _ := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(initdbPath))))
	return v
}

// Start initialises the cluster when needed and starts the server.
func Start(ctx context.Context, cfg Config) (*Cluster, error) {
	bindir, err := BinDir()
	if err != nil {
		return nil, err
	}
	// The server tools run from another working directory: every path must be absolute.
	if cfg.Dir, err = filepath.Abs(cfg.Dir); err != nil {
		return nil, fmt.Errorf("resolving cluster directory: %w", err)
	}
	c := &Cluster{cfg: cfg, bindir: bindir, dataDir: filepath.Join(cfg.Dir, "data"), port: cfg.Port}
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("creating cluster directory %q: %w", cfg.Dir, err)
	}
	// The socket goes in a short private directory: socket paths are limited to ~100 bytes.
	if c.sockDir, err = os.MkdirTemp("", "tocsin-pg-"); err != nil {
		return nil, fmt.Errorf("creating socket directory: %w", err)
	}
	if os.Geteuid() == 0 {
		if c.cred, err = postgresCredential(); err != nil {
			return nil, err
		}
		for _, dir := range []string{cfg.Dir, c.sockDir} {
			if err := os.Chmod(dir, 0o755); err != nil {
				return nil, err
			}
			if err := os.Chown(dir, int(c.cred.Uid), int(c.cred.Gid)); err != nil {
				return nil, fmt.Errorf("handing %q to the postgres user: %w", dir, err)
			}
		}
		if err := ensureTraversable(cfg.Dir); err != nil {
			return nil, err
		}
	}
	if !fileExists(filepath.Join(c.dataDir, "PG_VERSION")) {
		if err := c.run(ctx, "initdb", "-D", c.dataDir, "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8"); err != nil {
			return nil, fmt.Errorf("initialising cluster in %q: %w", c.dataDir, err)
		}
	}
	if c.port == 0 {
		if c.port, err = freePort(); err != nil {
			return nil, err
		}
	}
	if err := c.start(ctx); err != nil {
		return nil, err
	}
	return c, nil
}

func (c *Cluster) options() string {
	settings := map[string]string{
		"listen_addresses":      "127.0.0.1",
		"wal_level":             "logical",
		"max_wal_senders":       "10",
		"max_replication_slots": "10",
		"max_connections":       "300",
		"fsync":                 "off",
		"synchronous_commit":    "off",
		"full_page_writes":      "off",
	}
	if c.cfg.Durable {
		settings["fsync"], settings["synchronous_commit"], settings["full_page_writes"] = "on", "on", "on"
	}
	for k, v := range c.cfg.Settings {
		settings[k] = v
	}
	keys := make([]string, 0, len(settings))
	for k := range settings {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	opts := []string{"-p " + strconv.Itoa(c.port), "-k " + c.sockDir}
	for _, k := range keys {
		opts = append(opts, fmt.Sprintf("-c %s=%s", k, settings[k]))
	}
	return strings.Join(opts, " ")
}

func (c *Cluster) start(ctx context.Context) error {
	logPath := filepath.Join(c.cfg.Dir, "log")
	err := c.run(ctx, "pg_ctl", "-D", c.dataDir, "-w", "-t", "60", "-l", logPath, "-o", c.options(), "start")
	if err != nil {
		return fmt.Errorf("starting PostgreSQL on port %d: %w\n%s", c.port, err, tail(logPath, 20))
	}
	return nil
}

// Restart stops the server the hard way (as a crash would) and starts it again on the same
// port. Connections are cut; the data survives.
func (c *Cluster) Restart(ctx context.Context) error {
	if err := c.run(ctx, "pg_ctl", "-D", c.dataDir, "-m", "immediate", "-w", "stop"); err != nil {
		return fmt.Errorf("stopping PostgreSQL: %w", err)
	}
	return c.start(ctx)
}

// Stop stops the server immediately. It is safe to call more than once.
func (c *Cluster) Stop() error {
	if !fileExists(filepath.Join(c.dataDir, "postmaster.pid")) {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := c.run(ctx, "pg_ctl", "-D", c.dataDir, "-m", "fast", "-w", "stop")
	_ = os.RemoveAll(c.sockDir)
	return err
}

// URL is a connection string for database dbname as the postgres superuser.
func (c *Cluster) URL(dbname string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", c.port, dbname)
}

func (c *Cluster) run(ctx context.Context, name string, args ...string) error {
	cmd := exec.CommandContext(ctx, filepath.Join(c.bindir, name), args...)
	if c.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: c.cred}
	}
	cmd.Dir = os.TempDir()
	// pg_ctl keeps stdout open in the server it starts: never wait on a pipe here.
	out, err := os.CreateTemp("", "tocsin-pgctl-")
	if err != nil {
		return err
	}
	defer os.Remove(out.Name())
	defer out.Close()
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Run(); err != nil {
		b, _ := os.ReadFile(out.Name())
		return fmt.Errorf("%s: %w: %s", name, err, strings.TrimSpace(string(b)))
	}
	return nil
}

func postgresCredential() (*syscall.Credential, error) {
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("running as root, PostgreSQL must run as the postgres user, which does not exist: %w", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

// ensureTraversable opens the execute bit of every parent of dir, so that the postgres user
// can reach a directory made by root.
func ensureTraversable(dir string) error {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	for p := filepath.Dir(abs); p != "/" && p != "."; p = filepath.Dir(p) {
		st, err := os.Stat(p)
		if err != nil {
			return err
		}
		if st.Mode().Perm()&0o001 == 0 {
			if err := os.Chmod(p, st.Mode().Perm()|0o011); err != nil {
				return fmt.Errorf("making %q reachable for the postgres user: %w", p, err)
			}
		}
	}
	return nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("finding a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
