// Package feed is the per-recipient, commit-ordered feed: its entries, its cursors and the
// queries that read it. The sequencer is the feed's only writer (see tocsin.sequence_batch).
//
// A cursor names a position in one feed generation (the epoch). Positions are global and
// handed out by one transaction at a time, so for a reader `position > cursor` never skips
// a committed entry and never repeats one.
package feed

import (
	"encoding/json"
	"time"
)

// Event is one feed entry as clients see it.
type Event struct {
	// Position is the entry's place in the feed; ID is its cursor string.
	Position  int64           `json:"-"`
	Recipient string          `json:"-"`
	ID        string          `json:"id"`
	Topic     string          `json:"topic"`
	Kind      string          `json:"kind"`
	Op        *string         `json:"op"`
	Table     *string         `json:"table"`
	Key       json.RawMessage `json:"key"`
	Data      json.RawMessage `json:"data"`
	Old       json.RawMessage `json:"old"`
	Changed   []string        `json:"changed"`
	// Group is the entry's group key (digests), nil (and absent from the JSON) otherwise.
	Group *string `json:"group,omitempty"`
	// Replaces is the ID of the entry this one supersedes (a digest that evolved: drop the
	// old one from view), nil otherwise.
	Replaces  *string   `json:"replaces,omitempty"`
	CreatedAt time.Time `json:"created_at"`
	// replacesPosition is Replaces before the epoch is known.
	replacesPosition *int64
}
