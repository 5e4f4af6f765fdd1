package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"
	"github.com/golang-jwt/jwt/v5"
	"github.com/stretchr/testify/require"

	"github.com/tocsin/tocsin/api"
	"github.com/tocsin/tocsin/internal/auth"
	"github.com/tocsin/tocsin/internal/feed"
)

var testSecret = []byte("0123456789abcdef0123456789abcdef")

// pollCall is one call to fakeFeed.Poll.
type pollCall struct {
	Recipient, After string
	Limit            int
	Wait             time.Duration
}

// fakeFeed answers Poll with canned results. With block set it waits as a real feed with
// nothing to deliver would: until wait has passed or ctx is done.
type fakeFeed struct {
	events []feed.Event
	cursor string
	err    error
	block  bool
	panics bool
	delay  time.Duration // every poll takes this long (unless ctx ends first)

	polling chan struct{} // receives once per call, when Poll starts (buffered)

	endOnce sync.Once
	ended   chan struct{} // closed by EndWaits

	mu    sync.Mutex
	calls []pollCall
}

func (f *fakeFeed) endedC() chan struct{} {
	f.endOnce.Do(func() { f.ended = make(chan struct{}) })
	return f.ended
}

// EndWaits ends the waits of blocking polls, now and later, as a real feed does.
func (f *fakeFeed) EndWaits() { close(f.endedC()) }

func (f *fakeFeed) Poll(ctx context.Context, recipient, after string, limit int, wait time.Duration) ([]feed.Event, string, error) {
	f.mu.Lock()
	f.calls = append(f.calls, pollCall{Recipient: recipient, After: after, Limit: limit, Wait: wait})
	f.mu.Unlock()
	f.polling <- struct{}{}
	if f.panics {
		panic("feed exploded")
	}
	if f.delay > 0 {
		select {
		case <-time.After(f.delay):
		case <-ctx.Done():
			return nil, "", ctx.Err()
		}
	}
	if f.block && wait > 0 {
		timer := time.NewTimer(wait)
		defer timer.Stop()
		select {
		case <-timer.C:
		case <-f.endedC():
		case <-ctx.Done():
			return nil, "", ctx.Err()
		}
	}
	return f.events, f.cursor, f.err
}

func (f *fakeFeed) lastCall(t *testing.T) pollCall {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	require.NotEmpty(t, f.calls, "the feed was never polled")
	return f.calls[len(f.calls)-1]
}

func (f *fakeFeed) callCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.calls)
}

type readinessFunc func(ctx context.Context) error

func (f readinessFunc) Ready(ctx context.Context) error { return f(ctx) }

// syncBuffer is a log sink safe for the server's goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

type testBundle struct {
	authCfg auth.Config
	feed    *fakeFeed
	logs    *syncBuffer
	server  *Server
	baseURL string
	router  routers.Router
	token   string
}

type testOpts struct {
	cfg       Config
	feed      *fakeFeed
	readiness Readiness
	// httpServer serves through Server.HTTPServer instead of httptest.NewServer.
	httpServer bool
	// deps are further dependencies (Publisher, Inbox…); Feed and Readiness come from above.
	deps Deps
}

func setup(t *testing.T, opts testOpts) *testBundle {
	t.Helper()

	authCfg := auth.Config{HS256Secret: testSecret, Issuer: "https://idp.example", Audience: "tocsin"}
	verifier, err := auth.NewVerifier(authCfg)
	require.NoError(t, err)

	ff := opts.feed
	if ff == nil {
		ff = &fakeFeed{}
	}
	ff.polling = make(chan struct{}, 100)
	if ff.cursor == "" {
		ff.cursor = "abcd-7"
	}

	logs := &syncBuffer{}
	cfg := opts.cfg
	cfg.Verifier = verifier
	cfg.Logger = slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	deps := opts.deps
	deps.Feed, deps.Readiness = ff, opts.readiness
	s := New(cfg, deps)

	var baseURL string
	if opts.httpServer {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		hs := s.HTTPServer(ln.Addr().String())
		go func() { _ = hs.Serve(ln) }()
		t.Cleanup(func() { _ = hs.Close() })
		baseURL = "http://" + ln.Addr().String()
	} else {
		ts := httptest.NewServer(s.Handler())
		t.Cleanup(ts.Close)
		baseURL = ts.URL
	}

	spec, err := api.GetSpec()
	require.NoError(t, err)
	spec.Servers = nil
	router, err := gorillamux.NewRouter(spec)
	require.NoError(t, err)

	token, err := auth.Mint(authCfg, "user:42", time.Hour, "feed:read")
	require.NoError(t, err)

	return &testBundle{authCfg: authCfg, feed: ff, logs: logs, server: s, baseURL: baseURL, router: router, token: token}
}

type testResponse struct {
	*http.Response
	body []byte
}

// get sends GET path with token as bearer (none when empty) and checks that a response to
// a route of the spec matches the spec: status, content type, headers and body.
func (b *testBundle) get(t *testing.T, path, token string) testResponse {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, b.baseURL+path, nil)
	require.NoError(t, err)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)

	if route, pathParams, err := b.router.FindRoute(req); err == nil {
		err = openapi3filter.ValidateResponse(t.Context(), &openapi3filter.ResponseValidationInput{
			RequestValidationInput: &openapi3filter.RequestValidationInput{
				Request: req, PathParams: pathParams, Route: route,
				Options: &openapi3filter.Options{AuthenticationFunc: openapi3filter.NoopAuthenticationFunc},
			},
			Status:  resp.StatusCode,
			Header:  resp.Header,
			Body:    io.NopCloser(bytes.NewReader(body)),
			Options: &openapi3filter.Options{IncludeResponseStatus: true},
		})
		require.NoError(t, err, "response does not match the spec: %s", body)
	}
	return testResponse{Response: resp, body: body}
}

// requireProblem checks that r is a problem+json of slug with status.
func requireProblem(t *testing.T, r testResponse, status int, slug string) api.Problem {
	t.Helper()
	require.Equal(t, status, r.StatusCode, "body: %s", r.body)
	require.Equal(t, "application/problem+json", r.Header.Get("Content-Type"))
	var p api.Problem
	require.NoError(t, json.Unmarshal(r.body, &p))
	require.Equal(t, "https://tocsin.dev/problems/"+slug, p.Type)
	require.Equal(t, status, p.Status)
	require.NotEmpty(t, p.Title)
	require.NotEmpty(t, p.Detail)
	return p
}

func signed(t *testing.T, method jwt.SigningMethod, key any, claims jwt.MapClaims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(method, claims).SignedString(key)
	require.NoError(t, err)
	return s
}

func claims(mutate func(jwt.MapClaims)) jwt.MapClaims {
	c := jwt.MapClaims{
		"sub": "user:42", "iss": "https://idp.example", "aud": "tocsin",
		"exp": time.Now().Add(time.Hour).Unix(),
	}
	if mutate != nil {
		mutate(c)
	}
	return c
}

func TestGetFeed(t *testing.T) {
	t.Parallel()

	t.Run("PassesRecipientAndParameters", func(t *testing.T) {
		t.Parallel()
		op, table := "update", "public.comment"
		createdAt := time.Date(2025, 3, 1, 12, 0, 0, 123456000, time.UTC)
		b := setup(t, testOpts{feed: &fakeFeed{
			cursor: "abcd-12",
			events: []feed.Event{
				{
					ID: "abcd-11", Topic: "comment", Kind: "notification", Op: &op, Table: &table,
					Key: json.RawMessage(`{"id":5}`), Data: json.RawMessage(`{"id":5,"body":"hi"}`),
					Old: json.RawMessage(`{"id":5,"body":"hello"}`), Changed: []string{"body"}, CreatedAt: createdAt,
				},
				{ID: "abcd-12", Topic: "chat", Kind: "message", Data: json.RawMessage(`"ping"`), CreatedAt: createdAt},
			},
		}})

		r := b.get(t, "/v1/feed?after=abcd-10&limit=2&wait=0", b.token)
		require.Equal(t, http.StatusOK, r.StatusCode, "body: %s", r.body)
		require.Equal(t, "application/json", r.Header.Get("Content-Type"))
		require.Equal(t, "no-store", r.Header.Get("Cache-Control"))
		require.Equal(t, pollCall{Recipient: "user:42", After: "abcd-10", Limit: 2}, b.feed.lastCall(t))
		require.JSONEq(t, `{
			"cursor": "abcd-12",
			"events": [
				{"id":"abcd-11","topic":"comment","kind":"notification","op":"update","table":"public.comment",
				 "key":{"id":5},"data":{"id":5,"body":"hi"},"old":{"id":5,"body":"hello"},"changed":["body"],
				 "created_at":"2025-03-01T12:00:00.123456Z"},
				{"id":"abcd-12","topic":"chat","kind":"message","op":null,"table":null,
				 "key":null,"data":"ping","old":null,"changed":null,"created_at":"2025-03-01T12:00:00.123456Z"}
			]}`, string(r.body))
	})

	t.Run("Defaults", func(t *testing.T) {
		t.Parallel()
		b := setup(t, testOpts{})

		r := b.get(t, "/v1/feed", b.token)
		require.Equal(t, http.StatusOK, r.StatusCode, "body: %s", r.body)
		require.JSONEq(t, `{"events":[],"cursor":"abcd-7"}`, string(r.body))
		require.Equal(t, pollCall{Recipient: "user:42", After: "", Limit: 100, Wait: 0}, b.feed.lastCall(t))

		r = b.get(t, "/v1/feed?after=now&limit=1000&wait=5", b.token)
		require.Equal(t, http.StatusOK, r.StatusCode, "body: %s", r.body)
		require.Equal(t, pollCall{Recipient: "user:42", After: "now", Limit: 1000, Wait: 5 * time.Second}, b.feed.lastCall(t))
	})

	t.Run("WaitClampedToLongPollMax", func(t *testing.T) {
		t.Parallel()
		b := setup(t, testOpts{cfg: Config{LongPollMax: 20 * time.Second}})

		r := b.get(t, "/v1/feed?wait=3600", b.token)
		require.Equal(t, http.StatusOK, r.StatusCode, "body: %s", r.body)
		require.Equal(t, 20*time.Second, b.feed.lastCall(t).Wait)
	})

	t.Run("LongPollOutlivesWriteTimeout", func(t *testing.T) {
		t.Parallel()
		// The server's WriteTimeout is far shorter than the wait: only the per-request
		// deadline extension lets the answer reach the client.
		b := setup(t, testOpts{
			httpServer: true,
			cfg:        Config{WriteTimeout: 50 * time.Millisecond},
			feed:       &fakeFeed{block: true},
		})

		r := b.get(t, "/v1/feed?after=abcd-7&wait=1", b.token)
		require.Equal(t, http.StatusOK, r.StatusCode, "body: %s", r.body)
		require.JSONEq(t, `{"events":[],"cursor":"abcd-7"}`, string(r.body))
	})

	// On shutdown, long polls are answered at once with an empty page and the unchanged
	// cursor: the client polls again (on another node) without treating it as an error.
	t.Run("ShutdownAnswersLongPolls", func(t *testing.T) {
		t.Parallel()
		b := setup(t, testOpts{httpServer: true, feed: &fakeFeed{block: true}})
		hs := b.server.HTTPServer("unused")
		// Drain is what the http.Server returned by HTTPServer runs on Shutdown.
		require.NoError(t, hs.Shutdown(t.Context()))
		<-b.server.drainCtx.Done() // Shutdown runs its hooks in goroutines

		r := b.get(t, "/v1/feed?after=abcd-7&wait=30", b.token)
		require.Equal(t, http.StatusOK, r.StatusCode, "body: %s", r.body)
		require.JSONEq(t, `{"events":[],"cursor":"abcd-7"}`, string(r.body))
	})

	t.Run("ShutdownAnswersParkedLongPoll", func(t *testing.T) {
		t.Parallel()
		b := setup(t, testOpts{feed: &fakeFeed{block: true}})

		go func() {
			<-b.feed.polling
			b.server.Drain()
		}()
		r := b.get(t, "/v1/feed?after=abcd-7&wait=30", b.token)
		require.Equal(t, http.StatusOK, r.StatusCode, "body: %s", r.body)
		require.JSONEq(t, `{"events":[],"cursor":"abcd-7"}`, string(r.body))
		require.Equal(t, 30*time.Second, b.feed.lastCall(t).Wait)
	})
}

func TestGetFeedProblems(t *testing.T) {
	t.Parallel()

	b := setup(t, testOpts{})
	t.Cleanup(func() { require.Zero(t, b.feed.callCount(), "no refused request may reach the feed") })
	otherKey := []byte("not the configured secret but just as long")

	for _, tt := range []struct {
		name   string
		path   string
		token  string
		status int
		slug   string
		detail string
	}{
		{"MissingToken", "/v1/feed", "", 401, "token-invalid", "no bearer token"},
		{"AuthBeforeValidation", "/v1/feed?limit=0", "", 401, "token-invalid", "no bearer token"},
		{"GarbageToken", "/v1/feed", "garbage", 401, "token-invalid", "malformed"},
		{"BadSignature", "/v1/feed", signed(t, jwt.SigningMethodHS256, otherKey, claims(nil)), 401, "token-invalid", "signature is invalid"},
		{"Expired", "/v1/feed", signed(t, jwt.SigningMethodHS256, testSecret, claims(func(c jwt.MapClaims) {
			c["exp"] = time.Now().Add(-time.Minute).Unix()
		})), 401, "token-invalid", "expired"},
		{"AlgNone", "/v1/feed", signed(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, claims(nil)), 401, "token-invalid", "signing method none"},
		{"HS512", "/v1/feed", signed(t, jwt.SigningMethodHS512, testSecret, claims(nil)), 401, "token-invalid", "signing method HS512"},
		{"WrongAudience", "/v1/feed", signed(t, jwt.SigningMethodHS256, testSecret, claims(func(c jwt.MapClaims) {
			c["aud"] = "other"
		})), 401, "token-invalid", "aud"},
		{"LimitZero", "/v1/feed?limit=0", b.token, 400, "invalid-request", `parameter "limit"`},
		{"LimitTooLarge", "/v1/feed?limit=1001", b.token, 400, "invalid-request", `parameter "limit"`},
		{"LimitNotANumber", "/v1/feed?limit=abc", b.token, 400, "invalid-request", `parameter "limit"`},
		{"WaitNegative", "/v1/feed?wait=-1", b.token, 400, "invalid-request", `parameter "wait"`},
		{"WaitNotANumber", "/v1/feed?wait=x", b.token, 400, "invalid-request", `parameter "wait"`},
		{"WaitOverflows", "/v1/feed?wait=99999999999999", b.token, 400, "invalid-request", `wait`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := b.get(t, tt.path, tt.token)
			p := requireProblem(t, r, tt.status, tt.slug)
			require.Contains(t, p.Detail, tt.detail)
			if tt.status == http.StatusUnauthorized {
				challenge := r.Header.Get("WWW-Authenticate")
				require.True(t, strings.HasPrefix(challenge, "Bearer "), challenge)
				require.Equal(t, tt.token != "", strings.Contains(challenge, `error="invalid_token"`), challenge)
			}
		})
	}
}

func TestTokenInURLRefused(t *testing.T) {
	t.Parallel()

	b := setup(t, testOpts{})
	for _, path := range []string{
		"/v1/feed?access_token=" + b.token,
		"/v1/feed?token=anything",
		"/v1/feed?after=" + b.token,
		"/v1/feed?jwt=" + b.token,
	} {
		// Even alongside a valid Authorization header: the URL's token must count as leaked.
		r := b.get(t, path, b.token)
		p := requireProblem(t, r, http.StatusUnauthorized, "token-invalid")
		require.Contains(t, p.Detail, "Authorization header")
		require.NotContains(t, string(r.body), b.token)
	}
	require.Zero(t, b.feed.callCount())
	require.NotContains(t, b.logs.String(), b.token, "a token must never be logged")
	require.NotContains(t, b.logs.String(), strings.Split(b.token, ".")[2])
}

func TestFeedErrors(t *testing.T) {
	t.Parallel()

	for _, tt := range []struct {
		name   string
		err    error
		status int
		slug   string
	}{
		{"CursorMalformed", fmt.Errorf("parsing: %w: %q", feed.ErrCursorMalformed, "zz"), 400, "cursor-malformed"},
		{"CursorExpired", fmt.Errorf("reading: %w", feed.ErrCursorExpired), 410, "cursor-expired"},
		{"DeadlineExceeded", fmt.Errorf("acquiring connection: %w", context.DeadlineExceeded), 503, "service-unavailable"},
		{"Internal", errors.New(`connecting to "postgres://tocsin:hunter2@db/tocsin": refused`), 500, "internal"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, testOpts{feed: &fakeFeed{err: tt.err}})

			r := b.get(t, "/v1/feed?after=abcd-1", b.token)
			p := requireProblem(t, r, tt.status, tt.slug)
			require.NotContains(t, p.Detail, "hunter2")
			require.NotContains(t, p.Detail, "postgres")
			if tt.status == http.StatusServiceUnavailable {
				require.Equal(t, "1", r.Header.Get("Retry-After"))
			}
			if tt.status == http.StatusInternalServerError {
				require.Contains(t, b.logs.String(), "hunter2", "the internal error is logged")
			}
		})
	}

	t.Run("Panic", func(t *testing.T) {
		t.Parallel()
		b := setup(t, testOpts{feed: &fakeFeed{panics: true}})

		r := b.get(t, "/v1/feed", b.token)
		p := requireProblem(t, r, http.StatusInternalServerError, "internal")
		require.NotContains(t, p.Detail, "exploded")
		require.Contains(t, b.logs.String(), "feed exploded")
	})
}

func TestProbes(t *testing.T) {
	t.Parallel()

	t.Run("Healthy", func(t *testing.T) {
		t.Parallel()
		b := setup(t, testOpts{})
		for _, path := range []string{"/healthz", "/readyz"} {
			r := b.get(t, path, "")
			require.Equal(t, http.StatusOK, r.StatusCode, "%s: %s", path, r.body)
			require.JSONEq(t, `{"status":"ok"}`, string(r.body))
		}
	})

	t.Run("NotReady", func(t *testing.T) {
		t.Parallel()
		b := setup(t, testOpts{readiness: readinessFunc(func(context.Context) error {
			return errors.New("database unreachable at 10.0.0.5")
		})})

		r := b.get(t, "/readyz", "")
		p := requireProblem(t, r, http.StatusServiceUnavailable, "service-unavailable")
		require.NotContains(t, p.Detail, "10.0.0.5")
		require.Equal(t, "1", r.Header.Get("Retry-After"))
		require.Contains(t, b.logs.String(), "10.0.0.5")

		r = b.get(t, "/healthz", "")
		require.Equal(t, http.StatusOK, r.StatusCode)
	})

	t.Run("UnknownPath", func(t *testing.T) {
		t.Parallel()
		b := setup(t, testOpts{})
		requireProblem(t, b.get(t, "/v1/nothing", b.token), http.StatusNotFound, "not-found")
	})
}
