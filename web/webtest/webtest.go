// Package webtest runs the web side's Node tests (web/sdk, web/demo) from `go test`, against
// real `tocsin` processes on a test database.
//
// Tools: a missing node, npm or chromium skips the test with the command that installs it,
// except under CI=true, where it fails: CI runs everything. Packages come from each folder's
// package-lock.json through `npm ci` (once per folder and test binary, and only when
// node_modules is missing or older than the lock file).
//
// A Node test reaches the world through environment variables: TOCSIN_BASE (the node's
// base URL) and TOCSIN_CONTROL, a small loopback HTTP service of the Go test that does what
// Node cannot or should not: run SQL on the test database, flip `tocsin switch`, kill the
// node with SIGKILL and start it again on the same address, and mint tokens.
package webtest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	// The node these tests start is built from cmd/tocsin in a child process, which go
	// test's cache does not see: linking the composition root makes the cached result of a
	// web test depend on the Go code the node runs.
	_ "github.com/tocsin/tocsin/internal/app"
	"github.com/tocsin/tocsin/internal/auth"
	"github.com/tocsin/tocsin/internal/testbin"
)

// Secret is the HS256 secret of every node these tests start.
const Secret = "an-hs256-secret-for-web-tests-only-0123456789"

// ChromiumPath is where Debian's chromium package installs the browser.
const ChromiumPath = "/usr/bin/chromium"

// inCI reports whether missing tools must fail rather than skip.
func inCI() bool { return os.Getenv("CI") == "true" }

// missing skips (or, in CI, fails) the test because a tool is not installed.
func missing(t *testing.T, what, install string) {
	t.Helper()
	unavailable(t, fmt.Sprintf("%s is not installed; install it with: %s", what, install))
}

// unavailable skips the test for reason, or fails it under CI=true, where every test runs.
func unavailable(t *testing.T, reason string) {
	t.Helper()
	if inCI() {
		t.Fatalf("%s (CI=true runs every test)", reason)
	}
	t.Skipf("%s (CI=true makes this a failure)", reason)
}

// Node returns the paths of node and npm.
func Node(t *testing.T) (node, npm string) {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		missing(t, "node", "apt-get install -y nodejs npm")
	}
	npm, err = exec.LookPath("npm")
	if err != nil {
		missing(t, "npm", "apt-get install -y npm")
	}
	return node, npm
}

// Chromium returns the browser's path (TOCSIN_CHROMIUM, else Debian's).
func Chromium(t *testing.T) string {
	t.Helper()
	p := os.Getenv("TOCSIN_CHROMIUM")
	if p == "" {
		p = ChromiumPath
	}
	if _, err := os.Stat(p); err != nil {
		missing(t, "chromium ("+p+")", "apt-get install -y chromium")
	}
	return p
}

// Track reads every file under paths (skipping node_modules, dist and test-results), so
// that go test's cache, which only sees the files its own process opens, reruns a web test
// when the TypeScript, JavaScript, spec or lock files its Node child reads have changed.
func Track(t *testing.T, paths ...string) {
	t.Helper()
	for _, root := range paths {
		err := filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if d.IsDir() {
				switch d.Name() {
				case "node_modules", "dist", "test-results":
					if p != root {
						return filepath.SkipDir
					}
				}
				return nil
			}
			_, err = os.ReadFile(p)
			return err
		})
		require.NoError(t, err)
	}
}

// Dir returns the absolute path of a folder given relative to the calling test's package.
func Dir(t *testing.T, rel string) string {
	t.Helper()
	d, err := filepath.Abs(rel)
	require.NoError(t, err)
	return d
}

var (
	npmMu   sync.Mutex
	npmDone = map[string]error{}
)

// NpmCI installs dir's locked packages with `npm ci` unless node_modules is newer than
// package-lock.json. An unreachable registry skips the test (fails in CI).
func NpmCI(t *testing.T, dir string) {
	t.Helper()
	_, npm := Node(t)
	npmMu.Lock()
	defer npmMu.Unlock()
	err, done := npmDone[dir]
	if !done {
		err = npmCI(npm, dir)
		npmDone[dir] = err
	}
	var offline *registryError
	if errors.As(err, &offline) {
		unavailable(t, fmt.Sprintf("the npm registry is unreachable, so the packages of %s cannot be installed; run `npm ci` there once it is reachable", dir))
	}
	require.NoError(t, err)
}

type registryError struct{ out string }

func (e *registryError) Error() string { return "npm registry unreachable: " + e.out }

func npmCI(npm, dir string) error {
	// go test runs packages in parallel processes, and web/demo's bundle needs web/sdk's
	// packages too: one `npm ci` per folder at a time across processes, or two of them
	// empty each other's node_modules.
	unlock, err := lockDir(dir)
	if err != nil {
		return err
	}
	defer unlock()
	lock, err := os.Stat(filepath.Join(dir, "package-lock.json"))
	if err != nil {
		return err
	}
	if installed, err := os.Stat(filepath.Join(dir, "node_modules", ".package-lock.json")); err == nil && !installed.ModTime().Before(lock.ModTime()) {
		return nil
	}
	cmd := exec.Command(npm, "ci", "--no-audit", "--no-fund")
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		if s := string(out); strings.Contains(s, "ENOTFOUND") || strings.Contains(s, "EAI_AGAIN") || strings.Contains(s, "ECONNREFUSED") || strings.Contains(s, "ETIMEDOUT") {
			return &registryError{s}
		}
		return fmt.Errorf("npm ci in %s: %w\n%s", dir, err, out)
	}
	return nil
}

// NpmRun runs `npm run script` in dir and fails the test with its output when it fails.
func NpmRun(t *testing.T, dir, script string) string {
	t.Helper()
	_, npm := Node(t)
	cmd := exec.CommandContext(t.Context(), npm, "run", "--silent", script)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "npm run %s in %s:\n%s", script, dir, out)
	return string(out)
}

// Binary returns the tocsin binary these tests run (built once per test process).
func Binary(t *testing.T) string { return testbin.Tocsin(t) }

// Server is a `tocsin serve` or `tocsin dev` process on a test database.
type Server struct {
	// Base is the API's base URL (http://127.0.0.1:PORT).
	Base string
	// DatabaseURL is the test database.
	DatabaseURL string

	t    *testing.T
	args []string
	dir  string
	logs *os.File

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

// Start runs `tocsin <command>` ("serve" or "dev") on dbURL, on a free loopback port, with
// extra flags, and waits until it is ready. It is killed when the test ends.
func Start(t *testing.T, command, dbURL string, extra ...string) *Server {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	require.NoError(t, l.Close())
	dir := t.TempDir()
	logs, err := os.Create(filepath.Join(dir, command+".log"))
	require.NoError(t, err)
	s := &Server{Base: "http://" + addr, DatabaseURL: dbURL, t: t, dir: dir, logs: logs,
		args: append([]string{command, "--database-url", dbURL, "--addr", addr, "--jwt-secret", Secret,
			"--fallback-interval", "200ms"}, extra...)}
	t.Cleanup(func() {
		s.Kill()
		if t.Failed() {
			b, _ := os.ReadFile(logs.Name())
			t.Logf("tocsin %s log (tail):\n%s", command, tail(b, 6000))
		}
	})
	s.Run()
	return s
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

// Run starts the process (again) and waits until /readyz answers 200.
func (s *Server) Run() {
	s.t.Helper()
	require.NoError(s.t, s.start())
}

func (s *Server) start() error {
	bin := Binary(s.t)
	cmd := exec.Command(bin, s.args...)
	cmd.Dir = s.dir
	cmd.Stdout, cmd.Stderr = s.logs, s.logs
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	s.mu.Lock()
	s.cmd, s.done = cmd, done
	s.mu.Unlock()
	deadline := time.Now().Add(60 * time.Second)
	for {
		select {
		case <-done:
			b, _ := os.ReadFile(s.logs.Name())
			return fmt.Errorf("tocsin %s exited while starting:\n%s", s.args[0], tail(b, 4000))
		default:
		}
		if resp, err := http.Get(s.Base + "/readyz"); err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("tocsin %s did not become ready within a minute", s.args[0])
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Kill sends SIGKILL and waits for the process to exit.
func (s *Server) Kill() {
	s.mu.Lock()
	cmd, done := s.cmd, s.done
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGKILL)
	<-done
}

// Token mints a token for sub.
func Token(sub string, ttl time.Duration, scope string) (string, error) {
	return auth.Mint(auth.Config{HS256Secret: []byte(Secret)}, sub, ttl, scope)
}

// Control serves the control service for the Node tests and returns its base URL:
//
//	POST /sql              the body is run on the test database
//	POST /switch?push=on   runs `tocsin switch push on` (or off)
//	POST /kill             SIGKILL the node
//	POST /start            start it again on the same address; answers once it is ready
//	GET  /token?sub=&ttl=&scope=   a token (ttl in Go syntax, default 1h)
func Control(t *testing.T, s *Server, pool *pgxpool.Pool) string {
	t.Helper()
	bin := Binary(t)
	mux := http.NewServeMux()
	fail := func(w http.ResponseWriter, err error) { http.Error(w, err.Error(), http.StatusInternalServerError) }
	mux.HandleFunc("POST /sql", func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			fail(w, err)
			return
		}
		if _, err := pool.Exec(r.Context(), string(b)); err != nil {
			fail(w, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("POST /switch", func(w http.ResponseWriter, r *http.Request) {
		state := r.URL.Query().Get("push")
		cmd := exec.CommandContext(r.Context(), bin, "switch", "push", state)
		cmd.Env = append(os.Environ(), "TOCSIN_DATABASE_URL="+s.DatabaseURL)
		out, err := cmd.CombinedOutput()
		if err != nil {
			fail(w, fmt.Errorf("tocsin switch push %s: %w: %s", state, err, out))
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("POST /kill", func(w http.ResponseWriter, _ *http.Request) {
		s.Kill()
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("POST /start", func(w http.ResponseWriter, _ *http.Request) {
		if err := s.start(); err != nil {
			fail(w, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("GET /token", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		ttl := time.Hour
		if v := q.Get("ttl"); v != "" {
			d, err := time.ParseDuration(v)
			if err != nil {
				fail(w, err)
				return
			}
			ttl = d
		}
		tok, err := Token(q.Get("sub"), ttl, q.Get("scope"))
		if err != nil {
			fail(w, err)
			return
		}
		_, _ = io.WriteString(w, tok)
	})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })
	return "http://" + l.Addr().String()
}

// RunNode runs `node --test files…` in dir with env added, within timeout, and fails the
// test with the runner's output when a Node test fails.
func RunNode(t *testing.T, dir string, timeout time.Duration, env []string, files ...string) {
	t.Helper()
	node, _ := Node(t)
	ctx, cancel := context.WithTimeout(t.Context(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, append([]string{"--test", "--test-reporter=spec"}, files...)...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("node --test did not finish within %s:\n%s", timeout, out.String())
	}
	require.NoError(t, err, "node --test:\n%s", out.String())
	t.Logf("node --test:\n%s", out.String())
}

// lockDir takes an exclusive advisory lock (flock) that every test process agrees on for
// dir, and returns its release.
func lockDir(dir string) (func(), error) {
	sum := sha256.Sum256([]byte(dir))
	name := filepath.Join(os.TempDir(), "tocsin-npm-"+hex.EncodeToString(sum[:8])+".lock")
	f, err := os.OpenFile(name, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("opening the npm lock for %s: %w", dir, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("locking %s for npm ci: %w", dir, err)
	}
	return func() {
		_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
	}, nil
}
