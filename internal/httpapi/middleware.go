package httpapi

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"runtime/debug"
	"strings"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers/gorillamux"
	"github.com/gin-gonic/gin"

	"github.com/tocsin/tocsin/api"
	"github.com/tocsin/tocsin/internal/auth"
	"github.com/tocsin/tocsin/internal/ticket"
)

type claimsKey struct{}

// claimsFrom returns the claims authenticate stored in ctx.
func claimsFrom(ctx context.Context) (auth.Claims, bool) {
	c, ok := ctx.Value(claimsKey{}).(auth.Claims)
	return c, ok
}

// streamPath is the one route that accepts a stream ticket instead of a bearer token.
const streamPath = "/v1/feed/stream"

// authenticate verifies the request's bearer token and stores its claims in the request's
// context. A token in the URL is refused even when the header holds a valid one: URLs end
// up in logs and browser history, so such a token must be considered leaked. The stream
// route also accepts a single-use ticket (?ticket=) when no Authorization header is sent;
// the ticket is consumed and grants its recipient until the original token's expiry.
// Operations the spec declares without security (capabilities) skip all this.
func (s *Server) authenticate(c *gin.Context) {
	if s.public[c.Request.Method+" "+c.FullPath()] {
		c.Next()
		return
	}
	query := c.Request.URL.Query()
	if name, ok := tokenInQuery(query); ok {
		s.writeProblem(c, fmt.Errorf("%w: query parameter %q carries a token; tokens are only accepted in the Authorization header", auth.ErrTokenInvalid, name))
		return
	}
	if len(c.Request.Header.Values("Authorization")) > 1 {
		s.writeProblem(c, fmt.Errorf("%w: more than one Authorization header", auth.ErrTokenInvalid))
		return
	}
	header := c.Request.Header.Get("Authorization")
	if header != "" && query.Has("ticket") {
		// Refused before either is used: the ticket stays valid for its rightful use.
		s.writeProblem(c, &requestError{errors.New("send either a bearer token or a ticket, not both")})
		return
	}
	var (
		claims auth.Claims
		err    error
	)
	switch token, ok := bearerToken(header); {
	case ok:
		claims, err = s.cfg.Verifier.Verify(token)
	case header == "" && query.Has("ticket") && c.FullPath() == streamPath && s.deps.Tickets != nil:
		claims, err = s.redeemTicket(c.Request.Context(), query.Get("ticket"))
	default:
		err = errTokenMissing
	}
	if err != nil {
		s.writeProblem(c, err)
		return
	}
	c.Request = c.Request.WithContext(context.WithValue(c.Request.Context(), claimsKey{}, claims))
	c.Next()
}

// redeemTicket consumes a stream ticket; a bad one is a token-invalid 401.
func (s *Server) redeemTicket(ctx context.Context, value string) (auth.Claims, error) {
	g, err := s.deps.Tickets.Redeem(ctx, value)
	switch {
	case errors.Is(err, ticket.ErrInvalid):
		return auth.Claims{}, fmt.Errorf("%w: %w", auth.ErrTokenInvalid, err)
	case err != nil:
		return auth.Claims{}, fmt.Errorf("redeeming a stream ticket: %w", err)
	}
	return auth.Claims{Subject: g.Recipient, ExpiresAt: g.TokenExpiresAt}, nil
}

// publicOperations returns "METHOD /path" of the spec's operations that declare no
// security requirement (security: []).
func publicOperations() map[string]bool {
	spec, err := api.GetSpec()
	if err != nil {
		panic(fmt.Sprintf("httpapi: loading the embedded spec: %v", err))
	}
	public := map[string]bool{}
	for path, item := range spec.Paths.Map() {
		for method, op := range item.Operations() {
			if op.Security != nil && len(*op.Security) == 0 {
				public[method+" "+path] = true
			}
		}
	}
	return public
}

func bearerToken(header string) (string, bool) {
	scheme, token, ok := strings.Cut(header, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	token = strings.TrimSpace(token)
	return token, token != ""
}

// tokenInQuery returns the name of a query parameter that carries a token: one named like
// an OAuth token parameter, or any whose value looks like a JWT.
func tokenInQuery(q url.Values) (string, bool) {
	for name, values := range q {
		if strings.EqualFold(name, "access_token") || strings.EqualFold(name, "token") {
			return name, true
		}
		for _, v := range values {
			if looksLikeJWT(v) {
				return name, true
			}
		}
	}
	return "", false
}

// looksLikeJWT reports whether s has the shape of a JWS or JWE compact serialization whose
// first segment decodes to a JSON object. Tocsin's cursors never do.
func looksLikeJWT(s string) bool {
	parts := strings.Split(strings.TrimSpace(s), ".")
	if len(parts) != 3 && len(parts) != 5 {
		return false
	}
	header, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[0], "="))
	if err != nil {
		return false
	}
	return strings.HasPrefix(strings.TrimSpace(string(header)), "{")
}

// newRequestValidator returns a middleware that validates requests against the embedded
// spec. It must run after authenticate: the spec's security requirement is met by the
// claims authenticate stored, so a route registered without authentication fails closed.
func (s *Server) newRequestValidator() gin.HandlerFunc {
	spec, err := api.GetSpec()
	if err != nil {
		panic(fmt.Sprintf("httpapi: loading the embedded spec: %v", err))
	}
	spec.Servers = nil // match on path only, whatever host the request names
	router, err := gorillamux.NewRouter(spec)
	if err != nil {
		panic(fmt.Sprintf("httpapi: routing the embedded spec: %v", err))
	}
	opts := &openapi3filter.Options{AuthenticationFunc: requireClaims}
	opts.WithCustomSchemaErrorFunc(func(err *openapi3.SchemaError) string { return err.Reason })

	return func(c *gin.Context) {
		route, pathParams, err := router.FindRoute(c.Request)
		if err != nil {
			s.writeProblem(c, fmt.Errorf("finding the spec's route for %s %s: %w", c.Request.Method, c.FullPath(), err))
			return
		}
		err = openapi3filter.ValidateRequest(c.Request.Context(), &openapi3filter.RequestValidationInput{
			Request:    c.Request,
			PathParams: pathParams,
			Route:      route,
			Options:    opts,
		})
		var secErr *openapi3filter.SecurityRequirementsError
		switch {
		case errors.As(err, &secErr):
			s.writeProblem(c, fmt.Errorf("%w: %w", auth.ErrTokenInvalid, err))
			return
		case err != nil:
			s.writeProblem(c, &requestError{err})
			return
		}
		c.Next()
	}
}

func requireClaims(_ context.Context, in *openapi3filter.AuthenticationInput) error {
	if _, ok := claimsFrom(in.RequestValidationInput.Request.Context()); !ok {
		return errors.New("request was not authenticated")
	}
	return nil
}

// noStore keeps per-recipient answers out of shared and browser caches.
func noStore(c *gin.Context) {
	c.Header("Cache-Control", "no-store")
	c.Next()
}

// recoverPanic turns a handler's panic into a logged 500.
func (s *Server) recoverPanic(c *gin.Context) {
	defer func() {
		rec := recover()
		if rec == nil {
			return
		}
		if rec == http.ErrAbortHandler { // net/http compares it the same way
			panic(rec)
		}
		s.writeProblem(c, fmt.Errorf("handler panicked: %v\n%s", rec, debug.Stack()))
	}()
	c.Next()
}

// logRequest logs each request at debug level; failures are logged by writeProblem.
func (s *Server) logRequest(c *gin.Context) {
	start := time.Now()
	c.Next()
	s.logger.LogAttrs(c.Request.Context(), slog.LevelDebug, "http request",
		slog.String("method", c.Request.Method),
		slog.String("route", c.FullPath()),
		slog.Int("status", c.Writer.Status()),
		slog.Int64("duration_ms", time.Since(start).Milliseconds()),
	)
}
