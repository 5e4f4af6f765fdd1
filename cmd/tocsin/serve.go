package main

import (
	"context"
	"flag"
	"fmt"
	"io"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tocsin/tocsin/internal/app"
	"github.com/tocsin/tocsin/internal/config"
	"github.com/tocsin/tocsin/internal/migrate"
)

func runServe(ctx context.Context, args []string, _ io.Writer) error {
	cfg, err := config.Load(flag.NewFlagSet("tocsin serve", flag.ContinueOnError), args)
	if err != nil {
		return err
	}
	log := newLogger(cfg.LogLevel, cfg.LogFormat)
	node, err := app.New(ctx, cfg, log)
	if err != nil {
		return err
	}
	return node.Run(ctx)
}

func runMigrate(ctx context.Context, args []string, stdout io.Writer) error {
	_, pool, err := openDatabase(ctx, flag.NewFlagSet("tocsin migrate", flag.ContinueOnError), args)
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

// openDatabase loads the configuration of command name from args and connects to its
// database. The caller closes the pool.
func openDatabase(ctx context.Context, fs *flag.FlagSet, args []string) (*config.Config, *pgxpool.Pool, error) {
	cfg, err := config.Load(fs, args)
	if err != nil {
		return nil, nil, err
	}
	pool, err := connect(ctx, cfg)
	return cfg, pool, err
}

func connect(ctx context.Context, cfg *config.Config) (*pgxpool.Pool, error) {
	if cfg.DatabaseURL == "" {
		return nil, fmt.Errorf("no database: set TOCSIN_DATABASE_URL or --database-url")
	}
	pool, err := pgxpool.New(ctx, cfg.DatabaseURL)
	if err != nil {
		return nil, fmt.Errorf("connecting to the database: %w", err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("connecting to the database: %w", err)
	}
	return pool, nil
}
