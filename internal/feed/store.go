package feed

import (
	"context"
	_ "embed"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tocsin/tocsin/internal/sqlfile"
)

// Store reads the feed. Every read is a single statement, so the rows it returns and the
// head it reports come from one snapshot: no entry at or below that head is ever missing.
type Store struct {
	pool *pgxpool.Pool
}

// NewStore returns a Store reading through pool.
func NewStore(pool *pgxpool.Pool) *Store { return &Store{pool: pool} }

// State is the feed's generation and high-water mark.
type State struct {
	Epoch string
	Head  int64
}

// Cursor returns the cursor at position pos of this generation.
func (s State) Cursor(pos int64) Cursor { return Cursor{Epoch: s.Epoch, Position: pos} }

var (
	//go:embed queries.sql
	queriesSQL          string
	queries             = sqlfile.Parse("feed/queries.sql", queriesSQL)
	feedStateSQL        = queries.Get("feed_state")
	feedListAfterSQL    = queries.Get("feed_list_after")
	feedListRangeSQL    = queries.Get("feed_list_range")
	feedListRangeAllSQL = queries.Get("feed_list_range_all")
)

// FeedState reads the feed's generation and head.
func (s *Store) FeedState(ctx context.Context) (State, error) {
	var st State
	err := s.pool.QueryRow(ctx, feedStateSQL).Scan(&st.Epoch, &st.Head)
	if err != nil {
		return State{}, fmt.Errorf("reading feed state: %w", err)
	}
	return st, nil
}

// FeedListAfter returns up to limit of recipient's entries after position after, in
// position order, with the feed state of the same snapshot. Horizon is the highest position
// of recipient's entries that retention removed (0 when none): a cursor below it has a gap.
func (s *Store) FeedListAfter(ctx context.Context, recipient string, after int64, limit int) ([]Event, State, int64, error) {
	rows, err := s.pool.Query(ctx, feedListAfterSQL, recipient, after, limit)
	if err != nil {
		return nil, State{}, 0, fmt.Errorf("reading feed of %q after %d: %w", recipient, after, err)
	}
	var (
		st      State
		horizon int64
		events  []Event
	)
	for rows.Next() {
		var (
			e   Event
			pos *int64
			rcp *string
			top *string
			knd *string
			at  *time.Time
		)
		if err := rows.Scan(&st.Epoch, &st.Head, &horizon, &pos, &rcp, &top, &knd, &e.Op, &e.Table,
			&e.Key, &e.Data, &e.Old, &e.Changed, &e.Group, &e.replacesPosition, &at); err != nil {
			rows.Close()
			return nil, State{}, 0, fmt.Errorf("reading feed of %q: %w", recipient, err)
		}
		if pos == nil { // the LEFT JOIN found no entry
			continue
		}
		e.Position, e.Recipient, e.Topic, e.Kind, e.CreatedAt = *pos, *rcp, *top, *knd, *at
		events = append(events, e)
	}
	if err := rows.Err(); err != nil {
		return nil, State{}, 0, fmt.Errorf("reading feed of %q: %w", recipient, err)
	}
	for i := range events {
		events[i].setIDs(st.Epoch)
	}
	return events, st, horizon, nil
}

// FeedListRange returns the entries with from < position <= to of the given recipients (of
// every recipient when recipients is nil), in position order, at most limit. It is the
// hub's one read per batch for all its clients.
func (s *Store) FeedListRange(ctx context.Context, from, to int64, recipients []string, limit int) ([]Event, error) {
	sql, args := feedListRangeSQL, []any{from, to, recipients, limit}
	if recipients == nil {
		sql, args = feedListRangeAllSQL, []any{from, to, limit}
	}
	rows, err := s.pool.Query(ctx, sql, args...)
	if err != nil {
		return nil, fmt.Errorf("reading feed range (%d, %d]: %w", from, to, err)
	}
	events, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (Event, error) {
		var (
			e     Event
			epoch string
		)
		err := row.Scan(&e.Position, &e.Recipient, &e.Topic, &e.Kind, &e.Op, &e.Table, &e.Key, &e.Data,
			&e.Old, &e.Changed, &e.Group, &e.replacesPosition, &e.CreatedAt, &epoch)
		e.setIDs(epoch)
		return e, err
	})
	if err != nil {
		return nil, fmt.Errorf("reading feed range (%d, %d]: %w", from, to, err)
	}
	return events, nil
}

// setIDs sets ID and Replaces, which are cursors of epoch.
func (e *Event) setIDs(epoch string) {
	e.ID = Cursor{Epoch: epoch, Position: e.Position}.String()
	if e.replacesPosition != nil {
		r := Cursor{Epoch: epoch, Position: *e.replacesPosition}.String()
		e.Replaces = &r
	}
}

// ScanEvent scans a feed entry's columns (in queries.sql's order), then extra, into an Event whose IDs are cursors of
// epoch. It serves readers of the feed outside this package (the inbox).
func ScanEvent(row pgx.Row, epoch string, extra ...any) (Event, error) {
	var e Event
	dest := append([]any{&e.Position, &e.Recipient, &e.Topic, &e.Kind, &e.Op, &e.Table, &e.Key, &e.Data,
		&e.Old, &e.Changed, &e.Group, &e.replacesPosition, &e.CreatedAt}, extra...)
	if err := row.Scan(dest...); err != nil {
		return Event{}, err
	}
	e.setIDs(epoch)
	return e, nil
}
