package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/tocsin/tocsin/api"
	"github.com/tocsin/tocsin/internal/feed"
)

// Defaults of GET /v1/feed's parameters; the spec states the same ones.
const (
	defaultLimit = 100
	defaultWait  = 0
)

var errShuttingDown = fmt.Errorf("%w: shutting down", errUnavailable)

// GetFeed serves GET /v1/feed: short polling with wait=0, long polling otherwise.
func (s endpoints) GetFeed(ctx context.Context, req api.GetFeedRequestObject) (api.GetFeedResponseObject, error) {
	claims, ok := claimsFrom(ctx)
	if !ok {
		return nil, errors.New("feed request reached its handler unauthenticated")
	}
	after := valueOr(req.Params.After, "")
	limit := int(valueOr(req.Params.Limit, defaultLimit))
	wait := min(time.Duration(valueOr(req.Params.Wait, defaultWait))*time.Second, s.cfg.LongPollMax)

	if wait > 0 {
		// A parked long poll holds a connection: it counts against the node's limit and
		// its recipient's, like a stream.
		release, err := s.limits.admitHeld(claims.Subject)
		if err != nil {
			return nil, err
		}
		defer release()
		s.polls.Add(1)
		defer s.polls.Add(-1)
		s.liftReadDeadline(ctx)
		s.extendWriteDeadline(ctx, wait+s.cfg.WriteTimeout)
	}
	// On shutdown the feed answers parked polls at once (Feed.EndWaits): an empty page.
	events, cursor, err := s.deps.Feed.Poll(requestContext(ctx), claims.Subject, after, limit, wait)
	if err != nil {
		return nil, fmt.Errorf("polling feed of %q after %q: %w", claims.Subject, after, err)
	}
	if s.cfg.DeliveredFunc != nil && len(events) > 0 {
		transport := "short_poll"
		if wait > 0 {
			transport = "long_poll"
		}
		s.cfg.DeliveredFunc(transport, events)
	}
	return api.GetFeed200JSONResponse{Events: apiEvents(events), Cursor: cursor}, nil
}

// extendWriteDeadline lets the response be written up to d from now, beyond the
// http.Server's WriteTimeout, so a long poll is not cut off while it waits.
func (s endpoints) extendWriteDeadline(ctx context.Context, d time.Duration) {
	gc, ok := ctx.(*gin.Context)
	if !ok {
		return
	}
	if err := http.NewResponseController(gc.Writer).SetWriteDeadline(time.Now().Add(d)); err != nil {
		s.logger.DebugContext(ctx, "cannot extend write deadline", slog.Any("error", err))
	}
}

// requestContext returns the request's own context rather than the pooled *gin.Context.
func requestContext(ctx context.Context) context.Context {
	if gc, ok := ctx.(*gin.Context); ok {
		return gc.Request.Context()
	}
	return ctx
}

func apiEvents(events []feed.Event) []api.Event {
	out := make([]api.Event, len(events))
	for i, e := range events {
		out[i] = api.Event{
			Id:        e.ID,
			Topic:     e.Topic,
			Kind:      e.Kind,
			Op:        e.Op,
			Table:     e.Table,
			Key:       rawOrNull(e.Key),
			Data:      rawOrNull(e.Data),
			Old:       rawOrNull(e.Old),
			Changed:   e.Changed,
			Group:     e.Group,
			Replaces:  e.Replaces,
			CreatedAt: e.CreatedAt,
		}
	}
	return out
}

// rawOrNull makes an empty raw value encode as null instead of failing the encoder.
func rawOrNull(m json.RawMessage) json.RawMessage {
	if len(m) == 0 {
		return nil
	}
	return m
}

func valueOr[T any](p *T, def T) T {
	if p == nil {
		return def
	}
	return *p
}
