package app_test

import (
	"os"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// The README's metrics table lists exactly the tocsin_* metrics a node with every role
// exports: a metric added without documentation (or documented and gone) fails here.
func TestREADMEListsEveryMetric(t *testing.T) {
	t.Parallel()
	b := setup(t)
	exported := b.node.Metrics.Names("tocsin_")
	require.NotEmpty(t, exported)

	readme, err := os.ReadFile("../../README.md")
	require.NoError(t, err)
	section := string(readme)
	start := strings.Index(section, "\n## Metrics\n")
	require.NotEqual(t, -1, start, "README.md has no Metrics section")
	section = section[start+1:]
	if end := strings.Index(section[3:], "\n## "); end != -1 {
		section = section[:end+3]
	}
	seen := map[string]bool{}
	for _, line := range strings.Split(section, "\n") {
		if !strings.HasPrefix(line, "| `tocsin_") {
			continue
		}
		first := strings.SplitN(line, "|", 3)[1] // the metric column
		for _, m := range regexp.MustCompile("`(tocsin_[a-z_]+)").FindAllStringSubmatch(first, -1) {
			seen[m[1]] = true
		}
	}
	documented := make([]string, 0, len(seen))
	for m := range seen {
		documented = append(documented, m)
	}
	sort.Strings(documented)
	require.Equal(t, exported, documented, "README.md's metrics table (first column) and the exported tocsin_* metrics differ")
}
