package ticket_test

import (
	"context"
	"crypto/sha256"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tocsin/tocsin/internal/pgtest"
	"github.com/tocsin/tocsin/internal/ticket"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func TestIssueAndRedeemOnce(t *testing.T) {
	t.Parallel()
	db := pgtest.New(t)
	ctx := context.Background()
	s := ticket.NewStore(db.Pool, 0)
	require.Equal(t, ticket.TTLDefault, s.TTL())
	tokenExp := time.Now().Add(time.Hour).Truncate(time.Microsecond)

	tk, err := s.Issue(ctx, "alice", tokenExp)
	require.NoError(t, err)
	require.Len(t, tk.Value, 43)
	require.WithinDuration(t, time.Now().Add(ticket.TTLDefault), tk.ExpiresAt, 5*time.Second)

	// Only the hash is stored.
	var stored []byte
	var n int
	require.NoError(t, db.Pool.QueryRow(ctx, `SELECT ticket_hash, count(*) OVER () FROM tocsin.stream_ticket`).Scan(&stored, &n))
	require.Equal(t, 1, n)
	sum := sha256.Sum256([]byte(tk.Value))
	require.Equal(t, sum[:], stored)

	g, err := s.Redeem(ctx, tk.Value)
	require.NoError(t, err)
	require.Equal(t, "alice", g.Recipient)
	require.True(t, tokenExp.Equal(g.TokenExpiresAt), "the grant carries the token's expiry")

	_, err = s.Redeem(ctx, tk.Value)
	require.ErrorIs(t, err, ticket.ErrInvalid, "single use")
	for _, v := range []string{"", "unknown", strings.Repeat("x", 129)} {
		_, err = s.Redeem(ctx, v)
		require.ErrorIs(t, err, ticket.ErrInvalid, "%q", v)
	}
}

// Many nodes redeem the same ticket at the same moment: exactly one wins.
func TestConcurrentRedemptionHasExactlyOneWinner(t *testing.T) {
	t.Parallel()
	db := pgtest.New(t)
	ctx := context.Background()
	// Each redeemer is its own store, as on its own node.
	const redeemers = 16
	tk, err := ticket.NewStore(db.Pool, time.Minute).Issue(ctx, "alice", time.Now().Add(time.Hour))
	require.NoError(t, err)
	start := make(chan struct{})
	grants := make([]ticket.Grant, redeemers)
	errs := make([]error, redeemers)
	var wg sync.WaitGroup
	for i := range redeemers {
		s := ticket.NewStore(db.Pool, time.Minute)
		wg.Go(func() {
			<-start
			grants[i], errs[i] = s.Redeem(ctx, tk.Value)
		})
	}
	close(start)
	wg.Wait()
	winners := 0
	for i, err := range errs {
		if err == nil {
			winners++
			require.Equal(t, "alice", grants[i].Recipient)
			continue
		}
		require.ErrorIs(t, err, ticket.ErrInvalid)
	}
	require.Equal(t, 1, winners)
}

// A ticket never outlives its token, an expired ticket is refused (and consumed), and
// issuing sweeps the expired ones.
func TestExpiry(t *testing.T) {
	t.Parallel()
	db := pgtest.New(t)
	ctx := context.Background()
	s := ticket.NewStore(db.Pool, time.Hour)

	soon := time.Now().Add(2 * time.Minute)
	tk, err := s.Issue(ctx, "alice", soon)
	require.NoError(t, err)
	require.WithinDuration(t, soon, tk.ExpiresAt, time.Millisecond, "capped by the token's expiry")

	old, err := s.Issue(ctx, "alice", time.Now().Add(time.Hour))
	require.NoError(t, err)
	_, err = db.Pool.Exec(ctx, `UPDATE tocsin.stream_ticket SET expires_at = now() - interval '1 second'`)
	require.NoError(t, err)
	_, err = s.Redeem(ctx, old.Value)
	require.ErrorIs(t, err, ticket.ErrInvalid)
	require.ErrorContains(t, err, "expired")
	_, err = s.Redeem(ctx, old.Value)
	require.ErrorContains(t, err, "already used", "an expired ticket is consumed too")

	// tk expired by the UPDATE too; the next Issue sweeps it.
	_, err = s.Issue(ctx, "bob", time.Now().Add(time.Hour))
	require.NoError(t, err)
	var n int
	require.NoError(t, db.Pool.QueryRow(ctx, `SELECT count(*) FROM tocsin.stream_ticket`).Scan(&n))
	require.Equal(t, 1, n, "only bob's ticket is left")
	_, err = s.Redeem(ctx, tk.Value)
	require.True(t, errors.Is(err, ticket.ErrInvalid))
}
