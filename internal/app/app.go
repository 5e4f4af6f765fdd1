// Package app is Tocsin's composition root: it builds every service of a node from the
// configuration and runs them under one errgroup.
//
// Start order: database pool → schema check → hub, doorbell and settings watcher →
// sequencer → capture (replication and Debezium) → River → HTTP. Shutdown order (on SIGTERM or a service failing):
// the HTTP server stops accepting, answers its parked long polls with empty pages, ends
// its streams with "reconnect" over the drain window and closes each keep-alive connection
// after an answer (httpapi.Server.Shutdown); then River, capture, the sequencer,
// the doorbell, the settings watcher and the hub stop, then the pool closes.
package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"golang.org/x/sync/errgroup"
	"riverqueue.com/riverui"

	"github.com/tocsin/tocsin/internal/auth"
	"github.com/tocsin/tocsin/internal/capture"
	"github.com/tocsin/tocsin/internal/config"
	"github.com/tocsin/tocsin/internal/debezium"
	"github.com/tocsin/tocsin/internal/demo"
	"github.com/tocsin/tocsin/internal/doorbell"
	"github.com/tocsin/tocsin/internal/feed"
	"github.com/tocsin/tocsin/internal/grouping"
	"github.com/tocsin/tocsin/internal/httpapi"
	"github.com/tocsin/tocsin/internal/hub"
	"github.com/tocsin/tocsin/internal/metrics"
	"github.com/tocsin/tocsin/internal/migrate"
	"github.com/tocsin/tocsin/internal/retention"
	"github.com/tocsin/tocsin/internal/sequencer"
	"github.com/tocsin/tocsin/internal/settings"
	"github.com/tocsin/tocsin/internal/stream"
	"github.com/tocsin/tocsin/internal/ticket"
	webdemo "github.com/tocsin/tocsin/web/demo"
)

// shutdownTimeout bounds the HTTP server's graceful stop.
const shutdownTimeout = 10 * time.Second

// defaultQueuePollInterval is how often River's default queue polls without a notification.
const defaultQueuePollInterval = 5 * time.Second

// Node is one running Tocsin process.
type Node struct {
	cfg  *config.Config
	log  *slog.Logger
	pool *pgxpool.Pool

	Hub       *hub.Hub
	Sequencer *sequencer.Sequencer
	API       *httpapi.Server
	// Capture is the replication capture consumer; nil without the capture role. It
	// streams only while replication routes exist (and idles otherwise).
	Capture *capture.Consumer
	// Debezium is the Debezium capture consumer; nil without the capture role. It reads
	// Kafka only while debezium routes exist (and idles otherwise).
	Debezium *debezium.Consumer
	// Settings watches the runtime switches (push); nil without the api role.
	Settings *settings.Watcher
	// Metrics are the node's Prometheus metrics, served at GET /metrics.
	Metrics  *metrics.Metrics
	river    *river.Client[pgxTx]
	mover    *grouping.Mover
	riverUI  *riverui.Handler
	listener net.Listener
	pprof    net.Listener   // nil unless --pprof-addr is set
	verifier *auth.Verifier // nil without the api role
	devPages bool
	// noDoorbell: Options.WithoutDoorbell.
	noDoorbell bool
	// doorbell is the hub's LISTEN connection; nil without the api role or with noDoorbell.
	doorbell *doorbell.Listener
}

// Addr is the address the API listens on (useful when cfg.Addr had port 0).
func (n *Node) Addr() string { return n.listener.Addr().String() }

// Options are hooks for embedding a node (tests, benchmarks).
type Options struct {
	// PoolConfigFunc may adjust the database pool's configuration, e.g. to add a tracer.
	PoolConfigFunc func(*pgxpool.Config)
	// DevPages serves the web demo at / and, at /dev/token, a token for any demo user
	// (internal/demo.Users): for `tocsin dev` only, never for a deployment.
	DevPages bool
	// WithoutDoorbell runs the node without its LISTEN connection (tests): its hub then
	// hears only of its own sequencer's batches and, at the fallback interval, of the rest.
	WithoutDoorbell bool
}

// New builds a node: it connects, checks the schema, and binds the API's address, but
// starts nothing. Close the node if Run is never called.
func New(ctx context.Context, cfg *config.Config, log *slog.Logger, opts ...Options) (*Node, error) {
	if cfg.DatabaseURL == "" {
		return nil, errors.New("no database: set TOCSIN_DATABASE_URL or --database-url (or run `tocsin dev`)")
	}
	pcfg, err := pgxpool.ParseConfig(cfg.DatabaseURL)
	if err != nil {
		return nil, fmt.Errorf("parsing the database URL: %w", err)
	}
	// Sessions that do one role's work carry their own name (tocsin-sequencer,
	// tocsin-doorbell, tocsin-capture); the pool's are "tocsin" unless the URL names them.
	if pcfg.ConnConfig.RuntimeParams["application_name"] == "" {
		pcfg.ConnConfig.RuntimeParams["application_name"] = "tocsin"
	}
	for _, o := range opts {
		if o.PoolConfigFunc != nil {
			o.PoolConfigFunc(pcfg)
		}
	}
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return nil, fmt.Errorf("connecting to the database: %w", err)
	}
	n := &Node{cfg: cfg, log: log, pool: pool}
	for _, o := range opts {
		n.devPages = n.devPages || o.DevPages
		n.noDoorbell = n.noDoorbell || o.WithoutDoorbell
	}
	if err := n.build(ctx); err != nil {
		pool.Close()
		return nil, err
	}
	return n, nil
}

func (n *Node) build(ctx context.Context) error {
	if err := migrate.Check(ctx, n.pool); err != nil {
		return err
	}
	n.Metrics = metrics.New()
	store := feed.NewStore(n.pool)
	n.Hub = hub.New(store, hub.Config{FallbackInterval: n.cfg.FallbackInterval}, n.log.With(slog.String("service", "hub")))
	batchFunc := n.Metrics.Batch
	var leadingFunc func(bool)
	if n.cfg.Has("api") {
		// This node's hub hears of its own sequencer's batches at once, without the
		// doorbell's round trip through PostgreSQL (which still rings, for every other
		// node): the batch has committed, so every entry up to head is visible. While this
		// node's sequencer leads, those are all the batches there are, and the doorbell
		// lets its connection go.
		batchFunc = func(head int64, rows int) {
			n.Metrics.Batch(head, rows)
			n.Hub.Ring(head)
		}
		if !n.noDoorbell {
			n.doorbell = doorbell.New(doorbell.Config{DatabaseURL: n.cfg.DatabaseURL, RingFunc: n.Hub.Ring,
				ReconnectFunc: n.Metrics.DoorbellReconnect},
				n.log.With(slog.String("service", "doorbell")))
			leadingFunc = n.doorbell.SetLocal
		}
	}
	n.Sequencer = sequencer.New(n.pool, sequencer.Config{PollInterval: n.cfg.SequencerInterval,
		IdlePollInterval: n.cfg.SequencerIdleInterval, BatchFunc: batchFunc, LeadingFunc: leadingFunc,
		MessageGroupWindow: n.cfg.MessageGroupWindow, MessageGroupMax: n.cfg.MessageGroupMax},
		n.log.With(slog.String("service", "sequencer")))
	if n.cfg.Has("capture") {
		n.Capture = capture.New(n.pool, capture.Config{DatabaseURL: n.cfg.DatabaseURL, WakeFunc: n.Sequencer.Wake,
			SlotWALWarnBytes: n.cfg.SlotWALWarnBytes}, n.log.With(slog.String("service", "capture")))
		n.Debezium = debezium.New(n.pool, debezium.Config{
			Kafka: debezium.Kafka{Brokers: debezium.ParseBrokers(n.cfg.KafkaBrokers), Group: n.cfg.KafkaGroup,
				InstanceID: n.cfg.KafkaInstanceID, TLS: n.cfg.KafkaTLS, CAFile: n.cfg.KafkaTLSCAFile,
				CertFile: n.cfg.KafkaTLSCertFile, KeyFile: n.cfg.KafkaTLSKeyFile, ServerName: n.cfg.KafkaTLSServerName,
				SASLMechanism: n.cfg.KafkaSASLMechanism, SASLUser: n.cfg.KafkaSASLUser, SASLPassword: n.cfg.KafkaSASLPassword},
			TopicPrefix: n.cfg.DebeziumTopicPrefix, StartAt: n.cfg.DebeziumStart, WakeFunc: n.Sequencer.Wake,
		}, n.log.With(slog.String("service", "debezium")))
	}

	// Every role uses River: workers run it; the sequencer enqueues flush jobs and the API
	// serves the River UI with an idle client.
	rc, err := newRiver(n.pool, n.cfg, n.log, n.Sequencer.Wake)
	if err != nil {
		return err
	}
	n.river = rc
	enqueuer := grouping.NewEnqueuer(rc)
	n.Sequencer.SetEnqueuer(enqueuer)
	if n.cfg.Has("worker") {
		n.mover = grouping.NewMover(n.pool, rc, grouping.Config{Tick: n.cfg.GroupTick}, n.log.With(slog.String("service", "grouping")))
		enqueuer.DueFunc = n.mover.Expect
	}

	if n.cfg.Has("api") {
		verifier, err := newVerifier(n.cfg, n.log)
		if err != nil {
			return err
		}
		n.verifier = verifier
		origins, err := httpapi.ParseOrigins(n.cfg.CORSOrigins)
		if err != nil {
			return fmt.Errorf("--cors-origins (TOCSIN_CORS_ORIGINS): %w", err)
		}
		inboxStore, publisher, ui, err := n.inboxDeps()
		if err != nil {
			return err
		}
		n.riverUI = ui
		n.Settings = settings.New(n.pool, settings.Config{}, n.log.With(slog.String("service", "settings")))
		if err := n.Settings.Refresh(ctx); err != nil {
			return err
		}
		n.API = httpapi.New(httpapi.Config{Verifier: verifier, LongPollMax: n.cfg.LongPollMax,
			Logger:        n.log.With(slog.String("service", "api")),
			PollInterval:  n.cfg.PollInterval,
			DeliveredFunc: n.Metrics.Delivered,
			Stream: stream.Config{DeliveredFunc: func(events []feed.Event) { n.Metrics.Delivered("sse", events) },
				HeartbeatInterval: n.cfg.SSEHeartbeatInterval, MaxLifetime: n.cfg.SSEMaxLifetime,
				WriteTimeout: n.cfg.SSEWriteTimeout, DrainWindow: n.cfg.DrainWindow},
			StreamBuffer:           n.cfg.SSEBuffer,
			MaxStreamsPerRecipient: n.cfg.MaxStreamsPerRecipient,
			MaxConnections:         n.cfg.MaxConnections,
			CORSOrigins:            origins,
			MaxMessageBytes:        int64(n.cfg.MaxMessageBytes),
			BodyReadTimeout:        n.cfg.BodyReadTimeout},
			httpapi.Deps{Feed: n.Hub, Readiness: readiness{n.pool, n.Capture, verifier},
				FollowFunc: func(ctx context.Context, recipient, after string, buffer int) (httpapi.Follower, error) {
					f, err := n.Hub.Follow(ctx, recipient, after, buffer)
					if err != nil {
						return nil, err
					}
					return f, nil
				},
				Tickets:    ticket.NewStore(n.pool, n.cfg.StreamTicketTTL),
				Switches:   n.Settings,
				Inbox:      inboxStore,
				Publisher:  publisher,
				RiverUI:    ui,
				DevHandler: n.devHandler()})
		if n.listener, err = net.Listen("tcp", n.cfg.Addr); err != nil {
			return fmt.Errorf("listening on %s: %w", n.cfg.Addr, err)
		}
	}
	if n.cfg.PprofAddr != "" {
		if n.pprof, err = net.Listen("tcp", n.cfg.PprofAddr); err != nil {
			if n.listener != nil {
				_ = n.listener.Close()
			}
			return fmt.Errorf("listening for profiles on %s: %w", n.cfg.PprofAddr, err)
		}
	}
	n.instrument()
	return nil
}

// PprofAddr is the address of the profiling listener, "" when --pprof-addr is not set.
func (n *Node) PprofAddr() string {
	if n.pprof == nil {
		return ""
	}
	return n.pprof.Addr().String()
}

// devHandler returns the web demo with its token endpoint when DevPages is set, else nil.
func (n *Node) devHandler() http.Handler {
	if !n.devPages {
		return nil
	}
	acfg := auth.Config{HS256Secret: []byte(n.cfg.JWTSecret), Issuer: n.cfg.JWTIssuer, Audience: n.cfg.JWTAudience}
	return webdemo.Handler(demo.Users, func(user string) (string, error) {
		return auth.Mint(acfg, user, devTokenTTL, "")
	})
}

// devTokenTTL is short so that the demo page exercises the SDK's token refresh.
const devTokenTTL = 15 * time.Minute

type pgxTx = pgx.Tx

// Run runs the node until ctx ends or a service fails, then stops everything in order.
func (n *Node) Run(ctx context.Context) error {
	defer n.pool.Close()
	if n.verifier != nil {
		defer n.verifier.Close()
	}
	g, gctx := errgroup.WithContext(ctx)
	// Background services stop after the API has drained.
	bg, stopBackground := context.WithCancel(context.WithoutCancel(ctx))
	defer stopBackground()
	var services errgroup.Group

	if n.API != nil {
		services.Go(func() error { return n.Hub.Run(bg) })
		if n.doorbell != nil {
			services.Go(func() error { return n.doorbell.Run(bg) })
		}
		services.Go(func() error { return n.Settings.Run(bg) })
	}
	if n.cfg.Has("sequencer") {
		services.Go(func() error { return n.Sequencer.Run(bg) })
	}
	if n.Capture != nil {
		services.Go(func() error { return n.Capture.Run(bg) })
	}
	if n.Debezium != nil {
		services.Go(func() error { return n.Debezium.Run(bg) })
	}
	if n.river != nil && n.cfg.Has("worker") {
		if err := n.river.Start(bg); err != nil {
			return fmt.Errorf("starting River: %w", err)
		}
	}
	if n.mover != nil {
		services.Go(func() error { return n.mover.Run(bg) })
	}
	if n.pprof != nil {
		services.Go(func() error { return servePprof(bg, n.pprof, n.log) })
	}
	if n.riverUI != nil {
		if err := n.riverUI.Start(bg); err != nil {
			return fmt.Errorf("starting the River UI: %w", err)
		}
	}

	if n.API != nil {
		srv := n.API.HTTPServer(n.cfg.Addr)
		srv.Handler = n.withMetrics(srv.Handler)
		g.Go(func() error {
			n.log.Info("api listening", slog.String("addr", n.Addr()))
			if err := srv.Serve(n.listener); !httpapi.ServeStopped(err) {
				return fmt.Errorf("serving HTTP: %w", err)
			}
			return nil
		})
		g.Go(func() error {
			<-gctx.Done()
			// Streams end over the drain window; give them that much and the usual margin.
			sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout+n.cfg.DrainWindow)
			defer cancel()
			err := n.API.Shutdown(sctx, srv, n.listener)
			// Shutdown does not see the streams that took their connections over.
			if werr := n.API.WaitStreams(sctx); err == nil {
				err = werr
			}
			return err
		})
	} else {
		g.Go(func() error { <-gctx.Done(); return nil })
	}
	err := g.Wait()

	n.log.Info("stopping background services")
	if n.river != nil && n.cfg.Has("worker") {
		sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
		_ = n.river.Stop(sctx)
		cancel()
	}
	stopBackground()
	if serr := services.Wait(); err == nil {
		err = serr
	}
	return err
}

type readiness struct {
	pool     *pgxpool.Pool
	capture  *capture.Consumer // nil without the capture role
	verifier *auth.Verifier
}

// Ready reports the node ready when it can verify tokens (with a JWKS: a key set was
// fetched), the database answers, the schema is current and, on a capture node, the
// replication slot is healthy (not lost, not retaining more WAL than
// TOCSIN_SLOT_WAL_WARN_BYTES).
func (r readiness) Ready(ctx context.Context) error {
	if err := r.verifier.Ready(ctx); err != nil {
		return err
	}
	if err := migrate.Check(ctx, r.pool); err != nil {
		return err
	}
	if r.capture != nil {
		return r.capture.Ready(ctx)
	}
	return nil
}

// newVerifier verifies tokens with the JWKS when TOCSIN_JWKS_URL is set, else with the
// HS256 secret (development).
func newVerifier(cfg *config.Config, log *slog.Logger) (*auth.Verifier, error) {
	acfg := auth.Config{Issuer: cfg.JWTIssuer, Audience: cfg.JWTAudience, Leeway: cfg.JWTLeeway,
		Logger: log.With(slog.String("service", "auth"))}
	source := "TOCSIN_JWT_SECRET"
	if cfg.JWKSURL != "" {
		source = "TOCSIN_JWKS_URL, TOCSIN_JWT_ALGORITHMS"
		acfg.JWKSURL = cfg.JWKSURL
		for _, a := range strings.Split(cfg.JWTAlgorithms, ",") {
			if a = strings.TrimSpace(a); a != "" {
				acfg.Algorithms = append(acfg.Algorithms, a)
			}
		}
	}
	if cfg.JWTSecret != "" {
		acfg.HS256Secret = []byte(cfg.JWTSecret)
	}
	v, err := auth.NewVerifier(acfg)
	if err != nil {
		return nil, fmt.Errorf("%w (set %s)", err, source)
	}
	return v, nil
}

func newRiver(pool *pgxpool.Pool, cfg *config.Config, log *slog.Logger, wakeFunc func()) (*river.Client[pgxTx], error) {
	workers := river.NewWorkers()
	river.AddWorker(workers, retention.NewPruneWorker(pool, retention.Config{
		ChangeTTL: cfg.RetentionChange, InboxTTL: cfg.RetentionInbox, IdempotencyTTL: cfg.IdempotencyTTL}))
	rcfg := &river.Config{
		Schema: migrate.Schema,
		// The default queue's jobs (retention, the grouping sweep) come from River's periodic
		// inserts, which notify its workers: its poll is only a backstop, rare at rest.
		Queues: map[string]river.QueueConfig{river.QueueDefault: {MaxWorkers: 4,
			FetchPollInterval: defaultQueuePollInterval}},
		Workers: workers,
		PeriodicJobs: []*river.PeriodicJob{
			river.NewPeriodicJob(river.PeriodicInterval(retention.IntervalDefault),
				func() (river.JobArgs, *river.InsertOpts) { return retention.PruneArgs{}, nil },
				&river.PeriodicJobOpts{ID: "tocsin_prune", RunOnStart: true}),
		},
		SoftStopTimeout: 5 * time.Second,
		Logger:          log.With(slog.String("service", "river")),
		// River's job cleaner deletes finished jobs after these.
		CompletedJobRetentionPeriod: cfg.RiverCompletedRetention,
		CancelledJobRetentionPeriod: cfg.RiverCompletedRetention,
		DiscardedJobRetentionPeriod: cfg.RiverDiscardedRetention,
	}
	addGrouping(rcfg, pool, groupingConfig(cfg, wakeFunc), log)
	client, err := river.NewClient(riverpgxv5.New(pool), rcfg)
	if err != nil {
		return nil, fmt.Errorf("configuring River: %w", err)
	}
	return client, nil
}
