package main

import (
	"context"
	"crypto/rand"
	_ "embed"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tocsin/tocsin/internal/app"
	"github.com/tocsin/tocsin/internal/auth"
	"github.com/tocsin/tocsin/internal/config"
	"github.com/tocsin/tocsin/internal/demo"
	"github.com/tocsin/tocsin/internal/migrate"
	"github.com/tocsin/tocsin/internal/pgcluster"

	"github.com/tocsin/tocsin/internal/sqlfile"
)

var (
	//go:embed queries.sql
	queriesSQL        string
	queries           = sqlfile.Parse("cmd/tocsin/queries.sql", queriesSQL)
	databaseExistsSQL = queries.Get("database_exists")
)

const devAbout = `Run Tocsin for trying it: a private PostgreSQL in .tocsin/pg (unless TOCSIN_DATABASE_URL
is set), Tocsin's migrations, the demo schema and routes, and the API. The database and API
ports stay the same from one start to the next (kept in .tocsin/dev.json), and the other
commands run in this folder use this database and secret when none is given.

What it does to the machine: the private PostgreSQL runs with fsync=off and
synchronous_commit=off (fast; a machine crash can lose or corrupt its data); started as
root, it runs as the postgres user, which gets .tocsin/pg (or, when it cannot reach this
folder, a directory in its home): no other permission is changed. Ctrl-C, SIGTERM or
closing the terminal stop Tocsin and that PostgreSQL.`

// runDev is the embedded default: a private PostgreSQL from the local installation (unless
// TOCSIN_DATABASE_URL is set), the demo schema and routes, and the API.
func runDev(ctx context.Context, args []string, stdout io.Writer) error {
	fs := newFlagSet("tocsin dev", "tocsin dev [flags]", devAbout)
	cfg, err := fs.load(args)
	if err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return fmt.Errorf("unexpected argument %q; usage: %s", fs.Arg(0), fs.synopsis)
	}
	log := newLogger(cfg.LogLevel, cfg.LogFormat)

	lock, ok, err := lockDev()
	if err != nil {
		return err
	}
	if !ok {
		st, _ := readDevState()
		if st.API == "" {
			return fmt.Errorf("already running (pid %d, still starting)", st.PID)
		}
		return fmt.Errorf("already running (pid %d, API %s)", st.PID, st.API)
	}
	defer lock.Close()
	st, err := readDevState()
	if err != nil {
		return err
	}
	st.PID, st.API = os.Getpid(), ""
	if err := writeDevState(st); err != nil {
		return err
	}

	if cfg.DatabaseURL == "" {
		cluster, err := startDevCluster(ctx, stdout, st.DatabasePort)
		if err != nil {
			return err
		}
		defer func() {
			_ = cluster.Stop()
			fmt.Fprintln(stdout, "PostgreSQL stopped.")
		}()
		st.DatabasePort = cluster.Port()
		cfg.DatabaseURL = cluster.URL("tocsin")
	} else {
		st.DatabasePort = 0
	}
	if cfg.JWTSecret == "" {
		if cfg.JWTSecret, err = devSecret(); err != nil {
			return err
		}
	}
	if !addrGiven(fs) {
		cfg.Addr = devAddr(stdout, cfg.Addr, st.APIPort)
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

	node, err := app.New(ctx, cfg, log, app.Options{DevPages: true})
	if err != nil {
		return err
	}
	if _, port, err := net.SplitHostPort(node.Addr()); err == nil && !addrGiven(fs) {
		st.APIPort, _ = strconv.Atoi(port)
	}
	st.API = "http://" + node.Addr()
	if err := writeDevState(st); err != nil {
		return err
	}
	printWelcome(stdout, cfg, node.Addr(), summary.String())
	context.AfterFunc(ctx, func() {
		fmt.Fprintf(stdout, "\nStopping: draining %s, up to %s …\n", plural(openStreams(node), "stream"), cfg.DrainWindow)
	})
	return node.Run(ctx)
}

// startDevCluster starts (or reuses) the private cluster in .tocsin/pg on port, or on a
// free port when port is 0 or taken, and says what it did.
func startDevCluster(ctx context.Context, stdout io.Writer, port int) (*pgcluster.Cluster, error) {
	dir := filepath.Join(devDir, "pg")
	fmt.Fprintln(stdout, "Starting a private PostgreSQL in "+dir+" …")
	cluster, err := pgcluster.Start(ctx, pgcluster.Config{Dir: dir, Port: port, PortFallback: true})
	if err != nil {
		return nil, err
	}
	if pid := cluster.Reused(); pid != 0 {
		fmt.Fprintf(stdout, "Reusing the PostgreSQL (pid %d) left running by an earlier `tocsin dev` in this folder.\n", pid)
	}
	if port != 0 && cluster.Port() != port {
		fmt.Fprintf(stdout, "Port %d is taken: PostgreSQL now listens on %d (kept for next time).\n", port, cluster.Port())
	}
	fmt.Fprintf(stdout, "PostgreSQL: port %d, data in %s, fsync=off and synchronous_commit=off (fast, not crash-safe).\n",
		cluster.Port(), relative(cluster.DataDir()))
	if cluster.RunAs() != "" {
		fmt.Fprintf(stdout, "It runs as the %s user, since tocsin runs as root (no other permission is changed).\n", cluster.RunAs())
	}
	if err := createDatabase(ctx, cluster.URL("postgres"), "tocsin"); err != nil {
		_ = cluster.Stop()
		return nil, err
	}
	return cluster, nil
}

// addrGiven reports whether --addr or TOCSIN_ADDR names the API's address.
func addrGiven(fs *flagSet) bool {
	given := false
	fs.Visit(func(f *flag.Flag) { given = given || f.Name == "addr" })
	_, env := os.LookupEnv("TOCSIN_ADDR")
	return given || env
}

// devAddr is the API's address: the port kept from the last start, else the default's
// (8080), else a free port when that one is taken.
func devAddr(stdout io.Writer, def string, kept int) string {
	host, defPort, err := net.SplitHostPort(def)
	if err != nil {
		return def
	}
	want := defPort
	if kept != 0 {
		want = strconv.Itoa(kept)
	}
	if l, err := net.Listen("tcp", net.JoinHostPort(host, want)); err == nil {
		_ = l.Close()
		return net.JoinHostPort(host, want)
	}
	addr := net.JoinHostPort(host, "0")
	if l, err := net.Listen("tcp", addr); err == nil {
		addr = l.Addr().String()
		_ = l.Close()
	}
	fmt.Fprintf(stdout, "Port %s is taken: the API listens on %s (kept for next time).\n", want, addr)
	return addr
}

// relative shortens path to one under the working directory when it is.
func relative(path string) string {
	if wd, err := os.Getwd(); err == nil {
		if rel, err := filepath.Rel(wd, path); err == nil && !strings.HasPrefix(rel, "..") {
			return rel
		}
	}
	return path
}

func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return strconv.Itoa(n) + " " + noun + "s"
}

func createDatabase(ctx context.Context, adminURL, name string) error {
	pool, err := pgxpool.New(ctx, adminURL)
	if err != nil {
		return err
	}
	defer pool.Close()
	var exists bool
	if err := pool.QueryRow(ctx, databaseExistsSQL, name).Scan(&exists); err != nil {
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
	fmt.Fprintf(w, "\nTry it (another terminal, in this folder):\n")
	fmt.Fprintf(w, "  TOKEN=$(go run ./cmd/tocsin token --sub alice)\n")
	fmt.Fprintf(w, "  curl -s -H \"Authorization: Bearer $TOKEN\" '%s/v1/feed?after=now&wait=30'\n", base)
	fmt.Fprintf(w, "  curl -N -H \"Authorization: Bearer $TOKEN\" '%s/v1/feed/stream?after=now'\n", base)
	fmt.Fprintf(w, "  psql '%s' -c \"insert into comment (portfolio_id, author_id, body) values (1, 'bob', 'Nice work')\"\n\n", cfg.DatabaseURL)
	fmt.Fprintln(w, "Ctrl-C stops Tocsin and the private PostgreSQL.")
}
