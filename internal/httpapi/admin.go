package httpapi

import (
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
	wrapped := gin.WrapH(h)
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
