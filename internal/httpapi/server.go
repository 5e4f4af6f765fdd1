// Package httpapi serves Tocsin's REST API (api/openapi.yaml) with gin and the generated
// strict server.
//
// Every /v1 request goes through the same chain: authenticate (a bearer JWT; a token in the
// URL is refused), validate against the OpenAPI spec, then the handler. Auth comes first, so
// an unauthenticated client learns nothing about its parameters (401 before 400). Handlers
// return errors; one function, writeProblem, turns every error into an RFC 9457 problem,
// and a 500 reveals nothing of its cause, which is logged instead.
//
// GET /v1/feed/stream serves the same feed as Server-Sent Events (package stream writes
// the bytes; the hub's Follower decides what is owed). A browser opens it with a
// single-use ticket (?ticket=, from POST /v1/stream-tickets) instead of a bearer header.
// Streams are capped per recipient (429) and, with long polls, per node (503); CORS is an
// exact-origin allow-list. Push can be switched off at runtime (Deps.Switches): new stream
// requests then get 204 and open streams end with push-disabled.
//
// Long polls extend their connection's write deadline beyond their wait. When the
// http.Server shuts down (Drain), parked and later long polls are answered at once with an
// empty page and their unchanged cursor (a 200: the client simply polls again, elsewhere),
// new streams get 503, and open streams end with "reconnect" at a random moment of the
// drain window, so that a deploy neither waits for parked requests nor causes a
// reconnection storm.
package httpapi

import (
	"context"
	"log/slog"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/tocsin/tocsin/api"
	"github.com/tocsin/tocsin/internal/auth"
	"github.com/tocsin/tocsin/internal/feed"
	"github.com/tocsin/tocsin/internal/stream"
	"github.com/tocsin/tocsin/internal/ticket"
)

// Defaults for Config.
const (
	DefaultLongPollMax            = 60 * time.Second
	DefaultWriteTimeout           = 15 * time.Second
	DefaultPollInterval           = 5 * time.Second
	DefaultMaxStreamsPerRecipient = 8
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
	// EndWaits answers every parked long poll now, and every later one at once, with an
	// empty page and its unchanged cursor (shutdown).
	EndWaits()
}

// Follower is one stream's view of the feed (a *hub.Follower).
type Follower interface {
	stream.Source
	// Close unregisters the follower.
	Close()
}

// Tickets issues and redeems stream tickets (a *ticket.Store).
type Tickets interface {
	// Issue returns a ticket for recipient, valid until at most tokenExpiresAt.
	Issue(ctx context.Context, recipient string, tokenExpiresAt time.Time) (ticket.Ticket, error)
	// Redeem consumes a ticket; ticket.ErrInvalid when unknown, used or expired.
	Redeem(ctx context.Context, value string) (ticket.Grant, error)
}

// Switches holds the runtime switches (a *settings.Watcher).
type Switches interface {
	// Push reports whether push is on, and a channel closed when push is (or goes) off.
	Push() (on bool, off <-chan struct{})
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
	// DeliveredFunc, when set, is called with the events of each poll that returned some,
	// and the transport ("short_poll" or "long_poll"); streams report through
	// Stream.DeliveredFunc (metrics).
	DeliveredFunc func(transport string, events []feed.Event)
	// LongPollMax caps a long poll's wait: larger waits are lowered to it, not refused.
	// Default DefaultLongPollMax.
	LongPollMax time.Duration
	// WriteTimeout bounds writing an ordinary response (http.Server.WriteTimeout); a long
	// poll gets its wait on top of it. Default DefaultWriteTimeout.
	WriteTimeout time.Duration
	// Logger receives request errors and panics. Default slog.Default().
	Logger *slog.Logger

	// PollInterval is the short-poll interval advertised to clients. Default 5s.
	PollInterval time.Duration
	// Stream configures GET /v1/feed/stream (heartbeat, lifetime, write timeout, drain window).
	Stream stream.Config
	// StreamBuffer bounds the live events queued for one stream; a client further behind
	// is disconnected. Default hub.BufferDefault.
	StreamBuffer int
	// MaxStreamsPerRecipient caps one recipient's open streams on this node (429 beyond).
	// Default DefaultMaxStreamsPerRecipient.
	MaxStreamsPerRecipient int
	// MaxConnections caps open streams plus parked long polls on this node (503 beyond).
	// Default: 80% of the process's open-files limit (RLIMIT_NOFILE).
	MaxConnections int
	// CORSOrigins are the exact origins (scheme://host[:port]) browsers may call the API
	// from; see ParseOrigins. Empty: no cross-origin access.
	CORSOrigins []string
	// MaxMessageBytes limits request bodies (413 beyond). Default DefaultMaxMessageBytes.
	MaxMessageBytes int64
	// BodyReadTimeout bounds the arrival of a request's body, counted from the end of its
	// headers; a slower client gets 400 and its connection is closed. Default
	// DefaultBodyReadTimeout.
	BodyReadTimeout time.Duration
}

// Deps are the services the API serves from.
type Deps struct {
	// Feed serves GET /v1/feed. Required.
	Feed Feed
	// Readiness answers GET /readyz. Optional: nil means always ready.
	Readiness Readiness
	// FollowFunc starts following a feed for GET /v1/feed/stream (hub.Hub.Follow).
	// Optional: nil means push is not offered (204).
	FollowFunc func(ctx context.Context, recipient, after string, buffer int) (Follower, error)
	// Tickets serves POST /v1/stream-tickets and ?ticket=. Optional: nil means no tickets.
	Tickets Tickets
	// Switches tells whether push is on. Optional: nil means always on.
	Switches Switches
	// Inbox serves /v1/inbox…. Optional: nil means 404.
	Inbox Inbox
	// Publisher serves POST /v1/messages. Optional: nil means 404.
	Publisher Publisher
	// RiverUI, when set, is served at RiverUIPrefix to tokens with ScopeAdmin.
	RiverUI http.Handler
	// DevHandler, when set, serves GET / and GET /dev/… without authentication: the demo
	// page and its token endpoint of `tocsin dev`. `tocsin serve` never sets it.
	DevHandler http.Handler
}

// Server is the HTTP API. Build it with New.
type Server struct {
	cfg    Config
	deps   Deps
	logger *slog.Logger
	engine *gin.Engine

	// drainCtx is cancelled when the http.Server shuts down: streams end over the drain
	// window and new ones are refused.
	drainCtx  context.Context
	drainOnce sync.Once
	drain     context.CancelFunc

	public  map[string]bool // "METHOD /path" of operations without security
	origins map[string]bool
	limits  *limits
	streams *stream.Streams
	conns   connCounter  // open connections of the http.Server from HTTPServer
	polls   atomic.Int64 // parked long polls
}

func (c *Config) withDefaults() {
	if c.LongPollMax <= 0 {
		c.LongPollMax = DefaultLongPollMax
	}
	if c.WriteTimeout <= 0 {
		c.WriteTimeout = DefaultWriteTimeout
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.PollInterval <= 0 {
		c.PollInterval = DefaultPollInterval
	}
	if c.MaxStreamsPerRecipient <= 0 {
		c.MaxStreamsPerRecipient = DefaultMaxStreamsPerRecipient
	}
	if c.MaxConnections <= 0 {
		c.MaxConnections = DefaultMaxConnections()
	}
	if c.MaxMessageBytes <= 0 {
		c.MaxMessageBytes = DefaultMaxMessageBytes
	}
	if c.BodyReadTimeout <= 0 {
		c.BodyReadTimeout = DefaultBodyReadTimeout
	}
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
	cfg.withDefaults()
	s := &Server{cfg: cfg, deps: deps, logger: cfg.Logger,
		limits: newLimits(cfg.MaxStreamsPerRecipient, cfg.MaxConnections), origins: map[string]bool{}}
	for _, o := range cfg.CORSOrigins {
		s.origins[o] = true
	}
	s.streams = stream.NewStreams(cfg.Stream)
	s.drainCtx, s.drain = context.WithCancel(context.Background())
	s.engine = s.routes()
	return s
}

// Handler returns the API's http.Handler.
func (s *Server) Handler() http.Handler { return s.engine }

// Drain starts a graceful stop: long polls in flight and to come are answered at once with
// an empty page; open streams end with "reconnect" at random moments of the drain window;
// new streams get 503 with Retry-After, sending their clients to another node; every new
// request is answered with "Connection: close"; /readyz answers 503. Shutdown calls it,
// and so does the http.Server from HTTPServer on its own Shutdown.
func (s *Server) Drain() {
	s.drainOnce.Do(func() {
		s.drain()
		s.deps.Feed.EndWaits()
	})
}

// draining reports whether Drain was called.
func (s *Server) draining() bool { return s.drainCtx.Err() != nil }

// HTTPServer returns an http.Server for the API on addr, with timeouts fit for it: headers
// must arrive within 10s, ordinary responses are written within Config.WriteTimeout, long
// polls extend their own deadline. Stop it with Server.Shutdown; its own Shutdown drains
// too (see Drain) but closes idle keep-alive connections at once.
func (s *Server) HTTPServer(addr string) *http.Server {
	srv := &http.Server{
		Addr:              addr,
		Handler:           s.Handler(),
		ReadHeaderTimeout: readHeaderTimeout,
		WriteTimeout:      s.cfg.WriteTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(s.logger.Handler(), slog.LevelWarn),
		ConnState:         s.conns.observe,
	}
	srv.RegisterOnShutdown(s.Drain)
	return srv
}

func (s *Server) routes() *gin.Engine {
	e := gin.New()
	e.ContextWithFallback = true // strict handlers get *gin.Context as their context.Context
	_ = e.SetTrustedProxies(nil)
	e.Use(s.guardConnection, s.recoverPanic, s.logRequest)
	if len(s.origins) > 0 {
		e.Use(s.cors) // before routing: preflights match no route
	}
	e.NoRoute(func(c *gin.Context) { s.writeProblem(c, errNotFound) })

	if s.deps.DevHandler != nil {
		e.GET("/", gin.WrapH(s.deps.DevHandler))
		e.GET("/dev/*path", gin.WrapH(s.deps.DevHandler))
	}
	e.GET("/healthz", s.healthz)
	e.GET("/readyz", s.readyz)

	// Routes registered through v1 run its middleware; the spec's paths already hold /v1.
	s.public = publicOperations()
	if s.deps.RiverUI != nil {
		s.mountRiverUI(e, s.deps.RiverUI)
	}
	v1 := e.Group("/", noStore, s.authenticate, s.limitBody, s.newRequestValidator())
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
