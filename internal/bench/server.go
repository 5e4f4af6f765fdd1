package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tocsin/tocsin/internal/migrate"
	"github.com/tocsin/tocsin/internal/pgcluster"
	"github.com/tocsin/tocsin/internal/routes"
)

// server is where the scratch database lives: a private cluster, or the caller's server.
type server struct {
	adminURL string
	private  bool
	cluster  *pgcluster.Cluster
	dir      string
}

// openServer starts a private durable cluster unless url names a server.
func openServer(ctx context.Context, url string) (*server, error) {
	if url != "" {
		return &server{adminURL: url}, nil
	}
	dir, err := os.MkdirTemp("", "tocsin-bench-")
	if err != nil {
		return nil, fmt.Errorf("creating the bench cluster directory: %w", err)
	}
	// The server may run as the postgres user (when we are root): let it reach the directory.
	if err := os.Chmod(dir, 0o755); err != nil {
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("opening the bench cluster directory: %w", err)
	}
	c, err := pgcluster.Start(ctx, pgcluster.Config{Dir: filepath.Join(dir, "pg"), Durable: true})
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("starting a private durable PostgreSQL: %w", err)
	}
	return &server{adminURL: c.URL("postgres"), private: true, cluster: c, dir: dir}, nil
}

func (s *server) close() {
	if s.cluster != nil {
		_ = s.cluster.Stop()
	}
	if s.dir != "" {
		_ = os.RemoveAll(s.dir)
	}
}

var scratchCounter atomic.Int64

// scratch is the bench's own database: migrated, with the bench tables and routes.
type scratch struct {
	adminURL string
	name     string
	ctl      *pgxpool.Pool // resets, counts
	writers  *pgxpool.Pool // one connection per writer, statements prepared
	// checkpoint is false when the role may not run CHECKPOINT.
	checkpoint bool
	// postmaster is the server's pid when it runs on this machine (CPU from /proc), else 0.
	postmaster int
}

// openScratch opens the server of databaseURL (see openServer) and a scratch database on it
// with writers connections; closing drops the scratch database, then lets the server go.
func openScratch(ctx context.Context, databaseURL string, writers int) (_ *scratch, closeFn func(), err error) {
	srv, err := openServer(ctx, databaseURL)
	if err != nil {
		return nil, nil, err
	}
	sc, err := newScratch(ctx, srv.adminURL, writers)
	if err != nil {
		srv.close()
		return nil, nil, err
	}
	return sc, func() { sc.close(); srv.close() }, nil
}

// newScratch creates, migrates and fills the scratch database, and opens writers
// connections to it.
func newScratch(ctx context.Context, adminURL string, writers int) (_ *scratch, err error) {
	admin, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		return nil, fmt.Errorf("connecting to the bench server: %w", err)
	}
	defer admin.Close(context.WithoutCancel(ctx))
	s := &scratch{adminURL: adminURL, name: fmt.Sprintf("tocsin_bench_%d_%d", os.Getpid(), scratchCounter.Add(1))}
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+s.name); err != nil {
		return nil, fmt.Errorf("creating the scratch database %q (the role needs CREATEDB): %w", s.name, err)
	}
	defer func() {
		if err != nil {
			s.close()
		}
	}()
	if s.ctl, err = s.pool(ctx, 2, nil); err != nil {
		return nil, err
	}
	if _, err := migrate.Up(ctx, s.ctl); err != nil {
		return nil, fmt.Errorf("migrating the scratch database: %w", err)
	}
	if _, err := s.ctl.Exec(ctx, captureSchemaSQL); err != nil {
		return nil, fmt.Errorf("creating the bench tables: %w", err)
	}
	f, err := routes.Parse("capture_routes.yaml", captureRoutesYAML)
	if err != nil {
		return nil, fmt.Errorf("parsing the bench routes: %w", err)
	}
	if _, err := routes.Apply(ctx, s.ctl, f); err != nil {
		return nil, fmt.Errorf("applying the bench routes: %w", err)
	}
	_, err = s.ctl.Exec(ctx, "CHECKPOINT")
	s.checkpoint = err == nil
	s.postmaster = postmasterPID(ctx, s.ctl)
	if s.writers, err = s.pool(ctx, writers, prepareInserts); err != nil {
		return nil, err
	}
	// Open every writer connection now, so that no measurement pays for a connect.
	conns := make([]*pgxpool.Conn, 0, writers)
	defer func() {
		for _, c := range conns {
			c.Release()
		}
	}()
	for range writers {
		c, err := s.writers.Acquire(ctx)
		if err != nil {
			return nil, fmt.Errorf("opening writer connections: %w", err)
		}
		conns = append(conns, c)
	}
	return s, nil
}

// pool opens a pool of exactly size connections to the scratch database.
func (s *scratch) pool(ctx context.Context, size int, afterConnect func(context.Context, *pgx.Conn) error) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(s.adminURL)
	if err != nil {
		return nil, fmt.Errorf("parsing the database URL: %w", err)
	}
	cfg.ConnConfig.Database = s.name
	cfg.ConnConfig.RuntimeParams["application_name"] = "tocsin-bench"
	// Durable commits whatever the server's default.
	cfg.ConnConfig.RuntimeParams["synchronous_commit"] = "on"
	cfg.MaxConns, cfg.MinConns = int32(size), int32(size)
	cfg.AfterConnect = afterConnect
	p, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connecting to the scratch database: %w", err)
	}
	return p, nil
}

// prepareInserts prepares every mode's INSERT on a writer connection.
func prepareInserts(ctx context.Context, c *pgx.Conn) error {
	for _, m := range modes {
		if _, err := c.Prepare(ctx, m.insertStatement(), m.insertSQL()); err != nil {
			return fmt.Errorf("preparing the insert into %s: %w", m.table, err)
		}
	}
	return nil
}

// close closes the pools and drops the scratch database.
func (s *scratch) close() {
	for _, p := range []*pgxpool.Pool{s.writers, s.ctl} {
		if p != nil {
			p.Close()
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	admin, err := pgx.Connect(ctx, s.adminURL)
	if err != nil {
		return
	}
	defer admin.Close(ctx)
	_, _ = admin.Exec(ctx, "DROP DATABASE IF EXISTS "+s.name+" WITH (FORCE)")
}
