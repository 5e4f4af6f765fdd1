package httpapi

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"

	"github.com/tocsin/tocsin/internal/publish"
)

// Clients that announce a body and never send it — 1,000 without a token on GET /v1/feed,
// 1,000 with one on POST /v1/messages — are all answered and disconnected, and the node
// still serves. Without a body deadline and a close after an early error, net/http waits
// for those bodies forever, holding a descriptor and a goroutine each.
func TestHeldConnectionsAreClosed(t *testing.T) {
	t.Parallel()
	b := setup(t, testOpts{httpServer: true, cfg: Config{BodyReadTimeout: 2 * time.Second}})
	addr := strings.TrimPrefix(b.baseURL, "http://")
	const each = 1000
	requests := []string{
		"GET /v1/feed HTTP/1.1\r\nHost: tocsin\r\nContent-Length: 100\r\n\r\n",
		"POST /v1/messages HTTP/1.1\r\nHost: tocsin\r\nAuthorization: Bearer " + b.token +
			"\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"recipi",
	}
	var conns []net.Conn
	t.Cleanup(func() {
		for _, c := range conns {
			_ = c.Close()
		}
	})
	for i := range 2 * each {
		c, err := net.Dial("tcp", addr)
		require.NoError(t, err)
		conns = append(conns, c)
		_, err = io.WriteString(c, requests[i%2])
		require.NoError(t, err)
	}

	deadline := time.Now().Add(15 * time.Second)
	var closed, answered atomic.Int64
	var wg sync.WaitGroup
	for _, c := range conns {
		wg.Go(func() {
			_ = c.SetReadDeadline(deadline)
			r := bufio.NewReader(c)
			if resp, err := http.ReadResponse(r, nil); err == nil {
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusBadRequest {
					answered.Add(1)
				}
			}
			if _, err := r.ReadByte(); errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) {
				closed.Add(1)
			}
		})
	}
	wg.Wait()
	require.Equal(t, int64(2*each), closed.Load(), "connections closed by the server within 15 s")
	require.Equal(t, int64(2*each), answered.Load(), "connections answered with 401 or 400")

	r := b.get(t, "/healthz", "")
	require.Equal(t, http.StatusOK, r.StatusCode)
	r = b.get(t, "/v1/feed", b.token)
	require.Equal(t, http.StatusOK, r.StatusCode)
}

// A long poll outlives the body deadline: it lifts it once admitted, so the server's read
// of the idle connection does not end it early.
func TestLongPollOutlivesBodyDeadline(t *testing.T) {
	t.Parallel()
	b := setup(t, testOpts{httpServer: true, feed: &fakeFeed{block: true},
		cfg: Config{BodyReadTimeout: 200 * time.Millisecond, LongPollMax: 2 * time.Second}})
	r := b.get(t, "/v1/feed?wait=1", b.token)
	require.Equal(t, http.StatusOK, r.StatusCode, "body: %s", r.body)
}

// A request without a body has no read deadline: a slow answer (a busy database) is not
// cancelled by it.
func TestSlowRequestWithoutBodyIsNotCut(t *testing.T) {
	t.Parallel()
	b := setup(t, testOpts{httpServer: true, feed: &fakeFeed{delay: 600 * time.Millisecond},
		cfg: Config{BodyReadTimeout: 100 * time.Millisecond}})
	r := b.get(t, "/v1/feed", b.token)
	require.Equal(t, http.StatusOK, r.StatusCode, "body: %s", r.body)
}

// Every response says X-Content-Type-Options: nosniff.
func TestNosniffEverywhere(t *testing.T) {
	t.Parallel()
	b := setup(t, testOpts{})
	for _, c := range []struct{ path, token string }{
		{"/healthz", ""}, {"/readyz", ""}, {"/v1/feed", b.token}, {"/v1/feed", ""},
		{"/v1/capabilities", ""}, {"/nowhere", ""}, {"/v1/feed?after=nope", b.token},
	} {
		r := b.get(t, c.path, c.token)
		require.Equal(t, "nosniff", r.Header.Get("X-Content-Type-Options"), c.path)
	}
}

// Two Authorization headers are refused, whichever of them is valid.
func TestTwoAuthorizationHeaders(t *testing.T) {
	t.Parallel()
	b := setup(t, testOpts{})
	req, err := http.NewRequest(http.MethodGet, b.baseURL+"/v1/feed", nil)
	require.NoError(t, err)
	req.Header.Add("Authorization", "Bearer "+b.token)
	req.Header.Add("Authorization", "Bearer "+b.token)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	requireProblem(t, testResponse{resp, body}, http.StatusUnauthorized, "token-invalid")
	require.Zero(t, b.feed.callCount())
}

// fakePublisher publishes nothing; it fails like PostgreSQL would on text it cannot store.
type fakePublisher struct{ calls atomic.Int64 }

func (p *fakePublisher) Publish(_ context.Context, _ string, _ bool, key string, m publish.Message) (publish.Result, error) {
	p.calls.Add(1)
	for _, r := range append([]string{key, string(m.Data)}, m.Recipients...) {
		if strings.Contains(r, "\x00") || strings.Contains(r, `\u0000`) {
			return publish.Result{}, &pgconn.PgError{Code: "22P05", Message: "unsupported Unicode escape sequence"}
		}
	}
	return publish.Result{MessageID: "m", Recipients: m.Recipients}, nil
}

func post(t *testing.T, b *testBundle, path, body string, header ...string) testResponse {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, b.baseURL+path, strings.NewReader(body))
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+b.token)
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return testResponse{resp, raw}
}

// Text the database cannot store, trailing data after the JSON value, and an invalid
// Idempotency-Key are 400 invalid-request, logged below ERROR, and never reach the publisher.
func TestBodiesTheDatabaseCannotStore(t *testing.T) {
	t.Parallel()
	pub := &fakePublisher{}
	b := setup(t, testOpts{deps: Deps{Publisher: pub}})
	for _, body := range []string{
		`{"recipients":["a"],"topic":"t","data":{"x":"\u0000"}}`,
		`{"recipients":["a\u0000"],"topic":"t","data":{}}`,
		`{"recipients":["a"],"topic":"t\ud800","data":{}}`,
		`{"recipients":["a"],"topic":"t","data":{"x":"\udc00\ud800"}}`,
		"{\"recipients\":[\"a\xff\"],\"topic\":\"t\",\"data\":{}}",
		`{"recipients":["a"],"topic":"t","data":{}} {}`,
		`{"recipients":["a"],"topic":"t","data":{}}]`,
	} {
		r := post(t, b, "/v1/messages", body)
		requireProblem(t, r, http.StatusBadRequest, "invalid-request")
	}
	r := post(t, b, "/v1/messages", `{"recipients":["a"],"topic":"t","data":{}}`, "Idempotency-Key", "k\xff")
	requireProblem(t, r, http.StatusBadRequest, "invalid-request")
	require.Zero(t, pub.calls.Load())

	r = post(t, b, "/v1/messages", `{"recipients":["a"],"topic":"t\ud83d\ude00","data":{"x":"\ud83d\ude00"}}`+" \n")
	require.Equal(t, http.StatusAccepted, r.StatusCode, "a surrogate pair and trailing white space are fine: %s", r.body)
	require.NotContains(t, b.logs.String(), `"level":"ERROR"`)
}

// Errors of a database that is down or restarting are 503 with Retry-After, never 500;
// text it cannot store is a 400.
func TestDatabaseErrorsMapToProblems(t *testing.T) {
	t.Parallel()
	for _, err := range []error{
		&pgconn.PgError{Code: "57P03", Message: "the database system is starting up"},
		&pgconn.PgError{Code: "57P01", Message: "terminating connection due to administrator command"},
		&pgconn.PgError{Code: "08006"},
		fmt.Errorf("reading: %w", &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}),
		fmt.Errorf("failed to receive message: %w", io.ErrUnexpectedEOF),
	} {
		p, _ := problemFor(fmt.Errorf("polling: %w", err))
		require.Equal(t, http.StatusServiceUnavailable, p.Status, "%v", err)
	}
	p, _ := problemFor(fmt.Errorf("publishing: %w", &pgconn.PgError{Code: "22021"}))
	require.Equal(t, http.StatusBadRequest, p.Status)

	for _, err := range []error{
		&pgconn.PgError{Code: "57P03"},
		&pgconn.PgError{Code: "22P05"},
	} {
		b := setup(t, testOpts{feed: &fakeFeed{err: err}})
		r := b.get(t, "/v1/feed", b.token)
		require.NotEqual(t, http.StatusInternalServerError, r.StatusCode)
		if r.StatusCode == http.StatusServiceUnavailable {
			require.Equal(t, "1", r.Header.Get("Retry-After"))
		}
	}
}

// The River UI refuses state-changing requests from another site.
func TestSameOrigin(t *testing.T) {
	t.Parallel()
	req := func(method string, h ...string) *http.Request {
		r, err := http.NewRequest(method, "http://tocsin.example/admin/river/api/jobs/cancel", nil)
		require.NoError(t, err)
		for i := 0; i+1 < len(h); i += 2 {
			r.Header.Set(h[i], h[i+1])
		}
		return r
	}
	require.NoError(t, sameOrigin(req(http.MethodPost)))
	require.NoError(t, sameOrigin(req(http.MethodPost, "Origin", "http://tocsin.example", "Sec-Fetch-Site", "same-origin")))
	require.NoError(t, sameOrigin(req(http.MethodGet, "Origin", "https://evil.example", "Sec-Fetch-Site", "cross-site")))
	require.ErrorIs(t, sameOrigin(req(http.MethodPost, "Origin", "https://evil.example")), errForbidden)
	require.ErrorIs(t, sameOrigin(req(http.MethodPost, "Origin", "null")), errForbidden)
	require.ErrorIs(t, sameOrigin(req(http.MethodPost, "Sec-Fetch-Site", "cross-site")), errForbidden)
	require.ErrorIs(t, sameOrigin(req(http.MethodDelete, "Sec-Fetch-Site", "same-site")), errForbidden)
}
