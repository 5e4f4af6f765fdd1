package httpapi

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"

	"github.com/gin-gonic/gin"

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
	m := publish.Message{Recipients: req.Body.Recipients, Topic: req.Body.Topic, Data: req.Body.Data, Group: req.Body.Group}
	res, err := s.deps.Publisher.Publish(requestContext(ctx), claims.Subject, slices.Contains(claims.Scopes, ScopePublish),
		valueOr(req.Params.IdempotencyKey, ""), m)
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

// limitBody reads the request body up to Config.MaxMessageBytes, answering 413 beyond,
// before the validator or a handler sees it.
func (s *Server) limitBody(c *gin.Context) {
	if c.Request.Body == nil || c.Request.Body == http.NoBody {
		c.Next()
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(c.Writer, c.Request.Body, s.cfg.MaxMessageBytes))
	var tooLarge *http.MaxBytesError
	switch {
	case errors.As(err, &tooLarge):
		s.writeProblem(c, fmt.Errorf("%w: more than %d bytes", errTooLarge, s.cfg.MaxMessageBytes))
		return
	case err != nil:
		s.writeProblem(c, &requestError{fmt.Errorf("reading the body: %w", err)})
		return
	}
	c.Request.Body = io.NopCloser(bytes.NewReader(body))
	c.Next()
}
