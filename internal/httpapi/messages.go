package httpapi

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/tocsin/tocsin/api"
	"github.com/tocsin/tocsin/internal/publish"
)

// Scopes a token's `scope` claim may hold.
const (
	// ScopePublish lets a token publish messages to anyone.
	ScopePublish = "tocsin:publish"
	// ScopeAdmin opens the River UI at /admin/river.
	ScopeAdmin = "tocsin:admin"
)

// DefaultMaxMessageBytes is the default limit of a request body.
const DefaultMaxMessageBytes = 64 << 10

// Publisher publishes messages (a *publish.Publisher).
type Publisher interface {
	// Publish writes m from sender; privileged senders skip the publish policy.
	// Errors: publish.ErrInvalid, publish.ErrForbidden, publish.ErrIdempotencyMismatch, others.
	Publish(ctx context.Context, sender string, privileged bool, idempotencyKey string, m publish.Message) (publish.Result, error)
}

var (
	// errForbidden marks errors answered with 403 forbidden.
	errForbidden = errors.New("forbidden")
	// errTooLarge marks a body over Config.MaxMessageBytes (413).
	errTooLarge  = errors.New("request body too large")
	errNoPublish = fmt.Errorf("%w: publishing is not served by this node", errNotFound)
)

// PublishMessage serves POST /v1/messages.
func (s endpoints) PublishMessage(ctx context.Context, req api.PublishMessageRequestObject) (api.PublishMessageResponseObject, error) {
	if s.deps.Publisher == nil {
		return nil, errNoPublish
	}
	claims, ok := claimsFrom(ctx)
	if !ok {
		return nil, errors.New("publish request reached its handler unauthenticated")
	}
	if req.Body == nil {
		return nil, &requestError{errors.New("a body is required")}
	}
	key := valueOr(req.Params.IdempotencyKey, "")
	if err := checkText("Idempotency-Key", key); err != nil {
		return nil, err
	}
	m := publish.Message{Recipients: req.Body.Recipients, Topic: req.Body.Topic, Data: req.Body.Data, Group: req.Body.Group}
	res, err := s.deps.Publisher.Publish(requestContext(ctx), claims.Subject, slices.Contains(claims.Scopes, ScopePublish),
		key, m)
	switch {
	case errors.Is(err, publish.ErrInvalid):
		return nil, &requestError{err}
	case errors.Is(err, publish.ErrForbidden):
		return nil, fmt.Errorf("%w: %w", errForbidden, err)
	case err != nil:
		return nil, err
	}
	return api.PublishMessage202JSONResponse{MessageId: res.MessageID, Recipients: res.Recipients}, nil
}
