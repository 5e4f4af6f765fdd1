package app_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// An SSE client written from the WHATWG "server-sent events" parsing rules, independent of
// the server's framing code, so that the two cannot share a mistake.

// sseEvent is one dispatched event, or a comment (Event ":comment").
type sseEvent struct {
	ID    string // the last event ID after this event (EventSource's lastEventId)
	Event string // "message" when the frame named none
	Data  string
}

// sseStream is an open stream and what it received.
type sseStream struct {
	Resp   *http.Response
	events chan sseEvent
	cancel context.CancelFunc

	mu  sync.Mutex
	raw bytes.Buffer
	err error
}

// openStream opens GET /v1/feed/stream?query with header and starts parsing when the
// answer is 200. The stream is closed at cleanup.
func openStream(t *testing.T, base, query string, header http.Header) *sseStream {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/v1/feed/stream?"+query, nil)
	require.NoError(t, err)
	for k, vs := range header {
		req.Header[k] = vs
	}
	req.Header.Set("Accept", "text/event-stream")
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	s := &sseStream{Resp: resp, events: make(chan sseEvent, 10000), cancel: cancel}
	t.Cleanup(s.Close)
	if resp.StatusCode == http.StatusOK {
		go s.parse(resp.Body)
	} else {
		body, _ := io.ReadAll(resp.Body)
		s.raw.Write(body)
		close(s.events)
	}
	return s
}

func bearer(tok string) http.Header { return http.Header{"Authorization": {"Bearer " + tok}} }

// Close closes the connection.
func (s *sseStream) Close() {
	s.cancel()
	_ = s.Resp.Body.Close()
}

// Raw returns every byte received so far.
func (s *sseStream) Raw() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.raw.String()
}

// Next returns the next event or comment; ok is false when the stream ended or nothing
// came within timeout.
func (s *sseStream) Next(timeout time.Duration) (sseEvent, bool) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case e, ok := <-s.events:
		return e, ok
	case <-t.C:
		return sseEvent{}, false
	}
}

// NextEvent is Next skipping comments.
func (s *sseStream) NextEvent(timeout time.Duration) (sseEvent, bool) {
	deadline := time.Now().Add(timeout)
	for {
		e, ok := s.Next(time.Until(deadline))
		if !ok || e.Event != ":comment" {
			return e, ok
		}
	}
}

// Ended waits until the server closes the stream; it fails on any event in between.
func (s *sseStream) Ended(t *testing.T, timeout time.Duration) {
	t.Helper()
	require.NoError(t, s.ended(timeout))
}

// ended is Ended for goroutines other than the test's: it returns what went wrong.
func (s *sseStream) ended(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		e, ok := s.Next(time.Until(deadline))
		if !ok {
			if time.Now().After(deadline) {
				return errors.New("the stream did not end")
			}
			return nil
		}
		if e.Event != ":comment" {
			return fmt.Errorf("unexpected event before the end: %+v", e)
		}
	}
}

func (s *sseStream) parse(body io.Reader) {
	defer close(s.events)
	r := &lineReader{r: bufio.NewReaderSize(io.TeeReader(body, writerFunc(func(p []byte) {
		s.mu.Lock()
		s.raw.Write(p)
		s.mu.Unlock()
	})), 1<<16)}
	var (
		data      strings.Builder
		event     string
		idBuffer  = ""
		firstLine = true
	)
	for {
		line, err := r.next()
		if err != nil {
			s.mu.Lock()
			s.err = err
			s.mu.Unlock()
			return
		}
		if firstLine {
			line = strings.TrimPrefix(line, "\uFEFF")
			firstLine = false
		}
		switch {
		case line == "": // dispatch
			if data.Len() == 0 {
				event = ""
				continue
			}
			d := strings.TrimSuffix(data.String(), "\n")
			if event == "" {
				event = "message"
			}
			s.events <- sseEvent{ID: idBuffer, Event: event, Data: d}
			data.Reset()
			event = ""
		case strings.HasPrefix(line, ":"):
			s.events <- sseEvent{Event: ":comment", Data: line[1:]}
		default:
			field, value, _ := strings.Cut(line, ":")
			value = strings.TrimPrefix(value, " ")
			switch field {
			case "event":
				event = value
			case "data":
				data.WriteString(value)
				data.WriteByte('\n')
			case "id":
				if !strings.Contains(value, "\x00") {
					idBuffer = value
				}
			}
		}
	}
}

// lineReader reads lines ended by CRLF, LF or CR.
type lineReader struct {
	r       *bufio.Reader
	pending []string
}

func (l *lineReader) next() (string, error) {
	if len(l.pending) == 0 {
		chunk, err := l.r.ReadString('\n')
		if err != nil {
			return "", err
		}
		chunk = strings.TrimSuffix(strings.TrimSuffix(chunk, "\n"), "\r")
		l.pending = strings.Split(chunk, "\r") // a lone CR also ends a line
	}
	line := l.pending[0]
	l.pending = l.pending[1:]
	return line, nil
}

type writerFunc func(p []byte)

func (f writerFunc) Write(p []byte) (int, error) { f(p); return len(p), nil }
