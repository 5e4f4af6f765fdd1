package hub

import (
	"context"
	"fmt"
	"time"

	"github.com/tocsin/tocsin/internal/feed"
)

// Poll returns recipient's entries after the cursor `after` ("" = the oldest retained entry,
// "now" = only what comes next), at most limit, waiting up to wait for the first one. The
// returned cursor is what the client sends next: the last entry's id, the unchanged cursor
// when nothing came, or a concrete cursor at the head when after was "" or "now".
//
// Each call reads the database once, plus once more per resync; while it waits it costs
// nothing but a map entry. After EndWaits, a long poll from a client's own cursor reads
// nothing.
func (h *Hub) Poll(ctx context.Context, recipient, after string, limit int, wait time.Duration) ([]feed.Event, string, error) {
	a, err := feed.ResolveAfter(ctx, h.store, after)
	if err != nil {
		return nil, "", err
	}
	// A client's own cursor comes back unchanged when nothing came; "" and "now" become a
	// cursor at the head of the read that found nothing.
	atHead := after == "" || after == "now"
	if wait > 0 && !atHead && h.waitsEnded() {
		// The node is shutting down (EndWaits): answer at once, without a read, as if the
		// wait had elapsed before anything came. The client asks again from the same
		// cursor, on another connection (the answer closes this one), so nothing is lost,
		// and a drain costs no query per long-polling client, however many reconnect.
		return nil, after, nil
	}

	var timeout <-chan time.Time
	if wait > 0 {
		t := time.NewTimer(wait)
		defer t.Stop()
		timeout = t.C
	}
	for {
		events, st, horizon, err := h.store.FeedListAfter(ctx, recipient, a.Position, limit)
		if err != nil {
			return nil, "", err
		}
		if a, err = a.Check(st, horizon); err != nil {
			return nil, "", err
		}
		if len(events) > 0 {
			return events, events[len(events)-1].ID, nil
		}
		if atHead {
			// Nothing of recipient's is at or below the head this read saw.
			a.Position, atHead = st.Head, false
		}
		cursor := a.Cursor().String()
		if timeout == nil {
			return nil, cursor, nil
		}
		s, ended := h.subscribe(recipient, a.Position, st.Head, limit, nil)
		if ended {
			return nil, cursor, nil // the node is shutting down: answer as if the wait elapsed
		}
		if s == nil {
			continue // the hub moved past our read: read again
		}
		select {
		case d, ok := <-s.ch:
			if !ok {
				return nil, cursor, nil // the node is shutting down
			}
			if d.resync {
				continue
			}
			if err := sameGeneration(d.events, a); err != nil {
				return nil, "", err
			}
			return d.events, d.events[len(d.events)-1].ID, nil
		case <-timeout:
			h.unsubscribe(s)
			select {
			case d, ok := <-s.ch:
				if ok && !d.resync {
					if err := sameGeneration(d.events, a); err != nil {
						return nil, "", err
					}
					return d.events, d.events[len(d.events)-1].ID, nil
				}
			default:
			}
			return nil, cursor, nil
		case <-ctx.Done():
			h.unsubscribe(s)
			return nil, "", ctx.Err()
		}
	}
}

// sameGeneration returns feed.ErrCursorExpired when the entries handed over belong to
// another feed generation than the read a waiter registered after: the epoch changed while
// it waited (a slot recreated, records lost upstream, a diverged history), so entries may
// be missing between its cursor and these, and it must refetch (410), never jump silently
// into the new generation.
func sameGeneration(events []feed.Event, a feed.After) error {
	for _, e := range events {
		c, err := feed.ParseCursor(e.ID)
		if err != nil || c.Epoch != a.Epoch {
			return fmt.Errorf("%w: %q (the feed's generation changed while waiting)", feed.ErrCursorExpired, a.Cursor().String())
		}
	}
	return nil
}

// waitsEnded reports whether EndWaits was called.
func (h *Hub) waitsEnded() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.waitsEnd
}
