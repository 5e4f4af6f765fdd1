package main

import (
	"os"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"
)

// shBlocks returns the ```sh blocks of the README section under heading.
func shBlocks(t *testing.T, heading string) []string {
	t.Helper()
	readme, err := os.ReadFile("../../README.md")
	require.NoError(t, err)
	s := string(readme)
	i := strings.Index(s, "\n"+heading+"\n")
	require.NotEqual(t, -1, i, "README.md has no %q", heading)
	s = s[i+1:]
	if end := strings.Index(s[3:], "\n## "); end != -1 {
		s = s[:end+3]
	}
	var blocks []string
	for {
		i := strings.Index(s, "```sh\n")
		if i == -1 {
			return blocks
		}
		s = s[i+len("```sh\n"):]
		end := strings.Index(s, "```")
		blocks = append(blocks, s[:end])
		s = s[end+3:]
	}
}

// The README's walkthrough and inbox examples run word for word against `tocsin dev`, in
// bash with curl and psql, only the ports replaced: the long poll and the `curl -N` stream
// both receive Bob's comment, the bad cursor gets its 400, and the inbox marks the id the
// reader looked up.
func TestREADMEWalkthroughRunsAgainstDev(t *testing.T) {
	t.Parallel()
	for _, tool := range []string{"bash", "curl", "psql"} {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("%s is not installed (CI=true runs every test)", tool)
			}
			t.Skipf("%s is not installed; install it with: apt-get install -y curl postgresql-client (CI=true makes this a failure)", tool)
		}
	}
	dir := devFolder(t)
	dev := startDev(t, dir, "TOCSIN_ADDR=127.0.0.1:0")
	api, db := dev.banner(t)
	dbPort := db[strings.LastIndex(db, ":")+1 : strings.Index(db, "/tocsin")]
	// Only the addresses change: the reader's are 8080 and the PORT it copied.
	adapt := func(script string) string {
		script = strings.ReplaceAll(script, "http://127.0.0.1:8080", api)
		script = strings.ReplaceAll(script, "127.0.0.1:PORT", "127.0.0.1:"+dbPort)
		return strings.ReplaceAll(script, "go run ./cmd/tocsin ", binary+" ")
	}
	blocks := shBlocks(t, "## Walkthrough")
	require.Len(t, blocks, 2)
	require.Contains(t, blocks[0], "curl -N ")

	// The first block leaves a long poll and a stream running; wait for both to print the
	// comment, then stop them.
	// A reader types the insert well after both requests are parked; the test waits until
	// /metrics shows them parked, or "after=now" could resolve after the insert.
	parked := "until curl -s " + api + "/metrics | grep -q '^tocsin_long_polls_parked 1' &&\n" +
		"  curl -s " + api + "/metrics | grep -q '^tocsin_streams_open 1'; do sleep 0.02; done\n"
	first := adapt(blocks[0])
	at := strings.Index(first, "\npsql ")
	require.NotEqual(t, -1, at, "the walkthrough inserts with psql")
	walk := exec.Command("bash", "-c", first[:at+1]+parked+first[at+1:]+"\nwait\n")
	walk.Dir = dir
	walk.Env = cleanEnv()
	walk.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out := &devProc{done: make(chan struct{})}
	walk.Stdout, walk.Stderr = out, out
	require.NoError(t, walk.Start())
	go func() { out.err = walk.Wait(); close(out.done) }()
	t.Cleanup(func() { _ = syscall.Kill(-walk.Process.Pid, syscall.SIGKILL); <-out.done })
	out.waitFor(t, `"body":"Nice work"`)           // the long poll's page
	out.waitFor(t, "event: notification\ndata: {") // the stream's event
	require.Equal(t, 2, strings.Count(out.output(), `"body":"Nice work"`), out.output())
	require.NoError(t, syscall.Kill(-walk.Process.Pid, syscall.SIGTERM))
	m := regexp.MustCompile(`"cursor":"([^"]+)"`).FindStringSubmatch(out.output())
	require.NotNil(t, m, "the long poll's page has a cursor: %s", out.output())
	insertCursor := m[1]

	env := func(script string) string {
		return "TOKEN=$(" + binary + " token --sub alice)\nDB='" + db + "'\n" + adapt(script)
	}
	// A reader types the next curl well after the update committed; the test waits until
	// the update was sequenced (a long poll after the insert's cursor answers), or the
	// short poll could run before the sequencer moved it into the feed.
	second := blocks[1]
	cut := strings.Index(second, "\ncurl ")
	require.NotEqual(t, -1, cut, "the second block reads the feed with curl after psql")
	sequenced := "curl -s -H \"Authorization: Bearer $TOKEN\" '" + api + "/v1/feed?after=" + insertCursor + "&wait=30' >/dev/null\n"
	try := exec.Command("bash", "-c", env(second[:cut+1]+sequenced+second[cut+1:]))
	try.Dir = dir
	try.Env = cleanEnv()
	b, err := try.CombinedOutput()
	require.NoError(t, err, "%s", b)
	require.Contains(t, string(b), `"changed":["status"]`)
	require.Contains(t, string(b), "cursor-malformed")

	inbox := shBlocks(t, "## Inbox")
	require.Len(t, inbox, 1)
	mark := exec.Command("bash", "-c", env(inbox[0]))
	mark.Dir = dir
	mark.Env = cleanEnv()
	b, err = mark.CombinedOutput()
	require.NoError(t, err, "%s", b)
	require.Contains(t, string(b), `{"changed":1,"counts":{"unread":0,"unseen":0}}`, "the id looked up was marked read")

	require.NoError(t, dev.cmd.Process.Signal(os.Interrupt))
	require.Equal(t, 0, dev.exit(t), dev.output())
}
