package main

import (
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// The README calls the CLI one way throughout: every command line in its code blocks runs
// `go run ./cmd/tocsin …`, never a bare `tocsin …` the reader may not have installed.
func TestREADMECallsTheCLIOneWay(t *testing.T) {
	t.Parallel()
	readme, err := os.ReadFile("../../README.md")
	require.NoError(t, err)
	bare := regexp.MustCompile(`(^|[\s$(|;&]|\$ )tocsin (` + strings.Join(commandNames(), "|") + `)\b`)
	inBlock, lang, runs := false, "", 0
	for i, line := range strings.Split(string(readme), "\n") {
		if fence, ok := strings.CutPrefix(line, "```"); ok {
			inBlock, lang = !inBlock, fence
			continue
		}
		if !inBlock || (lang != "sh" && lang != "") {
			continue
		}
		require.False(t, bare.MatchString(line), "README.md:%d calls `tocsin` directly; write `go run ./cmd/tocsin`: %s", i+1, line)
		runs += strings.Count(line, "go run ./cmd/tocsin ")
	}
	require.Greater(t, runs, 3)
}

// Every command of the CLI has a row in the README's Commands table.
func TestREADMECommandsTableListsEveryCommand(t *testing.T) {
	t.Parallel()
	readme, err := os.ReadFile("../../README.md")
	require.NoError(t, err)
	s := string(readme)
	start := strings.Index(s, "\n## Commands\n")
	require.NotEqual(t, -1, start)
	s = s[start+1:]
	s = s[:strings.Index(s[3:], "\n## ")+3]
	for _, name := range commandNames() {
		require.Contains(t, s, "\n| `"+name, "README.md's Commands table has no row for %q", name)
	}
}

func commandNames() []string {
	var names []string
	for _, c := range commands() {
		names = append(names, c.name)
	}
	return names
}
