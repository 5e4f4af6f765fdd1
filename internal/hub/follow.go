package hub

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/tocsin/tocsin/internal/feed"
)

// ErrSlowConsumer is returned by Follower.Next when the follower's queue would have grown
// beyond its bound while entries were still waiting in it: the client does not read fast
// enough. (A batch handed to an empty queue is always accepted, so a queue holds at most
// its bound or one fan-out page, whichever is larger.) The follower is no longer
// registered; its client resumes from its last cursor.
var ErrSlowConsumer = errors.New("slow consumer: queue full")

// ErrClosed is returned by Follower.Next when the hub stopped.
var ErrClosed = errors.New("hub stopped")

// errResync is a follower's internal signal to read the feed again.
var errResync = errors.New("resync")

// BufferDefault is a follower's queue bound (in entries) when Follow is given none.
const BufferDefault = 4096

// Follower follows one recipient's feed after a cursor: first the backlog, read from the
// database a page at a time, then the live entries the hub hands over, with no gap and no
// duplicate at the seam. It registers with the hub under the same rule as a long poll —
// (after, seenHead) of a read that found the recipient's feed exhausted — so every entry
// above that read's head reaches its queue, and entries at or below it came from the read.
//
// A Follower is used by one goroutine; only the hub's hand-over runs concurrently.
type Follower struct {
	h         *Hub
	recipient string
	buffer    int

	epoch        string // the feed generation followed; "" until the first read
	pos          int64  // everything of recipient's up to pos has been read
	returned     int64  // everything of recipient's up to returned has been returned by Next
	resolved     bool   // returned is a real cursor (false only for an unread "oldest" start)
	checkHorizon bool
	pending      []feed.Event // the first page, read by Follow
	sub          *subscriber  // non-nil while registered with the hub

	mu    sync.Mutex
	queue []feed.Event
	err   error // errResync, ErrSlowConsumer or ErrClosed, set by the hub
	wake  chan struct{}
}

// Follow starts following recipient's feed after the cursor `after` (as in Poll: "" = the
// oldest retained entry, "now" = only what comes next). It reads the first page at once,
// so that a malformed or expired cursor is refused (feed.ErrCursorMalformed,
// feed.ErrCursorExpired) before the caller commits to a response. buffer bounds the live
// entries queued for a client that has not taken them yet (BufferDefault when <= 0).
// Close the follower when done.
func (h *Hub) Follow(ctx context.Context, recipient, after string, buffer int) (*Follower, error) {
	if buffer <= 0 {
		buffer = BufferDefault
	}
	f := &Follower{h: h, recipient: recipient, buffer: buffer, wake: make(chan struct{}, 1)}
	switch after {
	case "":
	case "now":
		st, err := h.store.FeedState(ctx)
		if err != nil {
			return nil, err
		}
		f.epoch, f.pos, f.returned, f.resolved, f.checkHorizon = st.Epoch, st.Head, st.Head, true, true
	default:
		c, err := feed.ParseCursor(after)
		if err != nil {
			return nil, err
		}
		f.epoch, f.pos, f.returned, f.resolved, f.checkHorizon = c.Epoch, c.Position, c.Position, true, true
	}
	events, err := f.catchUp(ctx)
	if err != nil {
		return nil, err
	}
	if len(events) == 0 {
		f.returned, f.resolved = f.pos, true // read up to the head, nothing to return
	}
	f.pending = events
	return f, nil
}

// Cursor returns the cursor of everything Next has returned so far: resuming from it
// loses nothing. It is "" while following from the oldest entry before anything was
// returned.
func (f *Follower) Cursor() string {
	if !f.resolved {
		return ""
	}
	return feed.Cursor{Epoch: f.epoch, Position: f.returned}.String()
}

// Wake returns a channel that receives when Next may have something new. Call Next first:
// when Next returns no events, wait on Wake (and anything else) and call Next again.
func (f *Follower) Wake() <-chan struct{} { return f.wake }

// Next returns the next entries: a page of the backlog, or the live entries queued since
// the last call. It returns no events (and no error) when there is nothing yet: wait on
// Wake. Errors: ErrSlowConsumer, ErrClosed, feed.ErrCursorExpired (the feed was reset or
// pruned past the follower), context and database errors. After an error, Close.
func (f *Follower) Next(ctx context.Context) ([]feed.Event, error) {
	events, err := f.next(ctx)
	if len(events) > 0 {
		f.returned, f.resolved = f.pos, true
	}
	return events, err
}

func (f *Follower) next(ctx context.Context) ([]feed.Event, error) {
	if f.pending != nil {
		events := f.pending
		f.pending = nil
		return events, nil
	}
	if f.sub == nil {
		return f.catchUp(ctx)
	}
	f.mu.Lock()
	events, err := f.queue, f.err
	f.queue = nil
	f.mu.Unlock()
	if err != nil && !errors.Is(err, errResync) {
		return nil, err
	}
	if len(events) > 0 {
		f.pos = events[len(events)-1].Position
		if err != nil {
			// The hub dropped the registration; what it queued before is still ours.
			f.mu.Lock()
			f.err = err
			f.mu.Unlock()
		}
		return events, nil
	}
	if err != nil { // resync: read the feed again
		f.mu.Lock()
		f.err = nil
		f.mu.Unlock()
		f.sub = nil
		return f.catchUp(ctx)
	}
	return nil, nil
}

// Close unregisters the follower.
func (f *Follower) Close() {
	if f.sub != nil {
		f.h.unsubscribe(f.sub)
		f.sub = nil
	}
}

// catchUp reads the next backlog page. When the page exhausts the recipient's feed up to
// the read's head, it registers with the hub, so that live entries queue while the caller
// writes the page out; when the hub has already moved past that head, it reads again.
func (f *Follower) catchUp(ctx context.Context) ([]feed.Event, error) {
	limit := f.h.cfg.PageLimit
	for {
		events, st, horizon, err := f.h.store.FeedListAfter(ctx, f.recipient, f.pos, limit)
		if err != nil {
			return nil, err
		}
		if f.epoch == "" {
			f.epoch = st.Epoch
		}
		if st.Epoch != f.epoch || f.pos > st.Head || (f.checkHorizon && f.pos < horizon) {
			return nil, fmt.Errorf("%w: %q", feed.ErrCursorExpired, feed.Cursor{Epoch: f.epoch, Position: f.pos}.String())
		}
		f.checkHorizon = true
		if len(events) == limit {
			f.pos = events[len(events)-1].Position
			return events, nil
		}
		// Nothing of recipient's lies in (last entry, head]: the feed is read up to head.
		f.pos = st.Head
		after := st.Head
		s, ended := f.h.subscribe(f.recipient, after, st.Head, 0, f)
		if ended {
			return nil, ErrClosed
		}
		if s != nil {
			f.sub = s
			return events, nil
		}
		if len(events) > 0 {
			return events, nil // the next call reads again from here
		}
	}
}

// push queues events for the follower; it runs under the hub's lock. It returns false when
// entries are still queued and the queue would grow beyond its bound: the follower is then failed with ErrSlowConsumer and the hub
// must drop its registration.
func (f *Follower) push(events []feed.Event) bool {
	f.mu.Lock()
	// A follower that has taken everything is keeping up, whatever the batch's size.
	ok := len(f.queue) == 0 || len(f.queue)+len(events) <= f.buffer
	if ok {
		f.queue = append(f.queue, events...)
	} else {
		f.queue, f.err = nil, ErrSlowConsumer
	}
	f.mu.Unlock()
	f.signal()
	return ok
}

// fail records why the hub dropped the follower's registration.
func (f *Follower) fail(err error) {
	f.mu.Lock()
	if f.err == nil || errors.Is(f.err, errResync) {
		f.err = err
	}
	f.mu.Unlock()
	f.signal()
}

func (f *Follower) signal() {
	select {
	case f.wake <- struct{}{}:
	default:
	}
}
