package main

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// The README's Layout table matches the tree: every Go package and every top-level folder
// is listed, and every listed path exists.
func TestREADMELayoutMatchesTheTree(t *testing.T) {
	t.Parallel()
	root := filepath.Join("..", "..")
	readme, err := os.ReadFile(filepath.Join(root, "README.md"))
	require.NoError(t, err)
	_, section, ok := strings.Cut(string(readme), "\n## Layout\n")
	require.True(t, ok, "README.md has no Layout section")
	section, _, _ = strings.Cut(section, "\n## ")

	// The first column of each row names one or more paths in backticks.
	listed := map[string]bool{}
	path := regexp.MustCompile("`([^`]+)`")
	for _, line := range strings.Split(section, "\n") {
		cells := strings.Split(line, "|")
		if len(cells) < 3 || !strings.Contains(cells[1], "`") {
			continue
		}
		for _, m := range path.FindAllStringSubmatch(cells[1], -1) {
			p := strings.TrimSuffix(m[1], "/")
			listed[p] = true
			_, err := os.Stat(filepath.Join(root, p))
			require.NoError(t, err, "the Layout table lists %q, which does not exist", m[1])
		}
	}
	require.NotEmpty(t, listed)

	// Every folder holding Go code is listed by its own path.
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if d.IsDir() && (d.Name() == "node_modules" || (strings.HasPrefix(d.Name(), ".") && rel != ".")) {
			return filepath.SkipDir
		}
		if !d.IsDir() && strings.HasSuffix(p, ".go") {
			dir := filepath.ToSlash(filepath.Dir(rel))
			if dir != "." && !listed[dir] {
				t.Errorf("the Layout table does not list %s (Go code)", dir)
				listed[dir] = true // once
			}
		}
		return nil
	})
	require.NoError(t, err)

	// Every top-level folder is listed, itself or through a listed folder inside it.
	entries, err := os.ReadDir(root)
	require.NoError(t, err)
	for _, e := range entries {
		if !e.IsDir() || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		covered := false
		for p := range listed {
			if p == e.Name() || strings.HasPrefix(p, e.Name()+"/") {
				covered = true
			}
		}
		require.True(t, covered, "the Layout table lists nothing in %s/", e.Name())
	}
}
