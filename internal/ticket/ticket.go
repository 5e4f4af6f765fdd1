// Package ticket issues and redeems stream tickets: short-lived, single-use credentials
// that stand in for a bearer token where a client cannot send headers (a browser's
// EventSource opening GET /v1/feed/stream?ticket=…).
//
// Invariants:
//   - A ticket is redeemed at most once, on any node: redeeming deletes its row
//     (DELETE … RETURNING), so of two concurrent redemptions exactly one succeeds.
//   - Only a SHA-256 hash of a ticket is stored; the ticket itself is never stored or logged.
//   - A ticket never outlives the token it was issued for, and a redeemed ticket carries
//     that token's expiry, so the stream it opens ends when the token would have.
//   - Expiry is judged by the database's clock, so nodes with skewed clocks agree.
package ticket

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	_ "embed"
	"encoding/base64"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tocsin/tocsin/internal/sqlfile"
)

var (
	//go:embed queries.sql
	queriesSQL      string
	queries         = sqlfile.Parse("ticket/queries.sql", queriesSQL)
	ticketIssueSQL  = queries.Get("ticket_issue")
	ticketRedeemSQL = queries.Get("ticket_redeem")
)

// TTLDefault is how long a ticket stays valid when Store is given no TTL.
const TTLDefault = 60 * time.Second

// ErrInvalid is returned by Redeem for a ticket that is unknown, already used or expired.
var ErrInvalid = errors.New("stream ticket invalid")

// maxTicketLen bounds what Redeem hashes; issued tickets are 43 characters.
const maxTicketLen = 128

// Ticket is an issued ticket.
type Ticket struct {
	// Value is the secret to send as ?ticket=. Never log it.
	Value string
	// ExpiresAt is when the ticket stops being accepted.
	ExpiresAt time.Time
}

// Grant is what a redeemed ticket grants: the recipient, until the token's expiry.
type Grant struct {
	Recipient      string
	TokenExpiresAt time.Time
}

// Store issues and redeems tickets in tocsin.stream_ticket.
type Store struct {
	pool *pgxpool.Pool
	ttl  time.Duration
}

// NewStore returns a Store whose tickets live ttl (TTLDefault when ttl <= 0).
func NewStore(pool *pgxpool.Pool, ttl time.Duration) *Store {
	if ttl <= 0 {
		ttl = TTLDefault
	}
	return &Store{pool: pool, ttl: ttl}
}

// TTL is how long a new ticket stays valid (less when the token expires sooner).
func (s *Store) TTL() time.Duration { return s.ttl }

// Issue returns a new ticket for recipient, valid for the store's TTL but never beyond
// tokenExpiresAt. Expired tickets are swept in the same statement.
func (s *Store) Issue(ctx context.Context, recipient string, tokenExpiresAt time.Time) (Ticket, error) {
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return Ticket{}, fmt.Errorf("drawing a stream ticket: %w", err)
	}
	value := base64.RawURLEncoding.EncodeToString(raw)
	var expiresAt time.Time
	err := s.pool.QueryRow(ctx, ticketIssueSQL,
		hash(value), recipient, tokenExpiresAt, s.ttl).Scan(&expiresAt)
	if err != nil {
		return Ticket{}, fmt.Errorf("storing a stream ticket for %q: %w", recipient, err)
	}
	return Ticket{Value: value, ExpiresAt: expiresAt}, nil
}

// Redeem consumes value and returns what it grants, or ErrInvalid when the ticket is
// unknown, was already redeemed or has expired. A ticket is consumed even when expired.
func (s *Store) Redeem(ctx context.Context, value string) (Grant, error) {
	if value == "" || len(value) > maxTicketLen {
		return Grant{}, ErrInvalid
	}
	var (
		g     Grant
		valid bool
	)
	err := s.pool.QueryRow(ctx, ticketRedeemSQL,
		hash(value)).Scan(&g.Recipient, &g.TokenExpiresAt, &valid)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return Grant{}, fmt.Errorf("%w: unknown or already used", ErrInvalid)
	case err != nil:
		return Grant{}, fmt.Errorf("redeeming a stream ticket: %w", err)
	case !valid:
		return Grant{}, fmt.Errorf("%w: expired", ErrInvalid)
	}
	return g, nil
}

func hash(value string) []byte {
	sum := sha256.Sum256([]byte(value))
	return sum[:]
}
