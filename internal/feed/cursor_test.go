package feed

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestParseCursor(t *testing.T) {
	t.Parallel()
	for _, s := range []string{"abcd-0", "abcd-7", "fd011f7759-9223372036854775807"} {
		c, err := ParseCursor(s)
		require.NoError(t, err, s)
		require.Equal(t, s, c.String(), "a cursor has one spelling")
	}
	for _, s := range []string{"", "abcd", "abcd-", "abc-1", "ABCD-1", "abcd-+1", "abcd--1", "abcd-01", "abcd-00",
		"abcd- 1", "abcd-1 ", "abcd-9223372036854775808", "abcd-1-2", "abcd-0x1", "abcd-١"} {
		_, err := ParseCursor(s)
		require.ErrorIs(t, err, ErrCursorMalformed, "%q", s)
	}
}
