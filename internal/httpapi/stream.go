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
	"github.com/tocsin/tocsin/internal/stream"
)

// StreamFeed serves GET /v1/feed/stream. Everything that can be refused is refused here,
// with a problem, before the stream starts: push off (204), shutdown (503), the caps (429,
// 503), a malformed (400) or expired (410) cursor.
func (s endpoints) StreamFeed(ctx context.Context, req api.StreamFeedRequestObject) (api.StreamFeedResponseObject, error) {
	claims, ok := claimsFrom(ctx)
	if !ok {
		return nil, errors.New("stream request reached its handler unauthenticated")
	}
	on, pushOff := s.push()
	if !on || s.deps.FollowFunc == nil {
		return api.StreamFeed204Response{}, nil
	}
	if s.draining() {
		return nil, errShuttingDown
	}
	release, err := s.limits.admitHeld(claims.Subject)
	if err != nil {
		return nil, err
	}
	s.liftReadDeadline(ctx)
	after := valueOr(req.Params.After, "")
	if id := valueOr(req.Params.LastEventID, ""); id != "" {
		after = id
	}
	reqCtx := requestContext(ctx)
	f, err := s.deps.FollowFunc(reqCtx, claims.Subject, after, s.cfg.StreamBuffer)
	if err != nil {
		release()
		return nil, fmt.Errorf("following feed of %q after %q: %w", claims.Subject, after, err)
	}
	return sseResponse{
		server:    s.Server,
		ctx:       reqCtx,
		takeOver:  takeOver(ctx),
		recipient: claims.Subject,
		follower:  f,
		release:   release,
		session: stream.Session{
			Source:         f,
			EncodeFunc:     encodeEvent,
			TokenExpiresAt: claims.ExpiresAt,
			PushOff:        pushOff,
			Drain:          s.drainCtx.Done(),
		},
	}, nil
}

// push reports the push switch and the channel closed when it goes off.
func (s *Server) push() (bool, <-chan struct{}) {
	if s.deps.Switches == nil {
		return true, nil
	}
	return s.deps.Switches.Push()
}

// sseResponse is the stream itself: a response type of the generated strict server that
// writes the stream, with full control of headers, flushes and deadlines.
type sseResponse struct {
	server    *Server
	ctx       context.Context // the request's own context, not the pooled *gin.Context
	takeOver  bool            // an HTTP/1.1 request: the stream may take its connection over
	recipient string
	follower  Follower
	release   func()
	session   stream.Session
}

// VisitStreamFeedResponse starts the stream. On HTTP/1.1 it returns once the stream has
// taken its connection over (the request and its context are then released); otherwise
// when the stream ends. What runs after the stream ends keeps nothing of the request.
func (r sseResponse) VisitStreamFeedResponse(w http.ResponseWriter) error {
	release, follower, logger, recipient := r.release, r.follower, r.server.logger, r.recipient
	r.server.streams.Serve(r.ctx, w, r.takeOver, r.session, func(reason stream.EndReason, err error) {
		release()
		follower.Close()
		level := slog.LevelDebug
		if err != nil {
			level = slog.LevelWarn
		}
		logger.LogAttrs(context.Background(), level, "stream ended", slog.String("recipient", recipient),
			slog.String("reason", string(reason)), slog.Any("error", err))
	})
	return nil // the response has started: there is nothing more to answer
}

// takeOver reports whether the request is HTTP/1.1, whose connection a stream can take
// over after the headers (HTTP/2 streams stay on net/http's path).
func takeOver(ctx context.Context) bool {
	gc, ok := ctx.(*gin.Context)
	return ok && gc.Request.ProtoMajor == 1 && gc.Request.ProtoMinor >= 1
}

// WaitStreams waits until the streams this server took over have ended: after
// http.Server.Shutdown, which does not see them, and Drain, which ends them over the drain
// window. When ctx ends first their connections are closed.
func (s *Server) WaitStreams(ctx context.Context) error { return s.streams.Wait(ctx) }

// encodeEvent renders e exactly as GET /v1/feed does, as compact JSON on one line.
func encodeEvent(e feed.Event) ([]byte, error) {
	return json.Marshal(apiEvents([]feed.Event{e})[0])
}

// CreateStreamTicket serves POST /v1/stream-tickets.
func (s endpoints) CreateStreamTicket(ctx context.Context, _ api.CreateStreamTicketRequestObject) (api.CreateStreamTicketResponseObject, error) {
	claims, ok := claimsFrom(ctx)
	if !ok {
		return nil, errors.New("ticket request reached its handler unauthenticated")
	}
	if s.deps.Tickets == nil {
		return nil, errNotFound
	}
	t, err := s.deps.Tickets.Issue(requestContext(ctx), claims.Subject, claims.ExpiresAt)
	if err != nil {
		return nil, fmt.Errorf("issuing a stream ticket: %w", err)
	}
	return api.CreateStreamTicket201JSONResponse{Ticket: t.Value, ExpiresAt: t.ExpiresAt}, nil
}

// GetCapabilities serves GET /v1/capabilities (no authentication).
func (s endpoints) GetCapabilities(context.Context, api.GetCapabilitiesRequestObject) (api.GetCapabilitiesResponseObject, error) {
	on, _ := s.push()
	hb := s.cfg.Stream.HeartbeatInterval
	if hb <= 0 {
		hb = stream.HeartbeatIntervalDefault
	}
	return api.GetCapabilities200JSONResponse{
		Push:                on && s.deps.FollowFunc != nil && !s.draining(),
		HeartbeatSeconds:    seconds(hb),
		LongPollMaxSeconds:  seconds(s.cfg.LongPollMax),
		PollIntervalSeconds: seconds(s.cfg.PollInterval),
	}, nil
}

// seconds rounds d up to whole seconds.
func seconds(d time.Duration) int { return int((d + time.Second - 1) / time.Second) }
