package app_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/golang-jwt/jwt/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/tocsin/tocsin/internal/auth"
	"github.com/tocsin/tocsin/internal/demo"
	"github.com/tocsin/tocsin/internal/pgcluster"
	"github.com/tocsin/tocsin/internal/pgtest"
)

// One recipient's long polls count toward the per-recipient cap like its streams: beyond
// it, 429 with Retry-After, and the node's budget stays open to everyone else.
func TestLongPollsPerRecipientCap(t *testing.T) {
	t.Parallel()
	b := setup(t, "--max-streams-per-recipient", "2", "--max-connections", "4")
	alice := token(t, "alice")
	var wg sync.WaitGroup
	statuses := make(chan int, 2)
	for range 2 {
		wg.Go(func() {
			status, _, err := getFeedErr(http.DefaultClient, b.base, alice, "after=now&wait=15")
			if err != nil {
				status = -1 // the test goroutine reports it
			}
			statuses <- status
		})
	}
	require.Eventually(t, func() bool { return b.node.API.Stats().LongPolls == 2 }, streamTimeout, 5*time.Millisecond)

	req, err := http.NewRequest(http.MethodGet, b.base+"/v1/feed?after=now&wait=15", nil)
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+alice)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.Equal(t, http.StatusTooManyRequests, resp.StatusCode, "%s", body)
	require.NotEmpty(t, resp.Header.Get("Retry-After"))
	require.Contains(t, string(body), "too-many-streams")

	s := openStream(t, b.base, "after=now", bearer(alice))
	require.Equal(t, http.StatusTooManyRequests, s.Resp.StatusCode, "streams and long polls share the cap")
	s = openStream(t, b.base, "after=now", bearer(token(t, "bob")))
	require.Equal(t, http.StatusOK, s.Resp.StatusCode, "another recipient is served")
	s.Close()

	publish(t, b, "alice", 0, 1)
	wg.Wait()
	close(statuses)
	for status := range statuses {
		require.Equal(t, http.StatusOK, status)
	}
}

// tocsin_long_polls_parked counts long polls only, not streams.
func TestLongPollsParkedMetricCountsLongPollsOnly(t *testing.T) {
	t.Parallel()
	b := setup(t)
	s := openStream(t, b.base, "after=now", bearer(token(t, "alice")))
	require.Equal(t, http.StatusOK, s.Resp.StatusCode)
	metrics := func() string {
		resp, err := http.Get(b.base + "/metrics")
		require.NoError(t, err)
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		return string(body)
	}
	require.Eventually(t, func() bool { return b.node.Hub.Waiting() == 1 }, streamTimeout, 5*time.Millisecond)
	m := metrics()
	require.Contains(t, m, "tocsin_streams_open 1\n")
	require.Contains(t, m, "tocsin_long_polls_parked 0\n")
}

// A bearer token together with a ticket is refused before either is used: the ticket
// stays valid.
func TestBearerWithTicketRefused(t *testing.T) {
	t.Parallel()
	b := setup(t)
	tok := token(t, "alice")
	_, tk, _ := postTicket(t, b.base, tok)
	s := openStream(t, b.base, "after=now&ticket="+tk, bearer(tok))
	require.Equal(t, http.StatusBadRequest, s.Resp.StatusCode)
	require.Contains(t, s.Raw(), "invalid-request")
	s = openStream(t, b.base, "after=now&ticket="+tk, nil)
	require.Equal(t, http.StatusOK, s.Resp.StatusCode, "the ticket was not consumed: %s", s.Raw())
}

// Text PostgreSQL cannot store — NUL, lone surrogates, invalid UTF-8 — in a published
// body, a recipient, an inbox selection or an Idempotency-Key is a 400 invalid-request
// logged below ERROR; a token whose sub holds NUL is a 401.
func TestTextTheDatabaseCannotStore(t *testing.T) {
	t.Parallel()
	b := setup(t)
	pub := scoped(t, "svc", "tocsin:publish")
	for _, body := range []string{
		`{"recipients":["alice"],"topic":"t","data":{"x":"a\u0000b"}}`,
		`{"recipients":["al\u0000ice"],"topic":"t","data":{}}`,
		`{"recipients":["alice"],"topic":"t","data":{"x":"\ud800"}}`,
		`{"recipients":["alice\udfff"],"topic":"t","data":{}}`,
		"{\"recipients\":[\"alice\xc3\x28\"],\"topic\":\"t\",\"data\":{}}",
		`{"recipients":["alice"],"topic":"t","data":{}}{"trailing":1}`,
	} {
		status, out := call(t, http.MethodPost, b.base+"/v1/messages", pub, body)
		require.Equal(t, http.StatusBadRequest, status, "%s → %s", body, out)
		require.Contains(t, string(out), "invalid-request")
	}
	status, out := call(t, http.MethodPost, b.base+"/v1/messages", pub,
		`{"recipients":["alice"],"topic":"t","data":{}}`, "Idempotency-Key", "key-\xff")
	require.Equal(t, http.StatusBadRequest, status, "%s", out)
	for _, body := range []string{`{"ids":["\u0000"]}`, `{"up_to":"a\u0000"}`, "{\"ids\":[\"\xff\"]}"} {
		status, out := call(t, http.MethodPost, b.base+"/v1/inbox/read", token(t, "alice"), body)
		require.Equal(t, http.StatusBadRequest, status, "%s → %s", body, out)
	}
	status, _ = call(t, http.MethodGet, b.base+"/v1/feed", token(t, "al\x00ice"), nil)
	require.Equal(t, http.StatusUnauthorized, status)

	status, out = call(t, http.MethodPost, b.base+"/v1/messages", pub, `{"recipients":["alice"],"topic":"t","data":{"x":"ok"}}`)
	require.Equal(t, http.StatusAccepted, status, "%s", out)
	require.NotContains(t, b.logs.String(), "level=ERROR")
}

// The River UI refuses state-changing requests from another site, even with an admin
// token (as a header-injecting proxy would add it).
func TestRiverUIRefusesCrossSiteRequests(t *testing.T) {
	t.Parallel()
	b := setup(t)
	admin := scoped(t, "ops", "tocsin:admin")
	cancel := func(h ...string) int {
		status, _ := call(t, http.MethodPost, b.base+"/admin/river/api/jobs/cancel", admin, `{"job_ids":["1"]}`,
			append([]string{"Content-Type", "text/plain"}, h...)...)
		return status
	}
	require.Equal(t, http.StatusForbidden, cancel("Origin", "https://evil.example"))
	require.Equal(t, http.StatusForbidden, cancel("Sec-Fetch-Site", "cross-site"))
	require.Equal(t, http.StatusForbidden, cancel("Origin", "null", "Sec-Fetch-Site", "cross-site"))
	host := strings.TrimPrefix(b.base, "http://")
	require.NotEqual(t, http.StatusForbidden, cancel("Origin", "http://"+host, "Sec-Fetch-Site", "same-origin"))
	require.NotEqual(t, http.StatusForbidden, cancel())
}

// While PostgreSQL is down every endpoint that needs it answers 503 service-unavailable
// with Retry-After, never 500.
func TestDatabaseDownAnswers503(t *testing.T) {
	t.Parallel()
	cluster, url := pgtest.NewCluster(t, pgcluster.Config{})
	pool, err := pgxpool.New(context.Background(), url)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	_, err = demo.Install(context.Background(), pool)
	require.NoError(t, err)
	b := startNode(t, &pgtest.DB{Pool: pool, URL: url})
	alice := token(t, "alice")
	status, p := getFeed(t, http.DefaultClient, b.base, alice, "after=now")
	require.Equal(t, http.StatusOK, status)
	require.NoError(t, cluster.Stop())

	type endpoint struct{ method, path, body string }
	for _, e := range []endpoint{
		{"GET", "/v1/feed", ""},
		{"GET", "/v1/feed?after=" + p.Cursor + "&wait=2", ""},
		{"GET", "/v1/feed/stream?after=" + p.Cursor, ""},
		{"POST", "/v1/stream-tickets", ""},
		{"GET", "/v1/inbox", ""},
		{"GET", "/v1/inbox/counts", ""},
		{"POST", "/v1/inbox/read", `{"ids":["x-1"]}`},
		{"POST", "/v1/messages", `{"recipients":["bob"],"topic":"t","data":{}}`},
		{"GET", "/readyz", ""},
	} {
		var body any
		if e.body != "" {
			body = e.body
		}
		req := func() (int, http.Header, string) {
			var r io.Reader
			if e.body != "" {
				r = strings.NewReader(e.body)
			}
			req, err := http.NewRequest(e.method, b.base+e.path, r)
			require.NoError(t, err)
			req.Header.Set("Authorization", "Bearer "+alice)
			if body != nil {
				req.Header.Set("Content-Type", "application/json")
			}
			resp, err := http.DefaultClient.Do(req)
			require.NoError(t, err)
			defer resp.Body.Close()
			out, _ := io.ReadAll(resp.Body)
			return resp.StatusCode, resp.Header, string(out)
		}
		status, h, out := req()
		require.Equal(t, http.StatusServiceUnavailable, status, "%s %s: %s", e.method, e.path, out)
		require.NotEmpty(t, h.Get("Retry-After"), "%s %s", e.method, e.path)
		require.Contains(t, out, "service-unavailable")
	}
	require.NotContains(t, b.logs.String(), "level=ERROR msg=\"request failed\"")

	// River UI answers its own 500 when its queries fail: 503 here too.
	req, err := http.NewRequest(http.MethodGet, b.base+"/admin/river/api/jobs?state=available&limit=20", nil)
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+scoped(t, "ops", "tocsin:admin"))
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	out, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.Equal(t, http.StatusServiceUnavailable, resp.StatusCode, "river ui: %s", out)
	require.NotEmpty(t, resp.Header.Get("Retry-After"))
	require.Contains(t, string(out), "service-unavailable")

	// A scrape still reports the node; the gauges read from the database say -1.
	resp, err = http.Get(b.base + "/metrics")
	require.NoError(t, err)
	out, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode, "metrics: %s", out)
	require.Contains(t, string(out), "process_resident_memory_bytes")
	require.Contains(t, string(out), "tocsin_outbox_backlog -1\n")
}

// With TOCSIN_JWKS_URL, the node is not ready until the identity provider's key set was
// fetched, then verifies its RS256 tokens; HS256 tokens are refused.
func TestJWKSReadinessAndTokens(t *testing.T) {
	t.Parallel()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	require.NoError(t, err)
	jwk, err := jwkset.NewJWKFromKey(key.Public(), jwkset.JWKOptions{
		Metadata: jwkset.JWKMetadataOptions{KID: "k1", ALG: jwkset.AlgRS256, USE: jwkset.UseSig}})
	require.NoError(t, err)
	var up atomic.Bool
	idp := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		if !up.Load() {
			http.Error(w, "starting", http.StatusServiceUnavailable)
			return
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"keys": []jwkset.JWKMarshal{jwk.Marshal()}})
	}))
	t.Cleanup(idp.Close)

	db := pgtest.New(t)
	_, err = demo.Install(context.Background(), db.Pool)
	require.NoError(t, err)
	b := startNode(t, db, "--jwt-secret", "", "--jwks-url", idp.URL, "--jwt-algorithms", "RS256,ES256")
	ready := func() int {
		resp, err := http.Get(b.base + "/readyz")
		require.NoError(t, err)
		resp.Body.Close()
		return resp.StatusCode
	}
	require.Equal(t, http.StatusServiceUnavailable, ready())
	up.Store(true)
	// Readiness refreshes the key set through the unknown-kid limiter (one refresh per
	// auth.DefaultUnknownKIDInterval, 10 s), so the first success can take that long plus
	// a loaded machine's scheduling.
	require.Eventually(t, func() bool { return ready() == http.StatusOK }, 3*auth.DefaultUnknownKIDInterval+15*time.Second, 50*time.Millisecond)

	rs := jwt.NewWithClaims(jwt.SigningMethodRS256, jwt.MapClaims{"sub": "alice", "exp": time.Now().Add(time.Hour).Unix()})
	rs.Header["kid"] = "k1"
	signed, err := rs.SignedString(key)
	require.NoError(t, err)
	status, _ := getFeed(t, http.DefaultClient, b.base, signed, "after=now")
	require.Equal(t, http.StatusOK, status)
	status, _ = getFeed(t, http.DefaultClient, b.base, token(t, "alice"), "after=now")
	require.Equal(t, http.StatusUnauthorized, status, "HS256 is not accepted with a JWKS")
}
