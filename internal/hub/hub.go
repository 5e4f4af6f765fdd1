// Package hub knows who is waiting on this node and hands each of them its new feed
// entries. It turns the doorbell's "the head moved" into deliveries with one database read
// per batch for the whole node, whatever the number of waiting clients.
//
// Delivery guarantee: a subscriber registered with (after, seenHead) — meaning "I read my
// feed up to seenHead and found nothing after `after`" — receives every one of its entries
// above seenHead, in position order, or is told to read again (a resync). Registration is
// refused when the hub has already moved past seenHead, so no entry can fall between the
// subscriber's own read and the hub's.
//
// Idle is free: while nobody waits, a ring only moves a number; with waiters, the node
// reads the new range once (filtered to its waiting recipients) and fans it out in memory.
// A fallback timer looks the head up once per FallbackInterval while anyone waits, so a lost
// NOTIFY delays a delivery by at most that long.
//
// The hub applies no feed rule of its own: resolving `after`, the epoch, head and
// retention checks and the 410 decision are feed.ResolveAfter and feed.After.Check, the
// same for short polls, long polls and streams.
//
// Two kinds of waiters share that machinery: a long poll (Poll) waits once for its first
// entries; a Follower (Follow, for streams) stays registered and receives every batch into
// a bounded queue. A follower whose queue would overflow is dropped and told so
// (feed.ErrSlowConsumer): the hub never blocks on, or buffers without bound for, a slow client.
package hub

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tocsin/tocsin/internal/feed"
)

// Config configures a Hub.
type Config struct {
	// FallbackInterval is how often the head is looked up while anyone waits, in case a
	// doorbell was lost.
	FallbackInterval time.Duration
	// PageLimit is the most entries one fan-out read returns.
	PageLimit int
	// RecipientFilterMax is the most waiting recipients a fan-out read names. With more,
	// the read takes every entry of the range and the hub picks its waiters' in memory:
	// matching each row against thousands of names costs the database more than the rows
	// of other recipients, and the list itself would be rebuilt and sent for every batch.
	RecipientFilterMax int
}

// Defaults.
const (
	FallbackIntervalDefault   = time.Second
	PageLimitDefault          = 1000
	RecipientFilterMaxDefault = 64
)

// Store is what the hub reads from the feed (a *feed.Store). The hub's delivery guarantee
// rests on what each method guarantees:
type Store interface {
	// FeedState returns the feed's generation and head. Every entry at or below the head is
	// committed: any read that starts after FeedState returns sees all of them.
	FeedState(ctx context.Context) (feed.State, error)
	// FeedListAfter returns up to limit of recipient's entries with position > after, in
	// position order, together with the feed state and the recipient's retention horizon
	// (the highest position retention removed from its feed, 0 when none), all from one
	// snapshot: unless limit entries came back, the result holds every entry of recipient
	// in (after, head]. That is what lets a reader register with (after, head) and be sure
	// nothing falls between its read and the hub's next fan-out.
	FeedListAfter(ctx context.Context, recipient string, after int64, limit int) ([]feed.Event, feed.State, int64, error)
	// FeedListRange returns the entries of recipients (of every recipient when recipients
	// is nil) with from < position <= to, in position order, at most limit: unless limit
	// entries came back, all of them. The hub
	// only asks for ranges below a head it learned from FeedState or the doorbell (which
	// rings after the batch committed), so every entry of the range is visible.
	FeedListRange(ctx context.Context, from, to int64, recipients []string, limit int) ([]feed.Event, error)
}

// Hub fans feed entries out to this node's waiting clients.
type Hub struct {
	cfg   Config
	store Store
	log   *slog.Logger

	rung     chan struct{} // capacity 1: coalesces rings
	ringHead atomic.Int64  // highest head announced by the doorbell
	lookup   atomic.Bool   // the head is unknown (reconnect): look it up

	mu       sync.Mutex
	head     int64 // every entry at or below head has been fanned out
	gen      uint64
	subs     map[string]map[*subscriber]struct{}
	n        int
	waitsEnd bool // EndWaits was called: long polls answer at once
	stopped  bool // Run returned: nobody is served any more

	// ReadFunc, when set, is called after each fan-out read (tests count reads with it).
	ReadFunc func(events int)
}

type subscriber struct {
	recipient string
	after     int64
	seenHead  int64
	limit     int
	gen       uint64
	ch        chan delivery // one-shot waiters (Poll)
	follower  *Follower     // persistent waiters (Follow)
}

type delivery struct {
	events []feed.Event
	resync bool
}

func (c *Config) withDefaults() {
	if c.FallbackInterval <= 0 {
		c.FallbackInterval = FallbackIntervalDefault
	}
	if c.PageLimit <= 0 {
		c.PageLimit = PageLimitDefault
	}
	if c.RecipientFilterMax <= 0 {
		c.RecipientFilterMax = RecipientFilterMaxDefault
	}
}

// New returns a Hub.
func New(store Store, cfg Config, log *slog.Logger) *Hub {
	cfg.withDefaults()
	return &Hub{cfg: cfg, store: store, log: log, rung: make(chan struct{}, 1),
		subs: map[string]map[*subscriber]struct{}{}}
}

// Ring tells the hub the feed's head is now at least head; 0 means "unknown, look it up".
// It never blocks; it is the doorbell's RingFunc.
func (h *Hub) Ring(head int64) {
	if head == 0 {
		h.lookup.Store(true)
	}
	for {
		cur := h.ringHead.Load()
		if head <= cur || h.ringHead.CompareAndSwap(cur, head) {
			break
		}
	}
	select {
	case h.rung <- struct{}{}:
	default:
	}
}

// Waiting returns how many clients wait on this node.
func (h *Hub) Waiting() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.n
}

// Run fans out until ctx ends. It starts from the feed's current head: entries that were
// sequenced before this node started belong to clients' own reads, never to a fan-out.
func (h *Hub) Run(ctx context.Context) error {
	h.startAtHead(ctx)
	fallback := time.NewTicker(h.cfg.FallbackInterval)
	defer fallback.Stop()
	for {
		select {
		case <-ctx.Done():
			h.closeAll()
			return nil
		case <-h.rung:
		case <-fallback.C:
			if h.Waiting() == 0 {
				continue
			}
			h.lookup.Store(true)
		}
		if err := h.advance(ctx); err != nil && ctx.Err() == nil {
			h.log.Warn("hub could not read the feed; retrying at the next ring", slog.Any("error", err))
		}
	}
}

// startAtHead moves the hub's head to the feed's head, or to the lowest head a subscriber
// registered with if that is lower (so nobody already registered misses an entry). Without
// it the first fan-out after a restart would page through the waiting clients' whole
// retained history. When the head cannot be read, the hub starts where it is and the floor
// in advance keeps that first read small anyway.
func (h *Hub) startAtHead(ctx context.Context) {
	st, err := h.store.FeedState(ctx)
	if err != nil {
		if ctx.Err() == nil {
			h.log.Warn("hub could not read the feed's head at start", slog.Any("error", err))
		}
		h.lookup.Store(true)
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if start := h.floorLocked(st.Head); start > h.head {
		h.head = start
	}
}

// floorLocked returns the lowest of limit and the heads the current subscribers registered
// with: every subscriber read its own feed up to its head, so no fan-out owes anyone an
// entry at or below the result.
func (h *Hub) floorLocked(limit int64) int64 {
	for _, set := range h.subs {
		for s := range set {
			limit = min(limit, s.seenHead)
		}
	}
	return limit
}

func (h *Hub) advance(ctx context.Context) error {
	target := h.ringHead.Load()
	if h.Waiting() == 0 {
		// Nobody to serve: just remember how far the feed went. A later subscriber whose
		// read saw less is told to read again, one query.
		h.mu.Lock()
		if target > h.head {
			h.head = target
		}
		h.mu.Unlock()
		return nil
	}
	if h.lookup.Swap(false) {
		st, err := h.store.FeedState(ctx)
		if err != nil {
			h.lookup.Store(true)
			return err
		}
		if st.Head > target {
			target = st.Head
		}
		if st.Head < h.headNow() {
			// The feed went backwards: it was reset. Everyone reads again (and gets 410).
			h.reset(st.Head)
			return nil
		}
	}
	for {
		h.mu.Lock()
		if target <= h.head {
			h.mu.Unlock()
			return nil // nothing new: the fallback's usual answer costs nothing more
		}
		// Nobody waiting here is owed anything at or below the lowest head they read up to.
		if floor := h.floorLocked(target); floor > h.head {
			h.head = floor
		}
		from, gen := h.head, h.gen
		if target <= from {
			h.mu.Unlock()
			return nil
		}
		// Many waiting recipients: read the whole range (recipients stays nil).
		var recipients []string
		if len(h.subs) <= h.cfg.RecipientFilterMax {
			recipients = make([]string, 0, len(h.subs))
			for r := range h.subs {
				recipients = append(recipients, r)
			}
		}
		waiting := len(h.subs) > 0
		h.mu.Unlock()
		upTo := target
		var events []feed.Event
		if waiting {
			var err error
			events, err = h.store.FeedListRange(ctx, from, target, recipients, h.cfg.PageLimit)
			if err != nil {
				return err
			}
			if h.ReadFunc != nil {
				h.ReadFunc(len(events))
			}
			if len(events) == h.cfg.PageLimit {
				upTo = events[len(events)-1].Position
			}
		}
		h.deliver(events, upTo, gen, recipients == nil)
	}
}

func (h *Hub) headNow() int64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.head
}

// deliver hands events (every entry in (head, upTo] of the recipients known at generation
// gen, or of every recipient when all) to their subscribers and moves the head to upTo.
// After a read of some recipients, subscribers that arrived after it and saw less than
// upTo are told to read again; after a read of all, they are served like the others, since
// the read holds their entries too.
func (h *Hub) deliver(events []feed.Event, upTo int64, gen uint64, all bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	byRecipient := map[string][]feed.Event{}
	for _, e := range events {
		if _, ok := h.subs[e.Recipient]; ok {
			byRecipient[e.Recipient] = append(byRecipient[e.Recipient], e)
		}
	}
	if all {
		// Only the recipients with entries: a batch costs its entries, not the waiters.
		for recipient, mine := range byRecipient {
			for s := range h.subs[recipient] {
				h.handLocked(s, mine)
			}
		}
	} else {
		for recipient, set := range h.subs {
			mine := byRecipient[recipient]
			for s := range set {
				if s.gen > gen {
					if s.seenHead < upTo {
						h.removeLocked(s)
						s.resync()
					}
					continue
				}
				h.handLocked(s, mine)
			}
		}
	}
	if upTo > h.head {
		h.head = upTo
	}
}

// handLocked hands s its entries of mine (those after its position).
func (h *Hub) handLocked(s *subscriber, mine []feed.Event) {
	var out []feed.Event
	for _, e := range mine {
		if e.Position > s.after {
			out = append(out, e)
		}
	}
	if len(out) == 0 {
		return
	}
	if s.follower != nil {
		s.after = out[len(out)-1].Position
		if !s.follower.push(out) {
			h.removeLocked(s)
		}
		return
	}
	if s.limit > 0 && len(out) > s.limit {
		out = out[:s.limit]
	}
	h.removeLocked(s)
	s.ch <- delivery{events: out}
}

func (h *Hub) reset(head int64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.head = head
	h.ringHead.Store(head)
	for _, set := range h.subs {
		for s := range set {
			h.removeLocked(s)
			s.resync()
		}
	}
}

func (h *Hub) closeAll() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.stopped, h.waitsEnd = true, true
	for _, set := range h.subs {
		for s := range set {
			h.removeLocked(s)
			s.end()
		}
	}
}

// EndWaits answers every parked long poll now, and every later one at once, with an empty
// page and its unchanged cursor (as if its wait had elapsed). Followers are not affected.
// The API calls it when the node starts to shut down.
func (h *Hub) EndWaits() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.waitsEnd = true
	for _, set := range h.subs {
		for s := range set {
			if s.follower == nil {
				h.removeLocked(s)
				s.end()
			}
		}
	}
}

// resync tells s to read the feed again; s has been removed.
func (s *subscriber) resync() {
	if s.follower != nil {
		s.follower.fail(errResync)
		return
	}
	s.ch <- delivery{resync: true}
}

// end tells s that it will not be served; s has been removed.
func (s *subscriber) end() {
	if s.follower != nil {
		s.follower.fail(feed.ErrClosed)
		return
	}
	close(s.ch)
}

// subscribe registers a waiter: one-shot when f is nil, else f's persistent registration.
// It returns nil when the hub is already past seenHead (the caller must read again), and
// a closed subscriber's status through ended: true when no waiter is served any more
// (one-shot: EndWaits or shutdown; follower: shutdown).
func (h *Hub) subscribe(recipient string, after, seenHead int64, limit int, f *Follower) (s *subscriber, ended bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.stopped || (f == nil && h.waitsEnd) {
		return nil, true
	}
	if h.head > seenHead {
		return nil, false
	}
	h.gen++
	s = &subscriber{recipient: recipient, after: after, seenHead: seenHead, limit: limit, gen: h.gen,
		follower: f}
	if f == nil {
		s.ch = make(chan delivery, 1)
	}
	set := h.subs[recipient]
	if set == nil {
		set = map[*subscriber]struct{}{}
		h.subs[recipient] = set
	}
	set[s] = struct{}{}
	h.n++
	return s, false
}

// unsubscribe removes s if it is still registered.
func (h *Hub) unsubscribe(s *subscriber) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.subs[s.recipient][s]; ok {
		h.removeLocked(s)
	}
}

func (h *Hub) removeLocked(s *subscriber) {
	set := h.subs[s.recipient]
	delete(set, s)
	if len(set) == 0 {
		delete(h.subs, s.recipient)
	}
	h.n--
}
