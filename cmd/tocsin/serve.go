package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tocsin/tocsin/internal/app"
	"github.com/tocsin/tocsin/internal/config"
	"github.com/tocsin/tocsin/internal/migrate"
)

func runServe(ctx context.Context, args []string, _ io.Writer) error {
	fs := newFlagSet("tocsin serve", "tocsin serve [flags]",
		"Run a node: the API, the sequencer, capture and River's workers (split with --roles).\n"+
			"Every flag can be set by its TOCSIN_* variable instead; SIGTERM stops cleanly.")
	cfg, err := fs.load(args)
	if err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return fmt.Errorf("unexpected argument %q; usage: %s", fs.Arg(0), fs.synopsis)
	}
	if cfg.DatabaseURL != "" && cfg.Has("api") && cfg.JWKSURL == "" {
		if err := checkSecret(cfg.JWTSecret); err != nil {
			return err
		}
	}
	log := newLogger(cfg.LogLevel, cfg.LogFormat)
	node, err := app.New(ctx, cfg, log)
	if err != nil {
		return err
	}
	context.AfterFunc(ctx, func() {
		log.Info("stopping: draining streams", slog.Int("streams", openStreams(node)),
			slog.Duration("drain_window", cfg.DrainWindow))
	})
	return node.Run(ctx)
}

// openStreams is the number of SSE streams node holds (0 without the api role).
func openStreams(node *app.Node) int {
	if node.API == nil {
		return 0
	}
	return int(node.API.StreamCounters().Open())
}

func runMigrate(ctx context.Context, args []string, stdout io.Writer) error {
	fs := newFlagSet("tocsin migrate", "tocsin migrate [flags]",
		"Apply Tocsin's and River's migrations (schema tocsin). Idempotent, safe from many\n"+
			"processes at once. Without --database-url or TOCSIN_DATABASE_URL, migrates the\n"+
			"database of `tocsin dev` in this folder.")
	_, pool, err := openDatabase(ctx, fs, args)
	if err != nil {
		return err
	}
	defer pool.Close()
	applied, err := migrate.Up(ctx, pool)
	for _, v := range applied {
		fmt.Fprintln(stdout, "applied", v)
	}
	if err != nil {
		return err
	}
	if len(applied) == 0 {
		fmt.Fprintln(stdout, "schema is current")
	}
	return nil
}

// openDatabase loads the flags of a command that only needs a database (plus extra
// settings, by flag name) and takes no argument, and connects. Without --database-url or TOCSIN_DATABASE_URL it
// uses the database of `tocsin dev` in this folder. The caller closes the pool.
func openDatabase(ctx context.Context, fs *flagSet, args []string, extra ...string) (*config.Config, *pgxpool.Pool, error) {
	cfg, err := fs.load(args, append([]string{"database-url"}, extra...)...)
	if err != nil {
		return nil, nil, err
	}
	if fs.NArg() != 0 {
		return nil, nil, fmt.Errorf("unexpected argument %q; usage: %s", fs.Arg(0), fs.synopsis)
	}
	pool, err := connect(ctx, cfg, useDevDatabase(cfg))
	return cfg, pool, err
}

func connect(ctx context.Context, cfg *config.Config, src devSource) (*pgxpool.Pool, error) {
	if cfg.DatabaseURL == "" {
		return nil, fmt.Errorf("no database: set TOCSIN_DATABASE_URL or --database-url (or start `tocsin dev` in this folder)")
	}
	what := "the database"
	if src.database {
		what = "the database of `tocsin dev` (is it running?)"
	}
	pool, err := pgxpool.New(ctx, cfg.DatabaseURL)
	if err != nil {
		return nil, fmt.Errorf("connecting to %s: %w", what, err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("connecting to %s: %w", what, err)
	}
	return pool, nil
}
