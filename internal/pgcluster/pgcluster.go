// Package pgcluster starts a private PostgreSQL cluster from the local installation: the
// embedded default behind `tocsin dev`, and the throwaway server of the test suite.
//
// initdb and postgres refuse to run as root, so when the caller is root the server runs as
// the `postgres` user, and the cluster and socket directories are handed to that user.
// Permissions of other directories are never changed: when the postgres user cannot reach
// the cluster directory (a parent such as /root is closed to others), the data lives in
// the postgres user's home instead, under tocsin/<hash of the directory>.
//
// A server left running in the data directory by an earlier process (one killed with
// kill -9) is detected by Start: reused when it answers, stopped otherwise.
package pgcluster

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
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
	// PortFallback picks a free port when Port is taken by another program.
	PortFallback bool
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
	home    string // holds data and log: cfg.Dir, or a directory the postgres user can reach
	dataDir string
	sockDir string
	port    int
	cred    *syscall.Credential
	reused  int // pid of a server found running and reused, 0 when Start started it
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

// Start initialises the cluster when needed and starts the server. If a server already
// runs on the data directory (left behind by a process that was killed) and answers, it is
// reused (see Reused); if it does not answer, it is stopped first. A failed start leaves no
// temporary directory behind.
func Start(ctx context.Context, cfg Config) (_ *Cluster, err error) {
	bindir, err := BinDir()
	if err != nil {
		return nil, err
	}
	// The server tools run from another working directory: every path must be absolute.
	if cfg.Dir, err = filepath.Abs(cfg.Dir); err != nil {
		return nil, fmt.Errorf("resolving cluster directory: %w", err)
	}
	c := &Cluster{cfg: cfg, bindir: bindir, home: cfg.Dir, port: cfg.Port}
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("creating cluster directory %q: %w", cfg.Dir, err)
	}
	if os.Geteuid() == 0 {
		if c.cred, err = postgresCredential(); err != nil {
			return nil, err
		}
		if c.home, err = reachableHome(cfg.Dir, c.cred); err != nil {
			return nil, err
		}
		if err := c.handOver(c.home); err != nil {
			return nil, err
		}
	}
	c.dataDir = filepath.Join(c.home, "data")
	if pid, port, sockDir, ok := leftover(c.dataDir); ok {
		if answers(port) {
			c.reused, c.port, c.sockDir = pid, port, sockDir
			return c, nil
		}
		if err := c.run(ctx, "pg_ctl", "-D", c.dataDir, "-m", "immediate", "-w", "stop"); err != nil {
			return nil, fmt.Errorf("stopping the unresponsive PostgreSQL (pid %d) left running in %q: %w", pid, c.dataDir, err)
		}
		c.removeSocketDir(sockDir)
	}
	// The socket goes in a short private directory: socket paths are limited to ~100 bytes.
	if c.sockDir, err = os.MkdirTemp("", "tocsin-pg-"); err != nil {
		return nil, fmt.Errorf("creating socket directory: %w", err)
	}
	defer func() {
		if err != nil {
			_ = os.RemoveAll(c.sockDir)
		}
	}()
	if c.cred != nil {
		if err := c.handOver(c.sockDir); err != nil {
			return nil, err
		}
	}
	if !fileExists(filepath.Join(c.dataDir, "PG_VERSION")) {
		if err := c.run(ctx, "initdb", "-D", c.dataDir, "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8"); err != nil {
			return nil, fmt.Errorf("initialising cluster in %q: %w", c.dataDir, err)
		}
	}
	if c.port != 0 && c.cfg.PortFallback && !portFree(c.port) {
		c.port = 0
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

// Reused is the pid of the server Start found running on the data directory and reused
// (left behind by an earlier process), or 0 when Start started the server itself.
func (c *Cluster) Reused() int { return c.reused }

// Port is the port the server listens on, on 127.0.0.1.
func (c *Cluster) Port() int { return c.port }

// DataDir is the server's data directory: under Config.Dir, or under the postgres user's
// home when that user cannot reach Config.Dir (see the package comment).
func (c *Cluster) DataDir() string { return c.dataDir }

// RunAs is the user the server runs as when it is not the caller: "postgres" when the
// caller is root, else "".
func (c *Cluster) RunAs() string {
	if c.cred != nil {
		return "postgres"
	}
	return ""
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
	logPath := filepath.Join(c.home, "log")
	err := c.run(ctx, "pg_ctl", "-D", c.dataDir, "-w", "-t", "60", "-l", logPath, "-o", c.options(), "start")
	if err != nil {
		return fmt.Errorf("starting PostgreSQL on port %d: %s (server log: %s)", c.port, lastLogLine(logPath, err), logPath)
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
		c.removeSocketDir(c.sockDir) // stopped by someone else: the directory is still ours
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := c.run(ctx, "pg_ctl", "-D", c.dataDir, "-m", "fast", "-w", "stop")
	c.removeSocketDir(c.sockDir)
	return err
}

// removeSocketDir removes a socket directory this package made (never another one named
// by a postmaster.pid).
func (c *Cluster) removeSocketDir(dir string) {
	if filepath.Dir(dir) == filepath.Clean(os.TempDir()) && strings.HasPrefix(filepath.Base(dir), "tocsin-pg-") {
		_ = os.RemoveAll(dir)
	}
}

// leftover reads the postmaster.pid of dataDir: a server whose process is alive was left
// running there.
func leftover(dataDir string) (pid, port int, sockDir string, ok bool) {
	b, err := os.ReadFile(filepath.Join(dataDir, "postmaster.pid"))
	if err != nil {
		return 0, 0, "", false
	}
	lines := strings.Split(string(b), "\n")
	if len(lines) < 5 {
		return 0, 0, "", false
	}
	pid, _ = strconv.Atoi(strings.TrimSpace(lines[0]))
	port, _ = strconv.Atoi(strings.TrimSpace(lines[3]))
	if pid <= 0 {
		return 0, 0, "", false
	}
	if err := syscall.Kill(pid, 0); err != nil && !errors.Is(err, syscall.EPERM) {
		return 0, 0, "", false // stale: the server will replace the file
	}
	return pid, port, strings.TrimSpace(lines[4]), true
}

// StopAbandoned stops, at once, a server left running on dataDir by a process that died
// without stopping it (SIGQUIT: PostgreSQL's immediate shutdown), waits up to timeout for
// it to go, and removes the socket directory this package made for it. A data directory
// without a live server is left as it is.
func StopAbandoned(dataDir string, timeout time.Duration) error {
	pid, _, sockDir, ok := leftover(dataDir)
	if !ok {
		return nil
	}
	if err := syscall.Kill(pid, syscall.SIGQUIT); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("stopping the PostgreSQL (pid %d) left running in %q: %w", pid, dataDir, err)
	}
	for deadline := time.Now().Add(timeout); syscall.Kill(pid, 0) == nil; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			return fmt.Errorf("the PostgreSQL (pid %d) left running in %q did not stop within %s", pid, dataDir, timeout)
		}
	}
	(&Cluster{}).removeSocketDir(sockDir)
	return nil
}

func answers(port int) bool {
	if port <= 0 {
		return false
	}
	conn, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), 2*time.Second)
	if err != nil {
		return false
	}
	_ = conn.Close()
	return true
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

// handOver gives dir to the postgres user (it is the cluster's own directory or socket
// directory; nothing above it changes).
func (c *Cluster) handOver(dir string) error {
	if err := os.Chmod(dir, 0o755); err != nil {
		return err
	}
	if err := os.Chown(dir, int(c.cred.Uid), int(c.cred.Gid)); err != nil {
		return fmt.Errorf("handing %q to the postgres user: %w", dir, err)
	}
	return nil
}

// reachableHome is dir when the postgres user can traverse every directory above it, else
// a directory of the postgres user's home kept for dir: Tocsin never opens the permissions
// of the caller's folders.
func reachableHome(dir string, cred *syscall.Credential) (string, error) {
	if traversable(filepath.Dir(dir), cred) {
		return dir, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return "", err
	}
	if u.HomeDir == "" || !traversable(u.HomeDir, cred) {
		return "", fmt.Errorf("the postgres user can reach neither %q nor its home %q: "+
			"run `tocsin dev` from a folder others can traverse (e.g. under /tmp or /srv)", dir, u.HomeDir)
	}
	sum := sha256.Sum256([]byte(dir))
	home := filepath.Join(u.HomeDir, "tocsin", hex.EncodeToString(sum[:8]))
	if err := os.MkdirAll(home, 0o755); err != nil {
		return "", fmt.Errorf("creating %q: %w", home, err)
	}
	if err := os.Chown(filepath.Dir(home), int(cred.Uid), int(cred.Gid)); err != nil {
		return "", err
	}
	return home, nil
}

// traversable reports whether the user of cred may search dir and each of its parents.
func traversable(dir string, cred *syscall.Credential) bool {
	for p := dir; ; p = filepath.Dir(p) {
		var st syscall.Stat_t
		if err := syscall.Stat(p, &st); err != nil {
			return false
		}
		var bit uint32 = 0o001
		switch {
		case st.Uid == cred.Uid:
			bit = 0o100
		case st.Gid == cred.Gid:
			bit = 0o010
		}
		if st.Mode&bit == 0 {
			return false
		}
		if p == "/" || p == "." {
			return true
		}
	}
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("finding a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func portFree(port int) bool {
	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		return false
	}
	_ = l.Close()
	return true
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// lastLogLine is the server log's last line when it explains a failed start, else err.
func lastLogLine(path string, err error) string {
	b, rerr := os.ReadFile(path)
	if rerr != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if l := strings.TrimSpace(lines[i]); strings.Contains(l, "FATAL") || strings.Contains(l, "ERROR") {
			return l
		}
	}
	return err.Error()
}
