package feed

import (
	"fmt"
	"strconv"
	"strings"
)

// Cursor is a position in one feed generation.
type Cursor struct {
	Epoch    string
	Position int64
}

// String renders the cursor as clients see it: opaque, URL-safe.
func (c Cursor) String() string { return c.Epoch + "-" + strconv.FormatInt(c.Position, 10) }

// ParseCursor parses a cursor string made by Cursor.String.
func ParseCursor(s string) (Cursor, error) {
	epoch, pos, ok := strings.Cut(s, "-")
	// One spelling per position: no sign, no leading zero (Cursor.String writes neither).
	if !ok || !validEpoch(epoch) || pos == "" || len(pos) > 19 || (len(pos) > 1 && pos[0] == '0') {
		return Cursor{}, fmt.Errorf("%w: %q", ErrCursorMalformed, truncate(s))
	}
	for _, r := range pos {
		if r < '0' || r > '9' {
			return Cursor{}, fmt.Errorf("%w: %q", ErrCursorMalformed, truncate(s))
		}
	}
	n, err := strconv.ParseInt(pos, 10, 64)
	if err != nil {
		return Cursor{}, fmt.Errorf("%w: %q", ErrCursorMalformed, truncate(s))
	}
	return Cursor{Epoch: epoch, Position: n}, nil
}

func validEpoch(s string) bool {
	if len(s) < 4 || len(s) > 32 {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9') {
			return false
		}
	}
	return true
}

func truncate(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}
