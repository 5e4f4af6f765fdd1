package httpapi

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestParseOrigins(t *testing.T) {
	t.Parallel()
	got, err := ParseOrigins(" https://App.example , http://localhost:5173,")
	require.NoError(t, err)
	require.Equal(t, []string{"https://app.example", "http://localhost:5173"}, got)

	for _, bad := range []string{"*", "https://*.example", "https://app.example/", "app.example",
		"ftp://app.example", "https://user@app.example", "https://app.example?x=1"} {
		_, err := ParseOrigins(bad)
		require.Error(t, err, bad)
	}
}
