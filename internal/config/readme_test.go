package config

import (
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// The README's configuration reference is this package's, verbatim: a setting added here
// without documentation fails the build.
func TestREADMEListsEverySetting(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	require.NoError(t, err)
	require.True(t, strings.Contains(string(readme), Reference()),
		"README.md's configuration table is stale; replace it with:\n%s", Reference())
}
