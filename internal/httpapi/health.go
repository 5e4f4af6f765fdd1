package httpapi

import (
	"context"
	"fmt"
	"net/http"

	"github.com/gin-gonic/gin"
)

type healthStatus struct {
	Status string `json:"status"`
}

// healthz answers whether the process serves HTTP at all (liveness).
func (s *Server) healthz(c *gin.Context) {
	c.Header("Cache-Control", "no-store")
	c.JSON(http.StatusOK, healthStatus{Status: "ok"})
}

// readyz answers whether this node can serve the API (readiness): 200, or a 503 problem
// (also while draining).
func (s *Server) readyz(c *gin.Context) {
	if s.draining() {
		s.writeProblem(c, fmt.Errorf("%w: not ready: draining", errUnavailable))
		return
	}
	if s.deps.Readiness != nil {
		ctx, cancel := context.WithTimeout(c.Request.Context(), readyTimeout)
		defer cancel()
		if err := s.deps.Readiness.Ready(ctx); err != nil {
			s.writeProblem(c, fmt.Errorf("%w: not ready: %w", errUnavailable, err))
			return
		}
	}
	c.Header("Cache-Control", "no-store")
	c.JSON(http.StatusOK, healthStatus{Status: "ok"})
}
