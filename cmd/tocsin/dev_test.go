package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tocsin/tocsin/internal/demo"
	"github.com/tocsin/tocsin/internal/pgcluster"
)

// devProc is a running `tocsin dev`, its stdout and stderr collected together.
type devProc struct {
	cmd  *exec.Cmd
	mu   sync.Mutex
	out  strings.Builder
	done chan struct{}
	err  error
}

func (d *devProc) Write(p []byte) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.out.Write(p)
}

func (d *devProc) output() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.out.String()
}

func startDev(t *testing.T, dir string, env ...string) *devProc {
	t.Helper()
	d := &devProc{done: make(chan struct{})}
	d.cmd = exec.Command(binary, "dev")
	d.cmd.Dir = dir
	d.cmd.Env = cleanEnv(env...)
	d.cmd.Stdout, d.cmd.Stderr = d, d
	require.NoError(t, d.cmd.Start())
	go func() { d.err = d.cmd.Wait(); close(d.done) }()
	t.Cleanup(func() {
		select {
		case <-d.done:
		default:
			_ = d.cmd.Process.Signal(os.Interrupt)
			<-d.done
		}
	})
	return d
}

// waitFor waits until the output contains s; it fails if the process exits first.
func (d *devProc) waitFor(t *testing.T, s string) {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for !strings.Contains(d.output(), s) {
		select {
		case <-d.done:
			require.Contains(t, d.output(), s, "tocsin dev exited (%v)", d.err)
			return
		case <-time.After(20 * time.Millisecond):
		}
		require.True(t, time.Now().Before(deadline), "no %q in:\n%s", s, d.output())
	}
}

// exit waits for the process to end and returns its exit code.
func (d *devProc) exit(t *testing.T) int {
	t.Helper()
	select {
	case <-d.done:
	case <-time.After(60 * time.Second):
		t.Fatalf("tocsin dev did not stop:\n%s", d.output())
	}
	var exit *exec.ExitError
	if errors.As(d.err, &exit) {
		return exit.ExitCode()
	}
	require.NoError(t, d.err)
	return 0
}

var bannerLine = regexp.MustCompile(`(?m)^  (API|Database) +(\S+)$`)

// banner returns the API and database URLs the banner printed.
func (d *devProc) banner(t *testing.T) (api, db string) {
	t.Helper()
	d.waitFor(t, "Ctrl-C stops")
	for _, m := range bannerLine.FindAllStringSubmatch(d.output(), -1) {
		if m[1] == "API" {
			api = m[2]
		} else {
			db = m[2]
		}
	}
	require.NotEmpty(t, api)
	require.NotEmpty(t, db)
	return api, db
}

func freeTCPPort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// devFolder is a folder the postgres user can reach when the tests run as root.
func devFolder(t *testing.T) string {
	dir, err := os.MkdirTemp("", "tocsin-dev-")
	require.NoError(t, err)
	require.NoError(t, os.Chmod(dir, 0o755))
	t.Cleanup(func() {
		stopLeftover(dir)
		_ = os.RemoveAll(dir)
	})
	return dir
}

// stopLeftover stops a PostgreSQL a failed test may have left in dir.
func stopLeftover(dir string) {
	b, err := os.ReadFile(filepath.Join(dir, devDir, "pg", "data", "postmaster.pid"))
	if err != nil {
		return
	}
	pid, _ := strconv.Atoi(strings.SplitN(string(b), "\n", 2)[0])
	if pid <= 0 || syscall.Kill(pid, syscall.SIGQUIT) != nil {
		return
	}
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if syscall.Kill(pid, 0) != nil {
			return
		}
	}
}

func postgresRunning(dir string) bool {
	_, err := os.Stat(filepath.Join(dir, devDir, "pg", "data", "postmaster.pid"))
	return err == nil
}

func getStatus(t *testing.T, url, token string) int {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	return resp.StatusCode
}

// The dev loop as a newcomer lives it: stable ports, the other commands finding the dev
// database and secret, a second start refused, Ctrl-C saying what it waits for, SIGHUP
// stopping cleanly, and a PostgreSQL left behind by kill -9 reused.
func TestDevLoop(t *testing.T) {
	t.Parallel()
	if _, err := pgcluster.BinDir(); err != nil {
		t.Skip(err)
	}
	dir := devFolder(t)
	apiPort := freeTCPPort(t)
	require.NoError(t, os.MkdirAll(filepath.Join(dir, devDir), 0o755))
	state, _ := json.Marshal(devState{APIPort: apiPort})
	require.NoError(t, os.WriteFile(filepath.Join(dir, devDir, "dev.json"), state, 0o644))
	env := []string{"TOCSIN_DRAIN_WINDOW=1s"}

	first := startDev(t, dir, env...)
	api, db := first.banner(t)
	require.Equal(t, fmt.Sprintf("http://127.0.0.1:%d", apiPort), api, "the kept API port")
	require.Contains(t, first.output(), "fsync=off and synchronous_commit=off")

	t.Run("second dev refused in one line", func(t *testing.T) {
		r := tocsin(t, dir, nil, "dev")
		require.Equal(t, 1, r.code)
		require.Equal(t, fmt.Sprintf("tocsin: already running (pid %d, API %s)\n", first.cmd.Process.Pid, api), r.stderr)
	})

	var token string
	t.Run("commands find the dev database and secret", func(t *testing.T) {
		r := tocsin(t, dir, nil, "token", "--sub", "alice")
		require.Equal(t, 0, r.code, r.stderr)
		require.Equal(t, "tocsin: using the JWT secret of `tocsin dev` from .tocsin/secret\n", r.stderr)
		token = strings.TrimSpace(r.stdout)
		require.Equal(t, http.StatusOK, getStatus(t, api+"/v1/feed", token), "the token is valid for the dev API")

		usingDB := "tocsin: using the database of `tocsin dev` from .tocsin/ (" + db + ")\n"
		r = tocsin(t, dir, nil, "migrate")
		require.Equal(t, 0, r.code, r.stderr)
		require.Equal(t, usingDB, r.stderr)
		require.Equal(t, "schema is current\n", r.stdout)

		require.NoError(t, os.WriteFile(filepath.Join(dir, "routes.yaml"), demo.RoutesYAML, 0o644))
		r = tocsin(t, dir, nil, "routes", "check", "routes.yaml")
		require.Equal(t, 0, r.code, r.stderr)
		require.Equal(t, usingDB, r.stderr)
		require.Equal(t, "routes.yaml: 2 routes ok\n", r.stdout)
		r = tocsin(t, dir, nil, "routes", "apply", "routes.yaml")
		require.Equal(t, 0, r.code, r.stderr)
		require.Equal(t, usingDB, r.stderr)

		for _, state := range []string{"off", "on"} {
			r = tocsin(t, dir, nil, "switch", "capture", state)
			require.Equal(t, 0, r.code, r.stderr)
			require.Equal(t, usingDB, r.stderr)
			require.Equal(t, "capture is "+state+"\n", r.stdout)
		}

		r = tocsin(t, dir, nil, "capture", "drop-slot")
		require.Equal(t, 0, r.code, r.stderr)
		require.Equal(t, usingDB, r.stderr)
		require.Contains(t, r.stdout, "no replication slot")

		r = tocsin(t, dir, nil, "bench", "capture", "--duration", "100ms", "--rounds", "1", "--modes", "none", "--writers", "1")
		require.Equal(t, 0, r.code, r.stderr)
		require.Equal(t, usingDB+"tocsin: the dev cluster runs with fsync=off: these are not durable-commit figures (--private for those)\n", r.stderr)
		require.Contains(t, r.stdout, "fsync=off", "the bench ran on the dev cluster")

		// A flag or the environment still wins, and then nothing is said.
		r = tocsin(t, dir, []string{"TOCSIN_JWT_SECRET=" + strings.Repeat("k", 32)}, "token", "--sub", "alice")
		require.Equal(t, 0, r.code, r.stderr)
		require.Empty(t, r.stderr)
	})

	t.Run("Ctrl-C says what it waits for", func(t *testing.T) {
		req, err := http.NewRequest(http.MethodGet, api+"/v1/feed/stream?after=now", nil)
		require.NoError(t, err)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		require.Equal(t, http.StatusOK, resp.StatusCode)
		_, err = bufio.NewReader(resp.Body).ReadString('\n') // retry: …, the stream is open
		require.NoError(t, err)

		require.NoError(t, first.cmd.Process.Signal(os.Interrupt))
		first.waitFor(t, "Stopping: draining 1 stream, up to 1s")
		require.Equal(t, 0, first.exit(t), first.output())
		require.Contains(t, first.output(), "PostgreSQL stopped.")
		require.False(t, postgresRunning(dir))
	})

	t.Run("same ports again; SIGHUP stops cleanly", func(t *testing.T) {
		again := startDev(t, dir, env...)
		api2, db2 := again.banner(t)
		require.Equal(t, api, api2)
		require.Equal(t, db, db2)
		require.NoError(t, again.cmd.Process.Signal(syscall.SIGHUP))
		require.Equal(t, 0, again.exit(t), again.output())
		require.Contains(t, again.output(), "PostgreSQL stopped.")
		require.False(t, postgresRunning(dir))
	})

	t.Run("PostgreSQL left by kill -9 is reused", func(t *testing.T) {
		killed := startDev(t, dir, env...)
		killed.banner(t)
		require.NoError(t, killed.cmd.Process.Kill())
		killed.exit(t)
		require.True(t, postgresRunning(dir), "kill -9 leaves PostgreSQL running")
		b, err := os.ReadFile(filepath.Join(dir, devDir, "pg", "data", "postmaster.pid"))
		require.NoError(t, err)
		pgPID := strings.SplitN(string(b), "\n", 2)[0]

		next := startDev(t, dir, env...)
		api3, db3 := next.banner(t)
		require.Equal(t, api, api3)
		require.Equal(t, db, db3)
		require.Equal(t, 1, strings.Count(next.output(), "left running"), next.output())
		require.Contains(t, next.output(), "Reusing the PostgreSQL (pid "+pgPID+") left running by an earlier `tocsin dev` in this folder.\n")
		require.Equal(t, http.StatusOK, getStatus(t, api+"/v1/feed", token))
		require.NoError(t, next.cmd.Process.Signal(os.Interrupt))
		require.Equal(t, 0, next.exit(t), next.output())
		require.False(t, postgresRunning(dir))
	})
}

// A start that fails leaves no temporary directory behind and says why in one line.
func TestDevFailedStartLeavesNoTemporaryDirectories(t *testing.T) {
	t.Parallel()
	if _, err := pgcluster.BinDir(); err != nil {
		t.Skip(err)
	}
	dir := devFolder(t)
	tmp := devFolder(t)
	// A data directory no server can start from.
	require.NoError(t, os.MkdirAll(filepath.Join(dir, devDir, "pg"), 0o755))
	data := filepath.Join(dir, devDir, "pg", "data")
	require.NoError(t, os.Mkdir(data, 0o700))
	state, _ := json.Marshal(devState{APIPort: freeTCPPort(t)})
	require.NoError(t, os.WriteFile(filepath.Join(dir, devDir, "dev.json"), state, 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(data, "PG_VERSION"), []byte("9\n"), 0o600))

	r := tocsin(t, dir, []string{"TMPDIR=" + tmp}, "dev")
	require.Equal(t, 1, r.code, r.stdout)
	require.Equal(t, 1, strings.Count(r.stderr, "\n"), r.stderr)
	require.Contains(t, r.stderr, "tocsin: starting PostgreSQL on port ")
	entries, err := os.ReadDir(tmp)
	require.NoError(t, err)
	require.Empty(t, entries, "temporary files left behind")
}
