package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// This file starts the real nginx and HAProxy with the files in deploy/, and reads
// Server-Sent Events the way an EventSource does.

// proxyKind is one proxy this repository ships a configuration for.
type proxyKind struct {
	name    string // the binary
	pkg     string // the Debian package that installs it
	startFn func(t *testing.T, bin string, upstreams []string) *proxy
}

var proxyKinds = []proxyKind{
	{name: "nginx", pkg: "nginx-light", startFn: startNginx},
	{name: "haproxy", pkg: "haproxy", startFn: startHAProxy},
}

// find returns the path of the proxy's binary, or the command that installs it.
func (k proxyKind) find() (path, install string) {
	if p, err := exec.LookPath(k.name); err == nil {
		return p, ""
	}
	if p := "/usr/sbin/" + k.name; isExecutable(p) {
		return p, ""
	}
	return "", "apt-get install -y " + k.pkg
}

// skipMissing skips the test when the proxy is missing, with the command that installs
// it; under CI=true it fails instead.
func (k proxyKind) skipMissing(t *testing.T, install string) {
	t.Helper()
	msg := fmt.Sprintf("%s is not installed: %s", k.name, install)
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

func isExecutable(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0
}

// proxy is a running nginx or HAProxy.
type proxy struct {
	kind string
	base string
	cmd  *exec.Cmd
	done chan struct{}
	logs []string // files to show when the test fails
}

// deployFile reads a file of deploy/ and replaces each of the pairs' old strings, each of
// which must occur exactly once: the test runs the shipped file, changed only there.
func deployFile(t *testing.T, name string, pairs ...string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "deploy", name))
	require.NoError(t, err)
	s := string(b)
	for i := 0; i < len(pairs); i += 2 {
		require.Equal(t, 1, strings.Count(s, pairs[i]), "deploy/%s must hold %q exactly once", name, pairs[i])
		s = strings.Replace(s, pairs[i], pairs[i+1], 1)
	}
	return s
}

// startNginx runs deploy/nginx/tocsin.conf, with only its listen address changed, included
// from an http block that defines the upstream as the file's header comment recommends.
func startNginx(t *testing.T, bin string, upstreams []string) *proxy {
	t.Helper()
	dir := t.TempDir()
	addr := freeAddr(t)
	conf := deployFile(t, "nginx/tocsin.conf", "listen 127.0.0.1:8088;", "listen "+addr+";")
	require.NoError(t, os.WriteFile(filepath.Join(dir, "tocsin.conf"), []byte(conf), 0o644))
	var servers strings.Builder
	for _, u := range upstreams {
		fmt.Fprintf(&servers, "        server %s max_fails=1 fail_timeout=5s;\n", u)
	}
	outer := fmt.Sprintf(`daemon off;
master_process off;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log info;
events { worker_connections 1024; }
http {
    log_format upstream '$remote_addr "$request" $status upstream=$upstream_addr $upstream_status $request_time';
    access_log %[1]s/access.log upstream;
    client_body_temp_path %[1]s/body;
    proxy_temp_path %[1]s/proxy;
    fastcgi_temp_path %[1]s/fastcgi;
    uwsgi_temp_path %[1]s/uwsgi;
    scgi_temp_path %[1]s/scgi;
    upstream tocsin {
        least_conn;
%[2]s        keepalive 32;
    }
    include %[1]s/tocsin.conf;
}
`, dir, servers.String())
	confPath := filepath.Join(dir, "nginx.conf")
	require.NoError(t, os.WriteFile(confPath, []byte(outer), 0o644))
	p := &proxy{kind: "nginx", base: "http://" + addr,
		logs: []string{filepath.Join(dir, "error.log"), filepath.Join(dir, "access.log")}}
	p.start(t, exec.Command(bin, "-p", dir, "-e", filepath.Join(dir, "error.log"), "-c", confPath))
	return p
}

// startHAProxy runs deploy/haproxy/haproxy.cfg with only its addresses changed.
func startHAProxy(t *testing.T, bin string, upstreams []string) *proxy {
	t.Helper()
	require.Len(t, upstreams, 2, "deploy/haproxy/haproxy.cfg names two servers")
	dir := t.TempDir()
	addr := freeAddr(t)
	cfg := deployFile(t, "haproxy/haproxy.cfg",
		"bind 127.0.0.1:8088", "bind "+addr,
		"server node1 127.0.0.1:8080 ", "server node1 "+upstreams[0]+" ",
		"server node2 127.0.0.1:8081 ", "server node2 "+upstreams[1]+" ")
	path := filepath.Join(dir, "haproxy.cfg")
	require.NoError(t, os.WriteFile(path, []byte(cfg), 0o644))
	logPath := filepath.Join(dir, "haproxy.log")
	p := &proxy{kind: "haproxy", base: "http://" + addr, logs: []string{logPath}}
	cmd := exec.Command(bin, "-db", "-f", path)
	logs, err := os.Create(logPath)
	require.NoError(t, err)
	t.Cleanup(func() { logs.Close() })
	cmd.Stdout, cmd.Stderr = logs, logs
	p.start(t, cmd)
	return p
}

// start runs cmd until the test ends (and kills it if the test binary dies), and waits
// until the proxy answers through to an upstream.
func (p *proxy) start(t *testing.T, cmd *exec.Cmd) {
	t.Helper()
	dieWithParent(cmd)
	if cmd.Stdout == nil {
		out, err := os.Create(filepath.Join(t.TempDir(), p.kind+".out"))
		require.NoError(t, err)
		t.Cleanup(func() { out.Close() })
		cmd.Stdout, cmd.Stderr = out, out
		p.logs = append(p.logs, out.Name())
	}
	require.NoError(t, cmd.Start())
	p.cmd, p.done = cmd, make(chan struct{})
	go func() { _ = cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			for _, l := range p.logs {
				b, _ := os.ReadFile(l)
				t.Logf("%s %s:\n%s", p.kind, filepath.Base(l), b)
			}
		}
	})
	require.Eventually(t, func() bool {
		select {
		case <-p.done:
			return true // reported below
		default:
		}
		resp, err := http.Get(p.base + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}, 20*time.Second, 20*time.Millisecond, "%s did not come up", p.kind)
	select {
	case <-p.done:
		for _, l := range p.logs {
			b, _ := os.ReadFile(l)
			t.Logf("%s %s:\n%s", p.kind, filepath.Base(l), b)
		}
		t.Fatalf("%s exited at start: %v", p.kind, cmd.ProcessState)
	default:
	}
}

// frame is one Server-Sent Events frame, stamped when its blank line was read.
type frame struct {
	id, event, data string
	hasID           bool
	at              time.Time
}

// sseStream reads one stream response frame by frame in the background.
type sseStream struct {
	resp   *http.Response
	frames chan frame // closed when the response ends; err says how
	err    error
	cancel context.CancelFunc
}

// openStream sends GET url with hdr; a 200 starts reading frames. A non-200 response is
// returned with its status (its body closed): an EventSource would give up on it.
func openStream(client *http.Client, url string, hdr http.Header) (*sseStream, int, error) {
	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		cancel()
		return nil, 0, err
	}
	for k, vs := range hdr {
		req.Header[k] = vs
	}
	req.Header.Set("Accept", "text/event-stream")
	resp, err := client.Do(req)
	if err != nil {
		cancel()
		return nil, 0, err
	}
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		cancel()
		return nil, resp.StatusCode, nil
	}
	s := &sseStream{resp: resp, frames: make(chan frame, 1024), cancel: cancel}
	go s.read()
	return s, resp.StatusCode, nil
}

func (s *sseStream) read() {
	defer close(s.frames)
	defer s.resp.Body.Close()
	r := bufio.NewReader(s.resp.Body)
	var f frame
	var fields bool
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			s.err = err
			return
		}
		line = strings.TrimRight(line, "\r\n")
		if line == "" {
			if fields {
				f.at = time.Now()
				s.frames <- f
			}
			f, fields = frame{}, false
			continue
		}
		if strings.HasPrefix(line, ":") {
			continue // heartbeat
		}
		name, value, _ := strings.Cut(line, ":")
		value = strings.TrimPrefix(value, " ")
		fields = true
		switch name {
		case "id":
			f.id, f.hasID = value, true
		case "event":
			f.event = value
		case "data":
			if f.data != "" {
				f.data += "\n"
			}
			f.data += value
		}
	}
}

// next returns the next frame, or false when the stream ended or nothing came in time.
func (s *sseStream) next(timeout time.Duration) (frame, bool) {
	select {
	case f, ok := <-s.frames:
		return f, ok
	case <-time.After(timeout):
		return frame{}, false
	}
}

// nextEvent skips frames without data (the opening frame) and returns the next event.
func (s *sseStream) nextEvent(t *testing.T, timeout time.Duration) frame {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		f, ok := s.next(time.Until(deadline))
		require.True(t, ok, "no event within %s (stream error: %v)", timeout, s.err)
		if f.data != "" {
			return f
		}
	}
}

func (s *sseStream) close() {
	s.cancel()
	for range s.frames {
	}
}

// metric reads one unlabelled metric of a node.
func metric(n *node, name string) (float64, error) {
	resp, err := http.Get(n.base + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			return strconv.ParseFloat(v, 64)
		}
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, fmt.Errorf("%s has no metric %s", n.name, name)
}
