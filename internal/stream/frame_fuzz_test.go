package stream

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

// sseEvent is what a WHATWG event-stream parser dispatches.
type sseEvent struct{ id, name, data string }

// parseSSE parses a stream as the WHATWG algorithm does; fields lists every field name seen.
func parseSSE(b []byte) (events []sseEvent, lastID string, fields []string) {
	text := strings.NewReplacer("\r\n", "\n", "\r", "\n").Replace(string(b))
	var name, data string
	hasData := false
	for _, line := range strings.Split(text, "\n") {
		if line == "" {
			if hasData {
				events = append(events, sseEvent{id: lastID, name: name, data: strings.TrimSuffix(data, "\n")})
			}
			name, data, hasData = "", "", false
			continue
		}
		if strings.HasPrefix(line, ":") {
			continue
		}
		field, value, _ := strings.Cut(line, ":")
		value = strings.TrimPrefix(value, " ")
		fields = append(fields, field)
		switch field {
		case "event":
			name = value
		case "data":
			data += value + "\n"
			hasData = true
		case "id":
			if !strings.Contains(value, "\x00") {
				lastID = value
			}
		}
	}
	return events, lastID, fields
}

// FuzzFrames: whatever the id, event name and data, an event frame is exactly one event
// with those values (data's line endings normalised), only the fields id, event and data,
// and one blank line, at its end; an opening frame dispatches nothing.
func FuzzFrames(f *testing.F) {
	f.Add("fd011f7759-42", "notification", []byte(`{"id":"x","data":{"a":1}}`))
	f.Add("a\nid: x", "n\r\nevent: y", []byte("line1\r\nline2\rline3\n\nid: evil\n\ndata: z"))
	f.Add("", "", []byte(""))
	f.Add("x\x00y", "\n", []byte("\n"))
	f.Add("x", "e", []byte(": comment\nretry: 1"))
	f.Fuzz(func(t *testing.T, id, name string, data []byte) {
		frame := appendEvent(nil, id, name, data)
		if !bytes.HasSuffix(frame, []byte("\n\n")) || bytes.Count(frame, []byte("\n\n")) != 1 ||
			bytes.ContainsRune(frame[:len(frame)-1], '\r') {
			t.Fatalf("frame %q has a blank line or CR before its end", frame)
		}
		events, lastID, fields := parseSSE(frame)
		if len(events) != 1 {
			t.Fatalf("frame %q dispatches %d events", frame, len(events))
		}
		for _, fl := range fields {
			if fl != "id" && fl != "event" && fl != "data" {
				t.Fatalf("frame %q holds a field %q", frame, fl)
			}
		}
		want := strings.NewReplacer("\r\n", "\n", "\r", "\n").Replace(string(data))
		if e := events[0]; e.data != want || e.name != oneLine(name) {
			t.Fatalf("frame %q parses as %+v, want data %q event %q", frame, e, want, oneLine(name))
		}
		if id != "" && lastID != oneLine(id) {
			t.Fatalf("frame %q sets id %q, want %q", frame, lastID, oneLine(id))
		}

		opening := appendOpening(nil, 2137*time.Millisecond, id)
		if events, _, _ := parseSSE(opening); len(events) != 0 {
			t.Fatalf("opening %q dispatches events", opening)
		}
	})
}
