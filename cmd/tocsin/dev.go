package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tocsin/tocsin/internal/app"
	"github.com/tocsin/tocsin/internal/auth"
	"github.com/tocsin/tocsin/internal/config"
	"github.com/tocsin/tocsin/internal/demo"
	"github.com/tocsin/tocsin/internal/migrate"
	"github.com/tocsin/tocsin/internal/pgcluster"
)

// devDir holds the private cluster and the development secret (git-ignored).
const devDir = ".tocsin"

// runDev is the embedded default: a private PostgreSQL from the local installation (unless
// TOCSIN_DATABASE_URL is set), the demo schema and routes, and the API.
func runDev(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("tocsin dev", flag.ContinueOnError)
	cfg, err := config.Load(fs, args)
	if err != nil {
		return err
	}
	log := newLogger(cfg.LogLevel, cfg.LogFormat)

	if cfg.DatabaseURL == "" {
		fmt.Fprintln(stdout, "Starting a private PostgreSQL in "+filepath.Join(devDir, "pg")+" …")
		cluster, err := pgcluster.Start(ctx, pgcluster.Config{Dir: filepath.Join(devDir, "pg")})
		if err != nil {
			return err
		}
		defer func() {
			_ = cluster.Stop()
			fmt.Fprintln(stdout, "PostgreSQL stopped.")
		}()
		if err := createDatabase(ctx, cluster.URL("postgres"), "tocsin"); err != nil {
			return err
		}
		cfg.DatabaseURL = cluster.URL("tocsin")
	}
	if cfg.JWTSecret == "" {
		if cfg.JWTSecret, err = devSecret(); err != nil {
			return err
		}
	}

	pool, err := pgxpool.New(ctx, cfg.DatabaseURL)
	if err != nil {
		return fmt.Errorf("connecting to the database: %w", err)
	}
	if _, err := migrate.Up(ctx, pool); err != nil {
		pool.Close()
		return err
	}
	summary, err := demo.Install(ctx, pool)
	pool.Close()
	if err != nil {
		return err
	}

	node, err := app.New(ctx, cfg, log)
	if err != nil {
		return err
	}
	printWelcome(stdout, cfg, node.Addr(), summary.String())
	return node.Run(ctx)
}

func createDatabase(ctx context.Context, adminURL, name string) error {
	pool, err := pgxpool.New(ctx, adminURL)
	if err != nil {
		return err
	}
	defer pool.Close()
	var exists bool
	if err := pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)`, name).Scan(&exists); err != nil {
		return fmt.Errorf("looking for database %q: %w", name, err)
	}
	if !exists {
		if _, err := pool.Exec(ctx, "CREATE DATABASE "+name); err != nil {
			return fmt.Errorf("creating database %q: %w", name, err)
		}
	}
	return nil
}

// devSecret returns the development HS256 secret, made once and kept in .tocsin/secret so
// that tokens survive restarts of `tocsin dev`.
func devSecret() (string, error) {
	path := filepath.Join(devDir, "secret")
	if b, err := os.ReadFile(path); err == nil && len(strings.TrimSpace(string(b))) >= 32 {
		return strings.TrimSpace(string(b)), nil
	} else if err != nil && !errors.Is(err, os.ErrNotExist) {
		return "", err
	}
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return "", err
	}
	secret := hex.EncodeToString(raw)
	if err := os.MkdirAll(devDir, 0o755); err != nil {
		return "", err
	}
	return secret, os.WriteFile(path, []byte(secret+"\n"), 0o600)
}

func printWelcome(w io.Writer, cfg *config.Config, addr, routes string) {
	base := "http://" + addr
	fmt.Fprintf(w, "\nTocsin is running with the demo schema. Routes:\n  %s\n\n",
		strings.ReplaceAll(strings.TrimSpace(routes), "\n", "\n  "))
	fmt.Fprintf(w, "  API       %s\n", base)
	fmt.Fprintf(w, "  Database  %s\n", cfg.DatabaseURL)
	fmt.Fprintf(w, "  Secret    TOCSIN_JWT_SECRET=%s\n\n", cfg.JWTSecret)
	for _, u := range demo.Users {
		tok, err := auth.Mint(auth.Config{HS256Secret: []byte(cfg.JWTSecret), Issuer: cfg.JWTIssuer, Audience: cfg.JWTAudience},
			u, 24*time.Hour, "")
		if err != nil {
			continue
		}
		fmt.Fprintf(w, "  Token for %-5s (24h)\n    %s\n", u, tok)
	}
	fmt.Fprintf(w, "\nTry it (another terminal):\n")
	fmt.Fprintf(w, "  curl -s -H \"Authorization: Bearer $TOKEN\" '%s/v1/feed?after=now&wait=30'\n", base)
	fmt.Fprintf(w, "  psql '%s' -c \"insert into comment (portfolio_id, author_id, body) values (1, 'bob', 'Nice work')\"\n\n", cfg.DatabaseURL)
	fmt.Fprintln(w, "Ctrl-C stops Tocsin and the private PostgreSQL.")
}
