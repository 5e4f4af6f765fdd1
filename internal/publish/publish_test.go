package publish_test

import (
	"context"
	"encoding/json"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/tocsin/tocsin/internal/pgtest"
	"github.com/tocsin/tocsin/internal/publish"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

const policy = `select exists (select 1 from portfolio_member a join portfolio_member b using (portfolio_id)
	where a.user_id = :sender and b.user_id = :recipient)`

func setup(t *testing.T) (*pgtest.DB, *publish.Publisher) {
	t.Helper()
	db := pgtest.New(t)
	_, err := db.Pool.Exec(context.Background(), `
		CREATE TABLE portfolio_member (portfolio_id int, user_id text);
		INSERT INTO portfolio_member VALUES (1, 'alice'), (1, 'bob'), (2, 'carol')`)
	require.NoError(t, err)
	p, err := publish.New(db.Pool, publish.Config{PolicySQL: policy, MaxRecipients: 3})
	require.NoError(t, err)
	return db, p
}

func outbox(t *testing.T, db *pgtest.DB) int {
	var n int
	require.NoError(t, db.Pool.QueryRow(context.Background(), `SELECT count(*) FROM tocsin.outbox`).Scan(&n))
	return n
}

func TestPublishWritesOneRowPerDistinctRecipient(t *testing.T) {
	t.Parallel()
	db, p := setup(t)
	res, err := p.Publish(context.Background(), "service", true, "", publish.Message{
		Recipients: []string{"alice", "bob", "alice"}, Topic: "news", Data: json.RawMessage(`{"a": 1}`)})
	require.NoError(t, err)
	require.Equal(t, []string{"alice", "bob"}, res.Recipients)
	require.NotEmpty(t, res.MessageID)
	var key []byte
	require.NoError(t, db.Pool.QueryRow(context.Background(), `SELECT key FROM tocsin.outbox WHERE recipient = 'bob'`).Scan(&key))
	require.JSONEq(t, `{"message_id": "`+res.MessageID+`", "sender": "service"}`, string(key))
	require.Equal(t, 2, outbox(t, db))
}

func TestPolicyDecidesUserToUserMessages(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db, p := setup(t)
	m := publish.Message{Recipients: []string{"bob"}, Topic: "dm", Data: json.RawMessage(`{}`)}
	_, err := p.Publish(ctx, "alice", false, "", m)
	require.NoError(t, err, "alice and bob share portfolio 1")
	m.Recipients = []string{"bob", "carol"}
	_, err = p.Publish(ctx, "alice", false, "", m)
	require.ErrorIs(t, err, publish.ErrForbidden, "carol is not in alice's portfolio")
	require.Equal(t, 1, outbox(t, db), "all or nothing")

	noPolicy, err := publish.New(db.Pool, publish.Config{})
	require.NoError(t, err)
	_, err = noPolicy.Publish(ctx, "alice", false, "", publish.Message{Recipients: []string{"bob"}, Topic: "dm"})
	require.ErrorIs(t, err, publish.ErrForbidden)
	_, err = publish.New(db.Pool, publish.Config{PolicySQL: "select true"})
	require.Error(t, err)
}

func TestInvalidMessages(t *testing.T) {
	t.Parallel()
	_, p := setup(t)
	for _, m := range []publish.Message{
		{Topic: "t"},
		{Recipients: []string{"a", "b", "c", "d"}, Topic: "t"},
		{Recipients: []string{""}, Topic: "t"},
		{Recipients: []string{"a"}},
	} {
		_, err := p.Publish(context.Background(), "s", true, "", m)
		require.ErrorIs(t, err, publish.ErrInvalid)
	}
}

// Retries with one key give the first answer and write nothing more, even concurrently;
// another request under the same key is refused.
func TestIdempotencyKey(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db, p := setup(t)
	m := publish.Message{Recipients: []string{"alice", "bob"}, Topic: "t", Data: json.RawMessage(`{"x": 1}`)}
	results := make([]publish.Result, 8)
	errs := make([]error, len(results))
	var wg sync.WaitGroup
	for i := range results {
		wg.Go(func() { results[i], errs[i] = p.Publish(ctx, "svc", true, "key-1", m) })
	}
	wg.Wait()
	for _, err := range errs {
		require.NoError(t, err)
	}
	for _, r := range results {
		require.Equal(t, results[0], r)
	}
	require.Equal(t, 2, outbox(t, db))
	m.Data = json.RawMessage(`{"x": 2}`)
	_, err := p.Publish(ctx, "svc", true, "key-1", m)
	require.ErrorIs(t, err, publish.ErrIdempotencyMismatch)
	_, err = p.Publish(ctx, "other-sender", true, "key-1", m)
	require.NoError(t, err, "keys belong to their sender")
}
