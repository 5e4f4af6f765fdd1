package hub

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"

	"github.com/tocsin/tocsin/internal/feed"
)

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

	read     feed.After   // everything of recipient's up to read.Position has been read
	returned int64        // everything of recipient's up to returned has been returned by Next
	resolved bool         // returned is a real cursor (false only for an unread "oldest" start)
	pending  []feed.Event // the first page, read by Follow
	sub      *subscriber  // non-nil while registered with the hub

	mu       sync.Mutex
	queue    []feed.Event
	err      error // errResync, feed.ErrSlowConsumer or feed.ErrClosed, set by the hub
	wake     chan struct{}
	wakeFunc atomic.Pointer[func()]
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
	a, err := feed.ResolveAfter(ctx, h.store, after)
	if err != nil {
		return nil, err
	}
	f.read, f.returned, f.resolved = a, a.Position, !a.Oldest()
	events, err := f.catchUp(ctx)
	if err != nil {
		return nil, err
	}
	if len(events) == 0 {
		f.returned, f.resolved = f.read.Position, true // read up to the head, nothing to return
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
	return feed.Cursor{Epoch: f.read.Epoch, Position: f.returned}.String()
}

// Wake returns a channel that receives when Next may have something new. Call Next first:
// when Next returns no events, wait on Wake (and anything else) and call Next again.
func (f *Follower) Wake() <-chan struct{} { return f.wake }

// SetWakeFunc sets a function called whenever Wake receives (nil: none), for a caller that
// waits without a goroutine. It runs under the hub's lock: it must return at once.
func (f *Follower) SetWakeFunc(fn func()) {
	if fn == nil {
		f.wakeFunc.Store(nil)
		return
	}
	f.wakeFunc.Store(&fn)
}

// Next returns the next entries: a page of the backlog, or the live entries queued since
// the last call. It returns no events (and no error) when there is nothing yet: wait on
// Wake. Errors: feed.ErrSlowConsumer, feed.ErrClosed, feed.ErrCursorExpired (the feed was reset or
// pruned past the follower), context and database errors. After an error, Close.
func (f *Follower) Next(ctx context.Context) ([]feed.Event, error) {
	events, err := f.next(ctx)
	if len(events) > 0 {
		f.returned, f.resolved = f.read.Position, true
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
		if err := sameGeneration(events, f.read); err != nil {
			return nil, err
		}
		f.read.Position = events[len(events)-1].Position
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
		events, st, horizon, err := f.h.store.FeedListAfter(ctx, f.recipient, f.read.Position, limit)
		if err != nil {
			return nil, err
		}
		if f.read, err = f.read.Check(st, horizon); err != nil {
			return nil, err
		}
		if len(events) == limit {
			f.read.Position = events[len(events)-1].Position
			return events, nil
		}
		// Nothing of recipient's lies in (last entry, head]: the feed is read up to head.
		f.read.Position = st.Head
		s, ended := f.h.subscribe(f.recipient, st.Head, st.Head, 0, f)
		if ended {
			return nil, feed.ErrClosed
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
// entries are still queued and the queue would grow beyond its bound: the follower is then failed with feed.ErrSlowConsumer and the hub
// must drop its registration.
func (f *Follower) push(events []feed.Event) bool {
	f.mu.Lock()
	// A follower that has taken everything is keeping up, whatever the batch's size.
	ok := len(f.queue) == 0 || len(f.queue)+len(events) <= f.buffer
	if ok {
		f.queue = append(f.queue, events...)
	} else {
		f.queue, f.err = nil, feed.ErrSlowConsumer
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
	if fn := f.wakeFunc.Load(); fn != nil {
		(*fn)()
	}
}
