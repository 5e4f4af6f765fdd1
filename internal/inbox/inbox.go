// Package inbox keeps the read state of the feed entries that belong in an inbox
// (kinds notification, digest and message) and their per-recipient counts.
//
// The sequencer creates an entry's inbox row in the batch that gives it its feed position.
// Statement triggers keep tocsin.inbox_count exact in every transaction that changes the
// inbox, so Counts is one primary-key read and never drifts from a recount.
//
// Every state change that changes something writes one outbox row of kind `inbox` in the
// same transaction; the sequencer stamps into it the recipient's counts as of its own
// feed position, so every client of the recipient (other tabs, other devices) sees the
// change and the new badge numbers in feed order. A change that changes nothing writes
// nothing: marking is idempotent.
package inbox

import (
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tocsin/tocsin/internal/feed"
	"github.com/tocsin/tocsin/internal/outbox"
	"github.com/tocsin/tocsin/internal/sqlfile"
)

// Filter selects entries by state.
type Filter string

// Filters.
const (
	FilterUnread   Filter = "unread"   // not read, not archived
	FilterUnseen   Filter = "unseen"   // not seen, not archived
	FilterAll      Filter = "all"      // not archived
	FilterArchived Filter = "archived" // archived
)

// Action is a state change.
type Action string

// Actions. Reading also marks seen; archiving also marks seen.
const (
	ActionSeen    Action = "seen"
	ActionRead    Action = "read"
	ActionArchive Action = "archive"
)

// ErrInvalid is returned (wrapped) for an unknown filter or action, or a selection that
// names neither ids nor up_to.
var ErrInvalid = errors.New("invalid inbox request")

// Entry is a feed entry with its inbox state.
type Entry struct {
	feed.Event
	SeenAt     *time.Time `json:"seen_at"`
	ReadAt     *time.Time `json:"read_at"`
	ArchivedAt *time.Time `json:"archived_at"`
}

// Counts are a recipient's badge numbers.
type Counts struct {
	Unread int `json:"unread"`
	Unseen int `json:"unseen"`
}

// Selection names the entries a state change applies to: IDs (entry ids, which are
// cursors) or every entry up to and including UpTo.
type Selection struct {
	IDs  []string
	UpTo string
}

// Store reads and changes inbox state.
type Store struct {
	pool     *pgxpool.Pool
	wakeFunc func()
}

// NewStore returns a Store. wakeFunc, when set, is called after a state change committed
// (the local sequencer's Wake).
func NewStore(pool *pgxpool.Pool, wakeFunc func()) *Store {
	return &Store{pool: pool, wakeFunc: wakeFunc}
}

var (
	//go:embed queries.sql
	queriesSQL   string
	queries      = sqlfile.Parse("inbox/queries.sql", queriesSQL)
	countsSQL    = queries.Get("inbox_counts")
	feedEpochSQL = queries.Get("feed_epoch")
	listSQL      = map[Filter]string{
		FilterUnread:   queries.Get("inbox_list_unread"),
		FilterUnseen:   queries.Get("inbox_list_unseen"),
		FilterAll:      queries.Get("inbox_list_all"),
		FilterArchived: queries.Get("inbox_list_archived"),
	}
	markSQL = map[Action]string{
		ActionSeen:    queries.Get("inbox_mark_seen"),
		ActionRead:    queries.Get("inbox_mark_read"),
		ActionArchive: queries.Get("inbox_mark_archive"),
	}
)

// List returns up to limit of recipient's entries matching filter, newest first, older
// than the entry before ("" = from the newest). next is the cursor of the next page ("" at
// the end). A before cursor of another feed generation is feed.ErrCursorExpired.
func (s *Store) List(ctx context.Context, recipient string, filter Filter, before string, limit int) (entries []Entry, next string, err error) {
	list, ok := listSQL[filter]
	if !ok {
		return nil, "", fmt.Errorf("%w: state %q", ErrInvalid, filter)
	}
	epoch, err := s.epoch(ctx)
	if err != nil {
		return nil, "", err
	}
	beforePos := int64(1<<63 - 1)
	if before != "" {
		if beforePos, err = feed.EntryPosition(before, epoch); err != nil {
			return nil, "", err
		}
	}
	rows, err := s.pool.Query(ctx, list, recipient, beforePos, limit+1)
	if err != nil {
		return nil, "", fmt.Errorf("listing the inbox of %q: %w", recipient, err)
	}
	entries, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (Entry, error) {
		var e Entry
		ev, err := feed.ScanEvent(r, epoch, &e.SeenAt, &e.ReadAt, &e.ArchivedAt)
		e.Event = ev
		return e, err
	})
	if err != nil {
		return nil, "", fmt.Errorf("listing the inbox of %q: %w", recipient, err)
	}
	if len(entries) > limit {
		entries = entries[:limit]
		next = entries[limit-1].ID
	}
	return entries, next, nil
}

// Counts returns recipient's counts.
func (s *Store) Counts(ctx context.Context, recipient string) (Counts, error) {
	return counts(ctx, s.pool, recipient)
}

type queryRower interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

func counts(ctx context.Context, q queryRower, recipient string) (Counts, error) {
	var c Counts
	err := q.QueryRow(ctx, countsSQL, recipient).Scan(&c.Unread, &c.Unseen)
	if err != nil {
		return Counts{}, fmt.Errorf("reading the inbox counts of %q: %w", recipient, err)
	}
	return c, nil
}

// Mark applies action to recipient's selected entries and returns how many changed and
// the counts after the change. Entries already in that state, or not recipient's, are
// left alone.
func (s *Store) Mark(ctx context.Context, recipient string, action Action, sel Selection) (changed int, c Counts, err error) {
	mark, ok := markSQL[action]
	if !ok {
		return 0, Counts{}, fmt.Errorf("%w: action %q", ErrInvalid, action)
	}
	if (len(sel.IDs) == 0) == (sel.UpTo == "") {
		return 0, Counts{}, fmt.Errorf("%w: give either ids or up_to", ErrInvalid)
	}
	epoch, err := s.epoch(ctx)
	if err != nil {
		return 0, Counts{}, err
	}
	var (
		positions []int64
		upTo      int64 = -1
	)
	for _, id := range sel.IDs {
		p, err := feed.EntryPosition(id, epoch)
		if err != nil {
			return 0, Counts{}, err
		}
		positions = append(positions, p)
	}
	if sel.UpTo != "" {
		if upTo, err = feed.EntryPosition(sel.UpTo, epoch); err != nil {
			return 0, Counts{}, err
		}
	}
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, mark, recipient, positions, upTo)
		if err != nil {
			return err
		}
		done, err := pgx.CollectRows(rows, pgx.RowTo[int64])
		if err != nil {
			return err
		}
		if changed = len(done); changed == 0 {
			c, err = counts(ctx, tx, recipient)
			return err
		}
		event := map[string]any{"action": action}
		if sel.UpTo != "" {
			event["up_to"] = sel.UpTo
		} else {
			ids := make([]string, len(done))
			for i, p := range done {
				ids[i] = feed.Cursor{Epoch: epoch, Position: p}.String()
			}
			event["ids"] = ids
		}
		data, err := json.Marshal(event)
		if err != nil {
			return err
		}
		if err := outbox.InsertTx(ctx, tx, []outbox.Row{{Recipient: recipient, Topic: "inbox", Kind: "inbox", Data: data}}); err != nil {
			return err
		}
		c, err = counts(ctx, tx, recipient)
		return err
	})
	if err != nil {
		return 0, Counts{}, fmt.Errorf("marking %s in the inbox of %q: %w", action, recipient, err)
	}
	if changed > 0 && s.wakeFunc != nil {
		s.wakeFunc()
	}
	return changed, c, nil
}

func (s *Store) epoch(ctx context.Context) (string, error) {
	var epoch string
	if err := s.pool.QueryRow(ctx, feedEpochSQL).Scan(&epoch); err != nil {
		return "", fmt.Errorf("reading the feed epoch: %w", err)
	}
	return epoch, nil
}
