// Package publish writes messages to the outbox for the publish API (POST /v1/messages):
// system messages from callers with the publish scope, and user-to-user messages that a
// configured SQL policy allows.
//
// Invariants:
//   - A message reaches all its recipients or none: one transaction writes every outbox
//     row (and the idempotency record).
//   - An idempotency key makes retries safe: the same sender, key and request give the
//     first answer again and write nothing; the same key with another request is
//     ErrIdempotencyMismatch. Concurrent retries serialise on the key's row.
package publish

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tocsin/tocsin/internal/outbox"
	"github.com/tocsin/tocsin/internal/sqlfile"
)

// Errors.
var (
	// ErrForbidden is returned when the sender may not message a recipient (no publish
	// scope, and the policy is unset or says no).
	ErrForbidden = errors.New("publishing to this recipient is not allowed")
	// ErrIdempotencyMismatch is returned when an idempotency key is reused for another
	// request.
	ErrIdempotencyMismatch = errors.New("idempotency key reused with another request")
	// ErrInvalid is returned (wrapped, with the reason) for a message that cannot be sent.
	ErrInvalid = errors.New("invalid message")
)

// MaxRecipientsDefault is the default cap on recipients per message.
const MaxRecipientsDefault = 1000

// Message is one message to publish.
type Message struct {
	Recipients []string        `json:"recipients"`
	Topic      string          `json:"topic"`
	Data       json.RawMessage `json:"data"`
	// Group, when set, folds the message into a digest per recipient and group
	// (TOCSIN_MESSAGE_GROUP_WINDOW / _MAX).
	Group *string `json:"group,omitempty"`
}

// Result is the answer to a publish.
type Result struct {
	// MessageID identifies the message; each recipient's feed entry carries it in `key`
	// ({"message_id": …}).
	MessageID string `json:"message_id"`
	// Recipients are the distinct recipients the message was written for.
	Recipients []string `json:"recipients"`
}

var (
	//go:embed queries.sql
	queriesSQL              string
	queries                 = sqlfile.Parse("publish/queries.sql", queriesSQL)
	idempotencyKeyClaimSQL  = queries.Get("idempotency_key_claim")
	idempotencyKeyReadSQL   = queries.Get("idempotency_key_read")
	idempotencyKeyAnswerSQL = queries.Get("idempotency_key_answer")
)

// Config configures a Publisher.
type Config struct {
	// PolicySQL, when set, says whether a sender without the publish scope may message a
	// recipient: a query returning one boolean, with :sender and :recipient bound as
	// parameters.
	PolicySQL string
	// MaxRecipients caps a message's recipients. Default MaxRecipientsDefault.
	MaxRecipients int
	// WakeFunc, when set, is called after a message committed (the local sequencer).
	WakeFunc func()
}

// Publisher publishes messages.
type Publisher struct {
	pool   *pgxpool.Pool
	cfg    Config
	policy string // PolicySQL with $1 = sender, $2 = recipient
}

// :sender and :recipient, but not a ::cast.
var (
	senderParam    = regexp.MustCompile(`(^|[^:]):sender\b`)
	recipientParam = regexp.MustCompile(`(^|[^:]):recipient\b`)
)

func (c *Config) withDefaults() {
	if c.MaxRecipients <= 0 {
		c.MaxRecipients = MaxRecipientsDefault
	}
}

// New returns a Publisher. A policy that names neither parameter is an error.
func New(pool *pgxpool.Pool, cfg Config) (*Publisher, error) {
	cfg.withDefaults()
	p := &Publisher{pool: pool, cfg: cfg}
	if cfg.PolicySQL != "" {
		if !senderParam.MatchString(cfg.PolicySQL) && !recipientParam.MatchString(cfg.PolicySQL) {
			return nil, errors.New("publish policy: the query uses neither :sender nor :recipient")
		}
		p.policy = recipientParam.ReplaceAllString(senderParam.ReplaceAllString(cfg.PolicySQL, "${1}$$1::text"), "${1}$$2::text")
	}
	return p, nil
}

// Check validates m and returns its distinct recipients.
func (p *Publisher) Check(m Message) ([]string, error) {
	if m.Topic == "" {
		return nil, fmt.Errorf("%w: topic is empty", ErrInvalid)
	}
	if len(m.Recipients) == 0 {
		return nil, fmt.Errorf("%w: no recipients", ErrInvalid)
	}
	if len(m.Recipients) > p.cfg.MaxRecipients {
		return nil, fmt.Errorf("%w: %d recipients, at most %d", ErrInvalid, len(m.Recipients), p.cfg.MaxRecipients)
	}
	out := make([]string, 0, len(m.Recipients))
	for _, r := range m.Recipients {
		if r == "" {
			return nil, fmt.Errorf("%w: an empty recipient", ErrInvalid)
		}
		if !slices.Contains(out, r) {
			out = append(out, r)
		}
	}
	if m.Group != nil && *m.Group == "" {
		return nil, fmt.Errorf("%w: group is empty", ErrInvalid)
	}
	return out, nil
}

// Publish writes m from sender. privileged senders (publish scope) skip the policy. A
// non-empty idempotencyKey makes the call safe to retry.
func (p *Publisher) Publish(ctx context.Context, sender string, privileged bool, idempotencyKey string, m Message) (Result, error) {
	recipients, err := p.Check(m)
	if err != nil {
		return Result{}, err
	}
	request, err := json.Marshal(m)
	if err != nil {
		return Result{}, fmt.Errorf("encoding the message: %w", err)
	}
	hash := sha256.Sum256(append([]byte(fmt.Sprintf("%t\n", privileged)), request...))
	var res Result
	wrote := false
	err = pgx.BeginFunc(ctx, p.pool, func(tx pgx.Tx) error {
		if idempotencyKey != "" {
			replayed, err := replay(ctx, tx, sender, idempotencyKey, hash[:], &res)
			if err != nil || replayed {
				return err
			}
		}
		if !privileged {
			if err := p.authorize(ctx, tx, sender, recipients); err != nil {
				return err
			}
		}
		res = Result{MessageID: newID(), Recipients: recipients}
		key, _ := json.Marshal(map[string]string{"message_id": res.MessageID, "sender": sender})
		rows := make([]outbox.Row, len(recipients))
		for i, r := range recipients {
			rows[i] = outbox.Row{Recipient: r, Topic: m.Topic, Kind: "message", Key: key, Data: m.Data}
			if m.Group != nil {
				rows[i].GroupKey = *m.Group
			}
		}
		if err := outbox.InsertTx(ctx, tx, rows); err != nil {
			return fmt.Errorf("writing the message: %w", err)
		}
		wrote = true
		if idempotencyKey != "" {
			body, _ := json.Marshal(res)
			if _, err := tx.Exec(ctx, idempotencyKeyAnswerSQL, sender, idempotencyKey, body); err != nil {
				return fmt.Errorf("recording the idempotency key: %w", err)
			}
		}
		return nil
	})
	if err != nil {
		return Result{}, fmt.Errorf("publishing %q from %q: %w", m.Topic, sender, err)
	}
	if wrote && p.cfg.WakeFunc != nil {
		p.cfg.WakeFunc()
	}
	return res, nil
}

// replay claims the idempotency key, or, when it was used, loads its answer into res.
func replay(ctx context.Context, tx pgx.Tx, sender, key string, hash []byte, res *Result) (bool, error) {
	// A concurrent first use holds the row: this waits for it to commit or roll back.
	tag, err := tx.Exec(ctx, idempotencyKeyClaimSQL, sender, key, hash)
	if err != nil {
		return false, fmt.Errorf("claiming the idempotency key: %w", err)
	}
	if tag.RowsAffected() == 1 {
		return false, nil
	}
	var (
		stored []byte
		body   []byte
	)
	if err := tx.QueryRow(ctx, idempotencyKeyReadSQL, sender, key).Scan(&stored, &body); err != nil {
		return false, fmt.Errorf("reading the idempotency key: %w", err)
	}
	if string(stored) != string(hash) {
		return false, ErrIdempotencyMismatch
	}
	if err := json.Unmarshal(body, res); err != nil {
		return false, fmt.Errorf("reading the idempotency key's answer: %w", err)
	}
	return true, nil
}

// authorize asks the policy about every recipient.
func (p *Publisher) authorize(ctx context.Context, tx pgx.Tx, sender string, recipients []string) error {
	if p.policy == "" {
		return fmt.Errorf("%w: no publish scope and no publish policy", ErrForbidden)
	}
	for _, r := range recipients {
		var ok *bool
		if err := tx.QueryRow(ctx, p.policy, sender, r).Scan(&ok); err != nil {
			return fmt.Errorf("running the publish policy: %w", err)
		}
		if ok == nil || !*ok {
			return fmt.Errorf("%w: %q may not message %q", ErrForbidden, sender, r)
		}
	}
	return nil
}

func newID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
