package stream

import (
	"context"
	"encoding/json"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tocsin/tocsin/internal/feed"
)

var knownEvent = feed.Event{
	Position: 42, ID: "abcd1234-42", Topic: "chat", Kind: "message",
	Data:      json.RawMessage(`{"text":"hi"}`),
	CreatedAt: time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC),
}

func encodeJSON(e feed.Event) ([]byte, error) { return json.Marshal(e) }

// The exact bytes of each frame.
func TestFramesGolden(t *testing.T) {
	t.Parallel()
	data, err := encodeJSON(knownEvent)
	require.NoError(t, err)
	require.Equal(t,
		"id: abcd1234-42\nevent: message\ndata: "+
			`{"id":"abcd1234-42","topic":"chat","kind":"message","op":null,"table":null,"key":null,"data":{"text":"hi"},"old":null,"changed":null,"created_at":"2025-03-01T12:00:00Z"}`+
			"\n\n",
		string(appendEvent(nil, knownEvent.ID, knownEvent.Kind, data)))
	require.Equal(t, "retry: 2000\nid: abcd1234-7\n\n", string(appendOpening(nil, 2*time.Second, "abcd1234-7")))
	require.Equal(t, "retry: 1500\n\n", string(appendOpening(nil, 1500*time.Millisecond, "")))
	require.Equal(t, ": heartbeat\n\n", string(appendHeartbeat(nil)))
}

// No value can add a field or end a frame early: JSON escapes CR/LF inside strings, and
// the framer strips them from ids and names and splits raw data into data: lines.
func TestFramesInjection(t *testing.T) {
	t.Parallel()
	evil := "x\n\nid: 666\nevent: reconnect\r\ndata: boom\r\rretry: 1\n"
	e := knownEvent
	e.Data, _ = json.Marshal(map[string]string{"text": evil})
	data, err := encodeJSON(e)
	require.NoError(t, err)
	require.NotContains(t, string(data), "\n")
	require.NotContains(t, string(data), "\r")
	frame := string(appendEvent(nil, "id\n\nevent: x", "kind\r\nretry: 1", data))
	require.Equal(t, 1, strings.Count(frame, "\n\n"), frame)
	require.True(t, strings.HasPrefix(frame, "id: idevent: x\nevent: kindretry: 1\ndata: {"), frame)

	// Raw data with line breaks becomes several data: lines, never another field.
	require.Equal(t, "event: e\ndata: a\ndata: \ndata: id: 1\ndata: b\n\n",
		string(appendEvent(nil, "", "e", []byte("a\n\nid: 1\r\nb"))))
}

// fakeSource returns its events once, then nothing.
type fakeSource struct {
	events []feed.Event
	wake   chan struct{}
	err    error
}

func (f *fakeSource) Next(context.Context) ([]feed.Event, error) {
	ev := f.events
	f.events = nil
	return ev, f.err
}
func (f *fakeSource) Wake() <-chan struct{} { return f.wake }
func (f *fakeSource) Cursor() string        { return "abcd1234-41" }
func (f *fakeSource) SetWakeFunc(func())    {}

// A whole session in a bubble of fake time: opening frame, the event, a heartbeat after
// each quiet interval, and the end at the jittered lifetime.
func TestServeSessionGolden(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		w := httptest.NewRecorder()
		src := &fakeSource{events: []feed.Event{knownEvent}, wake: make(chan struct{})}
		start := time.Now()
		var c Counters
		reason, err := Serve(t.Context(), w, Config{HeartbeatInterval: time.Minute, MaxLifetime: 10 * time.Minute},
			Session{Source: src, EncodeFunc: encodeJSON}, &c)
		require.NoError(t, err)
		require.Equal(t, EndLifetime, reason)
		lived := time.Since(start)
		require.GreaterOrEqual(t, lived, 9*time.Minute)
		require.LessOrEqual(t, lived, 11*time.Minute)

		require.Equal(t, "text/event-stream", w.Header().Get("Content-Type"))
		require.Equal(t, "no-cache", w.Header().Get("Cache-Control"))
		require.Equal(t, "no", w.Header().Get("X-Accel-Buffering"))
		body := w.Body.String()
		m := regexp.MustCompile(`^retry: (\d+)\n`).FindStringSubmatch(body)
		require.NotNil(t, m, body)
		data, _ := encodeJSON(knownEvent)
		heartbeats := int(lived / time.Minute)
		want := m[0] + "id: abcd1234-41\n\n" +
			"id: abcd1234-42\nevent: message\ndata: " + string(data) + "\n\n" +
			strings.Repeat(": heartbeat\n\n", heartbeats) +
			"event: reconnect\ndata: {\"reason\":\"lifetime\"}\n\n"
		require.Equal(t, want, body)
		require.Equal(t, int64(1), c.Events())
		require.Equal(t, int64(1), c.Ended(EndLifetime))
		require.Zero(t, c.Open())
	})
}

func TestServeEnds(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name   string
		setup  func(s *Session)
		reason EndReason
		frame  string
	}{
		{"PushDisabled", func(s *Session) {
			off := make(chan struct{})
			close(off)
			s.PushOff = off
		}, EndPushDisabled, "event: push-disabled\ndata: {}\n\n"},
		{"TokenExpired", func(s *Session) { s.TokenExpiresAt = time.Now().Add(time.Minute) },
			EndTokenExpired, "event: reconnect\ndata: {\"reason\":\"token-expired\"}\n\n"},
		{"Shutdown", func(s *Session) {
			drain := make(chan struct{})
			close(drain)
			s.Drain = drain
		}, EndShutdown, "event: reconnect\ndata: {\"reason\":\"shutdown\"}\n\n"},
		{"FeedReset", func(s *Session) { s.Source.(*fakeSource).err = feed.ErrCursorExpired },
			EndCursorExpired, "event: reconnect\ndata: {\"reason\":\"cursor-expired\"}\n\n"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			synctest.Test(t, func(t *testing.T) {
				w := httptest.NewRecorder()
				s := Session{Source: &fakeSource{wake: make(chan struct{})}, EncodeFunc: encodeJSON}
				tt.setup(&s)
				start := time.Now()
				reason, err := Serve(t.Context(), w, Config{DrainWindow: 5 * time.Second}, s, nil)
				require.NoError(t, err)
				require.Equal(t, tt.reason, reason)
				require.True(t, strings.HasSuffix(w.Body.String(), "\n\n"+tt.frame), w.Body.String())
				if tt.reason == EndShutdown {
					require.Less(t, time.Since(start), 5*time.Second, "ends within the drain window")
				}
			})
		})
	}
}
