package feed

import (
	"errors"
	"testing"
)

// FuzzParseCursor: a cursor either parses and prints back exactly as given (one spelling
// per position), or is ErrCursorMalformed; nothing panics.
func FuzzParseCursor(f *testing.F) {
	for _, s := range []string{"abcd-0", "fd011f7759-41", "abcd-01", "abcd--1", "abcd-+1", "now", "", "a-b-c",
		"abcd-9223372036854775807", "abcd-9223372036854775808", "ABCD-1", "abcd-١"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		c, err := ParseCursor(s)
		if err != nil {
			if !errors.Is(err, ErrCursorMalformed) {
				t.Fatalf("ParseCursor(%q): %v is not ErrCursorMalformed", s, err)
			}
			return
		}
		if c.String() != s {
			t.Fatalf("ParseCursor(%q) prints back as %q", s, c.String())
		}
		if c.Position < 0 {
			t.Fatalf("ParseCursor(%q): negative position %d", s, c.Position)
		}
	})
}
