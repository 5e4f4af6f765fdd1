package app_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tocsin/tocsin/internal/retention"
)

// One delivery helper per transport, all driven by the same scenarios, so that short
// polling, long polling and SSE can never drift apart.

const deliveryTimeout = 20 * time.Second

// received is one delivered event: its id and the "n" of its published payload.
type received struct {
	ID string
	N  int
}

// transport reads a recipient's feed one way.
type transport struct {
	name string
	// collect reads n events after `after` (resume as that transport resumes) and returns
	// them with the cursor to continue from.
	collect func(t *testing.T, b *bundle, tok, after string, n int) ([]received, string)
	// status is the HTTP status of a first request with cursor after.
	status func(t *testing.T, b *bundle, tok, after string) int
}

func transports() []transport {
	poll := func(wait int) func(t *testing.T, b *bundle, tok, after string, n int) ([]received, string) {
		return func(t *testing.T, b *bundle, tok, after string, n int) ([]received, string) {
			var got []received
			deadline := time.Now().Add(deliveryTimeout)
			tick := time.NewTicker(10 * time.Millisecond) // a short-polling client's interval
			defer tick.Stop()
			for len(got) < n {
				require.False(t, time.Now().After(deadline), "got %d of %d events", len(got), n)
				limit := min(7, n-len(got))
				status, p := getFeed(t, http.DefaultClient, b.base, tok, fmt.Sprintf("after=%s&limit=%d&wait=%d", after, limit, wait))
				require.Equal(t, http.StatusOK, status)
				for _, e := range p.Events {
					got = append(got, received{ID: e.ID, N: payloadN(t, e.Data)})
				}
				after = p.Cursor
				if wait == 0 && len(p.Events) == 0 {
					<-tick.C
				}
			}
			return got, after
		}
	}
	pollStatus := func(t *testing.T, b *bundle, tok, after string) int {
		status, _ := getFeed(t, http.DefaultClient, b.base, tok, "after="+after)
		return status
	}
	return []transport{
		{name: "ShortPoll", collect: poll(0), status: pollStatus},
		{name: "LongPoll", collect: poll(5), status: pollStatus},
		{name: "SSE", collect: collectSSE, status: func(t *testing.T, b *bundle, tok, after string) int {
			s := openStream(t, b.base, "after="+after, bearer(tok))
			defer s.Close()
			return s.Resp.StatusCode
		}},
	}
}

// collectSSE resumes with Last-Event-ID (as EventSource does on reconnection) when it has
// a cursor, and with after= otherwise.
func collectSSE(t *testing.T, b *bundle, tok, after string, n int) ([]received, string) {
	h := bearer(tok)
	query := ""
	if after != "" && after != "now" {
		h.Set("Last-Event-ID", after)
		query = "after=now" // must be overridden by the header
	} else if after == "now" {
		query = "after=now"
	}
	s := openStream(t, b.base, query, h)
	defer s.Close()
	require.Equal(t, http.StatusOK, s.Resp.StatusCode, s.Raw())
	var got []received
	for len(got) < n {
		e, ok := s.NextEvent(deliveryTimeout)
		require.True(t, ok, "got %d of %d events", len(got), n)
		require.Equal(t, "message", e.Event, "kind of a published message")
		got = append(got, received{ID: e.ID, N: payloadN(t, json.RawMessage(e.Data))})
	}
	// The id of the last event taken (the parser may have read further).
	return got, got[len(got)-1].ID
}

// payloadN reads n from an event (SSE data: the whole Event) or from a page's data field.
func payloadN(t *testing.T, raw json.RawMessage) int {
	var v struct {
		N    *int `json:"n"`
		Data *struct {
			N int `json:"n"`
		} `json:"data"`
	}
	require.NoError(t, json.Unmarshal(raw, &v), string(raw))
	if v.N != nil {
		return *v.N
	}
	require.NotNil(t, v.Data, string(raw))
	return v.Data.N
}

// publish publishes messages n = from..to-1 to recipient, one transaction each.
func publish(t *testing.T, b *bundle, recipient string, from, to int) {
	t.Helper()
	require.NoError(t, publishErr(b, recipient, from, to))
}

// publishErr is publish for goroutines other than the test's: it returns its error.
func publishErr(b *bundle, recipient string, from, to int) error {
	for i := from; i < to; i++ {
		if _, err := b.db.Pool.Exec(context.Background(),
			`SELECT tocsin.publish($1::text, 'chat', jsonb_build_object('n', $2::int))`, recipient, i); err != nil {
			return err
		}
	}
	return nil
}

func requireSequence(t *testing.T, got []received, from, to int) {
	t.Helper()
	require.Len(t, got, to-from)
	seen := map[string]bool{}
	for i, r := range got {
		require.Equal(t, from+i, r.N, "event %d out of order or duplicated", i)
		require.False(t, seen[r.ID], "duplicate id %s", r.ID)
		seen[r.ID] = true
	}
}

func TestDeliveryOverEachTransport(t *testing.T) {
	t.Parallel()
	for _, tr := range transports() {
		t.Run(tr.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			tok := token(t, "alice")

			t.Run("InOrderExactlyOnce", func(t *testing.T) {
				// Some events exist before the client comes, more arrive while it reads.
				publish(t, b, "alice", 0, 10)
				published := make(chan error, 1)
				go func() { published <- publishErr(b, "alice", 10, 25) }()
				got, cursor := tr.collect(t, b, tok, "", 25)
				require.NoError(t, <-published)
				requireSequence(t, got, 0, 25)
				require.Equal(t, got[len(got)-1].ID, cursor)
				// Nothing more: the truth, read by a short poll.
				status, p := getFeed(t, http.DefaultClient, b.base, tok, "after="+cursor)
				require.Equal(t, http.StatusOK, status)
				require.Empty(t, p.Events)

				t.Run("ResumeFromCursor", func(t *testing.T) {
					publish(t, b, "alice", 25, 30)
					first, mid := tr.collect(t, b, tok, cursor, 2)
					requireSequence(t, first, 25, 27)
					rest, _ := tr.collect(t, b, tok, mid, 3)
					requireSequence(t, rest, 27, 30)
				})
			})
			t.Run("ForeignEpochGone", func(t *testing.T) {
				require.Equal(t, http.StatusGone, tr.status(t, b, tok, "zzzz-1"))
			})
			t.Run("MalformedCursor", func(t *testing.T) {
				require.Equal(t, http.StatusBadRequest, tr.status(t, b, tok, "not-a-cursor"))
			})
			// Retention removes carol's entries: a cursor before them would skip them, so it
			// is gone (410) on every transport; a cursor at or after them stays valid.
			t.Run("PrunedCursorGone", func(t *testing.T) {
				carol := token(t, "carol")
				_, start := getFeed(t, http.DefaultClient, b.base, carol, "after=now")
				publish(t, b, "carol", 0, 3)
				got, last := tr.collect(t, b, carol, start.Cursor, 3)
				requireSequence(t, got, 0, 3)
				_, err := retention.Prune(context.Background(), b.db.Pool,
					retention.Config{ChangeTTL: time.Millisecond, InboxTTL: time.Millisecond}, time.Now().Add(time.Second))
				require.NoError(t, err)
				require.Equal(t, http.StatusGone, tr.status(t, b, carol, start.Cursor))
				require.Equal(t, http.StatusGone, tr.status(t, b, carol, got[1].ID))
				require.Equal(t, http.StatusOK, tr.status(t, b, carol, last), "nothing was removed after it")
			})
		})
	}
}
