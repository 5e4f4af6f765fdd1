package httpapi

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/tocsin/tocsin/internal/auth"
	"github.com/tocsin/tocsin/internal/feed"
	"github.com/tocsin/tocsin/internal/inbox"
)

// fakeInbox validates selections as the real store does before it reaches the database.
type fakeInbox struct{}

func (fakeInbox) List(context.Context, string, inbox.Filter, string, int) ([]inbox.Entry, string, error) {
	return nil, "", nil
}
func (fakeInbox) Counts(context.Context, string) (inbox.Counts, error) { return inbox.Counts{}, nil }
func (fakeInbox) Mark(_ context.Context, _ string, _ inbox.Action, sel inbox.Selection) (int, inbox.Counts, error) {
	if (len(sel.IDs) == 0) == (sel.UpTo == "") {
		return 0, inbox.Counts{}, fmt.Errorf("%w: give either ids or up_to", inbox.ErrInvalid)
	}
	for _, id := range append(sel.IDs, sel.UpTo) {
		if id == "" {
			continue
		}
		if _, err := feed.ParseCursor(id); err != nil {
			return 0, inbox.Counts{}, err
		}
	}
	return len(sel.IDs), inbox.Counts{}, nil
}

// FuzzRequestBodies: whatever the body of POST /v1/messages or /v1/inbox/{seen,read,archive},
// the answer is a success or a 4xx problem — never a 500, never a panic.
func FuzzRequestBodies(f *testing.F) {
	for _, s := range []string{
		`{"recipients":["alice"],"topic":"t","data":{"a":1}}`,
		`{"recipients":["alice"],"topic":"t","data":{"a":"\u0000"}}`,
		`{"recipients":["a\ud800"],"topic":"t","data":{}}`,
		`{"recipients":[],"topic":"","data":null,"group":"g"}`,
		`{"ids":["abcd-1","abcd-2"]}`, `{"up_to":"abcd-7"}`, `{"ids":[],"up_to":""}`, `{"ids":["x"],"up_to":"y"}`,
		`{} {}`, `[`, `null`, `"x"`, "\xff", `{"recipients":["alice"],"topic":"t","data":{}}]`,
	} {
		for path := range byte(4) {
			f.Add(path, []byte(s))
		}
	}
	authCfg := auth.Config{HS256Secret: testSecret}
	verifier, err := auth.NewVerifier(authCfg)
	if err != nil {
		f.Fatal(err)
	}
	token, err := auth.Mint(authCfg, "user:42", time.Hour, "tocsin:publish")
	if err != nil {
		f.Fatal(err)
	}
	s := New(Config{Verifier: verifier, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))},
		Deps{Feed: &fakeFeed{polling: make(chan struct{}, 1)}, Publisher: &fakePublisher{}, Inbox: fakeInbox{}})
	paths := []string{"/v1/messages", "/v1/inbox/seen", "/v1/inbox/read", "/v1/inbox/archive"}
	f.Fuzz(func(t *testing.T, path byte, body []byte) {
		req := httptest.NewRequest(http.MethodPost, paths[int(path)%len(paths)], bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("Content-Type", "application/json")
		rec := httptest.NewRecorder()
		s.Handler().ServeHTTP(rec, req)
		switch code := rec.Code; {
		case code >= 500:
			t.Fatalf("POST %s %q: %d %s", req.URL.Path, body, code, rec.Body)
		case code >= 400 && rec.Header().Get("Content-Type") != "application/problem+json":
			t.Fatalf("POST %s %q: %d without a problem", req.URL.Path, body, code)
		}
	})
}
