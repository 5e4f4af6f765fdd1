package httpapi

import (
	"fmt"
	"net/http"
	"slices"

	"github.com/gin-gonic/gin"
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

func (s *Server) requireAdmin(c *gin.Context) {
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
