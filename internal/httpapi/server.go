// Package httpapi serves Tocsin's REST API (api/openapi.yaml) with gin and the generated
// strict server.
//
// Every /v1 request goes through the same chain: authenticate (a bearer JWT; a token in the
// URL is refused), validate against the OpenAPI spec, then the handler. Auth comes first, so
// an unauthenticated client learns nothing about its parameters (401 before 400). Handlers
// return errors; one function, writeProblem, turns every error into an RFC 9457 problem,
// and a 500 reveals nothing of its cause, which is logged instead.
//
// Long polls extend their connection's write deadline beyond their wait, and are ended with
// a 503 when the http.Server shuts down, so that a deploy never waits for parked requests.
package httpapi

import (
	"context"
	"log/slog"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/tocsin/tocsin/api"
	"github.com/tocsin/tocsin/internal/auth"
	"github.com/tocsin/tocsin/internal/feed"
)

// Defaults for Config.
const (
	DefaultLongPollMax  = 30 * time.Second
	DefaultWriteTimeout = 15 * time.Second
)

const (
	readHeaderTimeout = 10 * time.Second
	idleTimeout       = 2 * time.Minute
	maxHeaderBytes    = 64 << 10
	readyTimeout      = 3 * time.Second
)

func init() {
	// gin's debug mode prints every route and warning to stdout; logs go through slog.
	if os.Getenv(gin.EnvGinMode) == "" {
		gin.SetMode(gin.ReleaseMode)
	}
}

// Feed is what the HTTP layer needs from the feed.
type Feed interface {
	// Poll returns recipient's events after `after` ("" = oldest retained, "now" = only
	// what comes next), at most limit, waiting up to wait for the first one (wait 0 =
	// answer at once). cursor is what the client sends next.
	// Errors: feed.ErrCursorMalformed, feed.ErrCursorExpired, context errors, others (→ 500).
	Poll(ctx context.Context, recipient, after string, limit int, wait time.Duration) (events []feed.Event, cursor string, err error)
}

// Readiness tells whether this node can serve requests.
type Readiness interface {
	// Ready returns nil when the node is ready, or why it is not.
	Ready(ctx context.Context) error
}

// Config configures the API.
type Config struct {
	// Verifier verifies the bearer token of every /v1 request. Required.
	Verifier *auth.Verifier
	// LongPollMax caps a long poll's wait: larger waits are lowered to it, not refused.
	// Default DefaultLongPollMax.
	LongPollMax time.Duration
	// WriteTimeout bounds writing an ordinary response (http.Server.WriteTimeout); a long
	// poll gets its wait on top of it. Default DefaultWriteTimeout.
	WriteTimeout time.Duration
	// Logger receives request errors and panics. Default slog.Default().
	Logger *slog.Logger
}

// Deps are the services the API serves from.
type Deps struct {
	// Feed serves GET /v1/feed. Required.
	Feed Feed
	// Readiness answers GET /readyz. Optional: nil means always ready.
	Readiness Readiness
}

// Server is the HTTP API. Build it with New.
type Server struct {
	cfg    Config
	deps   Deps
	logger *slog.Logger
	engine *gin.Engine

	// drainCtx is cancelled when the http.Server shuts down, ending parked long polls.
	drainCtx  context.Context
	drainOnce sync.Once
	drain     context.CancelFunc
}

// New returns the API for cfg and deps. It panics when a required field is missing, which
// is a wiring mistake, not a runtime condition.
func New(cfg Config, deps Deps) *Server {
	if cfg.Verifier == nil {
		panic("httpapi: Config.Verifier is required")
	}
	if deps.Feed == nil {
		panic("httpapi: Deps.Feed is required")
	}
	if cfg.LongPollMax <= 0 {
		cfg.LongPollMax = DefaultLongPollMax
	}
	if cfg.WriteTimeout <= 0 {
		cfg.WriteTimeout = DefaultWriteTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	s := &Server{cfg: cfg, deps: deps, logger: cfg.Logger}
	s.drainCtx, s.drain = context.WithCancel(context.Background())
	s.engine = s.routes()
	return s
}

// Handler returns the API's http.Handler.
func (s *Server) Handler() http.Handler { return s.engine }

// Drain ends the polls in flight and those to come with 503 and Retry-After, sending their
// clients to another node. The http.Server from HTTPServer calls it on Shutdown.
func (s *Server) Drain() { s.drainOnce.Do(s.drain) }

// HTTPServer returns an http.Server for the API on addr, with timeouts fit for it: headers
// must arrive within 10s, ordinary responses are written within Config.WriteTimeout, long
// polls extend their own deadline. Shutdown drains long polls (see Drain).
func (s *Server) HTTPServer(addr string) *http.Server {
	srv := &http.Server{
		Addr:              addr,
		Handler:           s.Handler(),
		ReadHeaderTimeout: readHeaderTimeout,
		WriteTimeout:      s.cfg.WriteTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(s.logger.Handler(), slog.LevelWarn),
	}
	srv.RegisterOnShutdown(s.Drain)
	return srv
}

func (s *Server) routes() *gin.Engine {
	e := gin.New()
	e.ContextWithFallback = true // strict handlers get *gin.Context as their context.Context
	_ = e.SetTrustedProxies(nil)
	e.Use(s.recoverPanic, s.logRequest)
	e.NoRoute(func(c *gin.Context) { s.writeProblem(c, errNotFound) })

	e.GET("/healthz", s.healthz)
	e.GET("/readyz", s.readyz)

	// Routes registered through v1 run its middleware; the spec's paths already hold /v1.
	v1 := e.Group("/", noStore, s.authenticate, s.newRequestValidator())
	strict := api.NewStrictHandlerWithOptions(endpoints{s}, nil, api.StrictGinServerOptions{
		RequestErrorHandlerFunc:  func(c *gin.Context, err error) { s.writeProblem(c, &requestError{err}) },
		HandlerErrorFunc:         s.writeProblem,
		ResponseErrorHandlerFunc: s.writeProblem,
	})
	api.RegisterHandlersWithOptions(v1, strict, api.GinServerOptions{
		ErrorHandler: func(c *gin.Context, err error, _ int) { s.writeProblem(c, &requestError{err}) },
	})
	return e
}

// endpoints implements the generated api.StrictServerInterface.
type endpoints struct{ *Server }

var _ api.StrictServerInterface = endpoints{}
