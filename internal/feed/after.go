package feed

import (
	"context"
	"fmt"
)

// After is where a reader of one recipient's feed stands: every entry of the recipient up
// to Position, in generation Epoch, has been read (or skipped on purpose, with "now").
//
// The zero After is the oldest retained entry (`after` omitted): it is bound to the
// generation of its first read, and no retention horizon applies to it, since it starts
// with what is retained.
type After struct {
	Epoch    string
	Position int64
}

// Oldest reports whether a is the zero After, not yet bound to a generation.
func (a After) Oldest() bool { return a.Epoch == "" }

// Cursor returns a as a cursor. It is meaningful once a is bound to a generation.
func (a After) Cursor() Cursor { return Cursor(a) }

// StateReader reads the feed's generation and head (a *Store is one).
type StateReader interface {
	FeedState(ctx context.Context) (State, error)
}

// ResolveAfter resolves a client's `after`, the same way for every transport:
//   - "" (omitted): the oldest retained entry, the zero After;
//   - "now": the feed's head, so that only what comes next is read (reads the feed state);
//   - anything else: a cursor Tocsin issued, or ErrCursorMalformed.
//
// A cursor is not checked against the feed here: Check does that with the first read.
func ResolveAfter(ctx context.Context, r StateReader, after string) (After, error) {
	switch after {
	case "":
		return After{}, nil
	case "now":
		st, err := r.FeedState(ctx)
		if err != nil {
			return After{}, err
		}
		return After{Epoch: st.Epoch, Position: st.Head}, nil
	default:
		c, err := ParseCursor(after)
		if err != nil {
			return After{}, err
		}
		return After(c), nil
	}
}

// Check decides whether a read of the recipient's feed after a.Position — which saw the
// feed state st and the recipient's retention horizon, in one snapshot — may be handed to
// the reader. It returns a bound to st's generation, or ErrCursorExpired (410) when:
//   - a belongs to another generation: the feed was reset or restored;
//   - a points past the head: it comes from a history that diverged;
//   - a lies below the horizon: retention removed some of the recipient's entries after
//     it, so the read would open a silent gap.
//
// A recipient who lost nothing to retention has horizon 0 and keeps a valid cursor,
// however old. The zero After takes st's generation and never expires.
func (a After) Check(st State, horizon int64) (After, error) {
	if a.Oldest() {
		return After{Epoch: st.Epoch, Position: a.Position}, nil
	}
	if a.Epoch != st.Epoch || a.Position > st.Head || a.Position < horizon {
		return a, fmt.Errorf("%w: %q", ErrCursorExpired, a.Cursor().String())
	}
	return a, nil
}

// EntryPosition returns the position of the entry whose id (a cursor) is id, for a reader of
// generation epoch: ErrCursorMalformed when id is not a cursor, ErrCursorExpired when it
// names an entry of another generation.
func EntryPosition(id, epoch string) (int64, error) {
	c, err := ParseCursor(id)
	if err != nil {
		return 0, err
	}
	if c.Epoch != epoch {
		return 0, fmt.Errorf("%w: %q belongs to another feed generation", ErrCursorExpired, id)
	}
	return c.Position, nil
}
