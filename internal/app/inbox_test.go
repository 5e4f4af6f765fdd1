package app_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tocsin/tocsin/internal/auth"
)

func scoped(t *testing.T, sub, scope string) string {
	tok, err := auth.Mint(auth.Config{HS256Secret: []byte(secret)}, sub, time.Hour, scope)
	require.NoError(t, err)
	return tok
}

// call sends a request with a bearer token and returns the status and body.
func call(t *testing.T, method, url, tok string, body any, headers ...string) (int, []byte) {
	t.Helper()
	var r io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		r = strings.NewReader(b)
	default:
		raw, err := json.Marshal(b)
		require.NoError(t, err)
		r = bytes.NewReader(raw)
	}
	req, err := http.NewRequest(method, url, r)
	require.NoError(t, err)
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, out
}

type inboxPage struct {
	Entries []struct {
		ID     string          `json:"id"`
		Kind   string          `json:"kind"`
		Data   json.RawMessage `json:"data"`
		Key    json.RawMessage `json:"key"`
		ReadAt *time.Time      `json:"read_at"`
	} `json:"entries"`
	Next *string `json:"next"`
}

// waitFeed long-polls tok's feed from cursor until an event of kind arrives.
func waitFeed(t *testing.T, base, tok, cursor, kind string) (json.RawMessage, string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		_, p := getFeed(t, http.DefaultClient, base, tok, "after="+cursor+"&wait=5")
		for _, e := range p.Events {
			if e.Kind == kind {
				return e.Data, p.Cursor
			}
		}
		cursor = p.Cursor
	}
	t.Fatalf("no %s event", kind)
	return nil, ""
}

// Publishing, the inbox and its events, end to end over HTTP.
func TestPublishReadAndCountOverHTTP(t *testing.T) {
	t.Parallel()
	b := setup(t, "--max-message-bytes", "2048")
	svc := scoped(t, "svc", "tocsin:publish")
	alice, other := token(t, "alice"), token(t, "alice") // two clients of alice
	msg := map[string]any{"recipients": []string{"alice", "bob"}, "topic": "news", "data": map[string]any{"text": "hi"}}

	status, body := call(t, "POST", b.base+"/v1/messages", svc, msg, "Idempotency-Key", "k1")
	require.Equal(t, http.StatusAccepted, status, "%s", body)
	var first map[string]any
	require.NoError(t, json.Unmarshal(body, &first))
	require.Equal(t, []any{"alice", "bob"}, first["recipients"])
	status, again := call(t, "POST", b.base+"/v1/messages", svc, msg, "Idempotency-Key", "k1")
	require.Equal(t, http.StatusAccepted, status)
	require.JSONEq(t, string(body), string(again), "a retry gets the first answer")
	msg["topic"] = "other"
	status, body = call(t, "POST", b.base+"/v1/messages", svc, msg, "Idempotency-Key", "k1")
	require.Equal(t, http.StatusUnprocessableEntity, status, "%s", body)
	require.Contains(t, string(body), "idempotency-mismatch")

	status, _ = call(t, "POST", b.base+"/v1/messages", alice, msg)
	require.Equal(t, http.StatusForbidden, status, "no scope, no policy")
	status, _ = call(t, "POST", b.base+"/v1/messages", svc, map[string]any{"recipients": []string{}, "topic": "t", "data": 1})
	require.Equal(t, http.StatusBadRequest, status)
	status, body = call(t, "POST", b.base+"/v1/messages", svc, `{"recipients":["a"],"topic":"t","data":"`+strings.Repeat("x", 3000)+`"}`)
	require.Equal(t, http.StatusRequestEntityTooLarge, status, "%s", body)
	status, _ = call(t, "POST", b.base+"/v1/messages", "", msg)
	require.Equal(t, http.StatusUnauthorized, status)

	// Alice's other client follows her feed while her first client reads.
	_, cursor := waitFeed(t, b.base, other, "", "message")
	var page inboxPage
	require.Eventually(t, func() bool {
		status, body = call(t, "GET", b.base+"/v1/inbox?state=unread", alice, nil)
		require.Equal(t, http.StatusOK, status, "%s", body)
		require.NoError(t, json.Unmarshal(body, &page))
		return len(page.Entries) == 1
	}, 10*time.Second, 10*time.Millisecond)
	require.Equal(t, "message", page.Entries[0].Kind)
	require.Contains(t, string(page.Entries[0].Key), first["message_id"].(string))
	status, body = call(t, "GET", b.base+"/v1/inbox/counts", alice, nil)
	require.Equal(t, http.StatusOK, status)
	require.JSONEq(t, `{"unread": 1, "unseen": 1}`, string(body))

	status, body = call(t, "POST", b.base+"/v1/inbox/read", alice, map[string]any{"ids": []string{page.Entries[0].ID}})
	require.Equal(t, http.StatusOK, status, "%s", body)
	require.JSONEq(t, `{"changed": 1, "counts": {"unread": 0, "unseen": 0}}`, string(body))
	status, body = call(t, "POST", b.base+"/v1/inbox/read", alice, map[string]any{"ids": []string{page.Entries[0].ID}})
	require.Equal(t, http.StatusOK, status)
	require.JSONEq(t, `{"changed": 0, "counts": {"unread": 0, "unseen": 0}}`, string(body), "idempotent")
	status, _ = call(t, "POST", b.base+"/v1/inbox/archive", alice, map[string]any{})
	require.Equal(t, http.StatusBadRequest, status, "neither ids nor up_to")
	status, _ = call(t, "POST", b.base+"/v1/inbox/archive", alice,
		map[string]any{"ids": []string{page.Entries[0].ID}, "up_to": page.Entries[0].ID})
	require.Equal(t, http.StatusBadRequest, status, "both ids and up_to (oneOf)")

	// The other client hears of the read, with the new counts.
	data, _ := waitFeed(t, b.base, other, cursor, "inbox")
	var ev struct {
		Action string         `json:"action"`
		IDs    []string       `json:"ids"`
		Counts map[string]int `json:"counts"`
	}
	require.NoError(t, json.Unmarshal(data, &ev))
	require.Equal(t, "read", ev.Action)
	require.Equal(t, []string{page.Entries[0].ID}, ev.IDs)
	require.Equal(t, map[string]int{"unread": 0, "unseen": 0}, ev.Counts)
}

// A token without the publish scope may message whom the policy allows, and no one else.
func TestPublishPolicy(t *testing.T) {
	t.Parallel()
	b := setup(t, "--publish-policy-sql", `select exists (select 1 from portfolio_member a join portfolio_member b
		using (portfolio_id) where a.user_id = :sender and b.user_id = :recipient)`)
	alice := token(t, "alice")
	dm := func(to string) int {
		status, _ := call(t, "POST", b.base+"/v1/messages", alice, map[string]any{"recipients": []string{to}, "topic": "dm", "data": "hi"})
		return status
	}
	require.Equal(t, http.StatusAccepted, dm("bob"), "alice and bob share a portfolio")
	require.Equal(t, http.StatusForbidden, dm("mallory"))
	data, _ := waitFeed(t, b.base, token(t, "bob"), "", "message")
	require.JSONEq(t, `"hi"`, string(data))
}

// Grouped messages become one digest; its delay after the window's end is logged.
func TestGroupedMessagesArriveAsOneDigest(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t, "--message-group-window", "1s", "--group-tick", "50ms")
	svc := scoped(t, "svc", "tocsin:publish")
	for i := range 3 {
		status, body := call(t, "POST", b.base+"/v1/messages", svc, map[string]any{
			"recipients": []string{"alice"}, "topic": "like", "data": map[string]int{"n": i}, "group": "post-7"})
		require.Equal(t, http.StatusAccepted, status, "%s", body)
	}
	data, _ := waitFeed(t, b.base, token(t, "alice"), "", "digest")
	var d struct {
		Count int             `json:"count"`
		Data  json.RawMessage `json:"data"`
	}
	require.NoError(t, json.Unmarshal(data, &d))
	require.Equal(t, 3, d.Count)
	require.JSONEq(t, `{"n": 2}`, string(d.Data))
	var delay time.Duration
	require.NoError(t, b.db.Pool.QueryRow(ctx, `SELECT sequenced_at - ((data->>'first_at')::timestamptz + interval '1 second')
		FROM tocsin.feed WHERE kind = 'digest'`).Scan(&delay))
	t.Logf("window end → digest in feed: %s", delay)
}

// The River UI answers only tokens with the tocsin:admin scope.
func TestRiverUIRequiresAdminScope(t *testing.T) {
	t.Parallel()
	b := setup(t)
	status, _ := call(t, "GET", b.base+"/admin/river/", "", nil)
	require.Equal(t, http.StatusUnauthorized, status)
	status, _ = call(t, "GET", b.base+"/admin/river/", token(t, "alice"), nil)
	require.Equal(t, http.StatusForbidden, status)
	admin := scoped(t, "ops", "tocsin:admin")
	status, body := call(t, "GET", b.base+"/admin/river/", admin, nil)
	require.Equal(t, http.StatusOK, status, "%s", body)
	status, body = call(t, "GET", b.base+"/admin/river/api/jobs?state=completed&limit=5", admin, nil)
	require.Equal(t, http.StatusOK, status, "%s", body)
}
