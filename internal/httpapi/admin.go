package httpapi

import (
	"bytes"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/gin-gonic/gin"

	"github.com/tocsin/tocsin/internal/auth"
)

// RiverUIPrefix is where the River UI is mounted.
const RiverUIPrefix = "/admin/river"

// mountRiverUI serves h under RiverUIPrefix to bearer tokens with ScopeAdmin only: 401
// without a valid token, 403 without the scope. The UI's own API calls need the header
// too, so a browser reaches it through a proxy that adds it (see the README).
func (s *Server) mountRiverUI(e *gin.Engine, h http.Handler) {
	admin := e.Group(RiverUIPrefix, noStore, s.requireAdmin)
	wrapped := s.unavailableWhileUnready(h)
	admin.Any("", wrapped)
	admin.Any("/*any", wrapped)
}

// requireAdmin admits ScopeAdmin tokens, and refuses state-changing requests that come
// from another site: behind a proxy that injects the admin's Authorization header, a
// hostile page could otherwise make the admin's browser cancel or delete jobs.
func (s *Server) requireAdmin(c *gin.Context) {
	if err := sameOrigin(c.Request); err != nil {
		s.writeProblem(c, err)
		return
	}
	if len(c.Request.Header.Values("Authorization")) > 1 {
		s.writeProblem(c, fmt.Errorf("%w: more than one Authorization header", auth.ErrTokenInvalid))
		return
	}
	token, ok := bearerToken(c.Request.Header.Get("Authorization"))
	if !ok {
		s.writeProblem(c, errTokenMissing)
		return
	}
	claims, err := s.cfg.Verifier.Verify(token)
	if err != nil {
		s.writeProblem(c, err)
		return
	}
	if !slices.Contains(claims.Scopes, ScopeAdmin) {
		s.writeProblem(c, fmt.Errorf("%w: the token's scope lacks %q", errForbidden, ScopeAdmin))
		return
	}
	c.Next()
}

// sameOrigin refuses a state-changing request (any method but GET, HEAD and OPTIONS) whose
// Sec-Fetch-Site says it was not made by the page's own origin, or whose Origin is not the
// host the request was sent to. Requests without either header (curl, scripts) pass: they
// do not come from a browser page.
func sameOrigin(r *http.Request) error {
	switch r.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions:
		return nil
	}
	switch site := r.Header.Get("Sec-Fetch-Site"); site {
	case "", "same-origin", "none":
	default:
		return fmt.Errorf("%w: cross-site %s refused (Sec-Fetch-Site: %q)", errForbidden, r.Method, site)
	}
	origin := r.Header.Get("Origin")
	if origin == "" {
		return nil
	}
	u, err := url.Parse(origin)
	if err != nil || u.Host == "" || !strings.EqualFold(u.Host, r.Host) {
		return fmt.Errorf("%w: cross-origin %s refused (Origin: %q)", errForbidden, r.Method, origin)
	}
	return nil
}

// unavailableWhileUnready serves a handler that answers its own error when its queries fail
// (River UI says 400 "problem connecting to the configured database"): an error it gives
// while the node is not ready (the database down or restarting) becomes 503
// service-unavailable with Retry-After, like every other endpoint. Its answers
// are small JSON pages and assets, so they are held until the status is known.
func (s *Server) unavailableWhileUnready(h http.Handler) gin.HandlerFunc {
	return func(c *gin.Context) {
		held := &heldResponse{header: http.Header{}}
		h.ServeHTTP(held, c.Request)
		if held.status >= http.StatusBadRequest && s.deps.Readiness != nil {
			if err := s.deps.Readiness.Ready(c.Request.Context()); err != nil {
				s.writeProblem(c, fmt.Errorf("%w: river ui answered %d while the node is not ready: %w",
					errUnavailable, held.status, err))
				return
			}
		}
		for k, v := range held.header {
			c.Writer.Header()[k] = v
		}
		if held.status == 0 {
			held.status = http.StatusOK
		}
		c.Writer.WriteHeader(held.status)
		_, _ = c.Writer.Write(held.body.Bytes())
	}
}

// heldResponse records a response instead of sending it.
type heldResponse struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (h *heldResponse) Header() http.Header { return h.header }

func (h *heldResponse) WriteHeader(status int) {
	if h.status == 0 {
		h.status = status
	}
}

func (h *heldResponse) Write(b []byte) (int, error) {
	if h.status == 0 {
		h.status = http.StatusOK
	}
	return h.body.Write(b)
}
