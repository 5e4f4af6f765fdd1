// Package pgtest gives tests a real PostgreSQL database.
//
// Each test binary shares one server: the one named by TOCSIN_TEST_DATABASE_URL when it is
// set (its role must be allowed to create databases), else a throwaway cluster started from
// the local installation and stopped when the binary exits. Every call to New hands out a
// fresh database, copied from a template that already holds Tocsin's migrations, so tests
// run in parallel without seeing each other's commits, NOTIFYs or routes.
//
// A test binary that is killed (a `go test` interrupted, a timeout) cannot stop its cluster.
// Each binary therefore writes its pid into its directory, and the next one to start a
// cluster stops the clusters of binaries that are gone and removes their directories.
//
// A package that uses it calls Main from TestMain:
//
//	func TestMain(m *testing.M) { pgtest.Main(m) }
package pgtest

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tocsin/tocsin/internal/migrate"
	"github.com/tocsin/tocsin/internal/pgcluster"
	"github.com/tocsin/tocsin/internal/testbin"
)

var (
	mu       sync.Mutex
	adminURL string // a database on the shared server to run CREATE DATABASE from
	cluster  *pgcluster.Cluster
	template string
	counter  atomic.Int64
	baseDir  string
)

// Main runs the package's tests and stops the throwaway cluster afterwards.
func Main(m *testing.M) {
	code := m.Run()
	testbin.Remove()
	mu.Lock()
	if cluster != nil {
		_ = cluster.Stop()
	}
	if baseDir != "" {
		_ = os.RemoveAll(baseDir)
	}
	mu.Unlock()
	os.Exit(code)
}

// DB is a test's own database.
type DB struct {
	Pool *pgxpool.Pool
	URL  string
	Name string
}

// New returns a fresh migrated database, dropped when the test ends.
func New(t testing.TB) *DB {
	t.Helper()
	ctx := context.Background()
	tmpl := ensureTemplate(t)
	name := fmt.Sprintf("t_%d_%d", os.Getpid(), counter.Add(1))
	admin := connect(t, adminURL)
	defer admin.Close(ctx)
	if _, err := admin.Exec(ctx, fmt.Sprintf("CREATE DATABASE %s TEMPLATE %s", name, tmpl)); err != nil {
		t.Fatalf("creating test database: %v", err)
	}
	dbURL := withDatabase(adminURL, name)
	pool, err := pgxpool.New(ctx, dbURL)
	if err != nil {
		t.Fatalf("connecting to test database: %v", err)
	}
	t.Cleanup(func() {
		pool.Close()
		c := connect(t, adminURL)
		defer c.Close(context.Background())
		_, _ = c.Exec(context.Background(), fmt.Sprintf("DROP DATABASE IF EXISTS %s WITH (FORCE)", name))
	})
	return &DB{Pool: pool, URL: dbURL, Name: name}
}

// NewCluster starts a private cluster owned by one test (for restarts, crashes or special
// settings) and stops it when the test ends. It returns the cluster and the URL of a
// migrated database on it.
func NewCluster(t testing.TB, cfg pgcluster.Config) (*pgcluster.Cluster, string) {
	t.Helper()
	if cfg.Dir == "" {
		cfg.Dir = filepath.Join(tempRoot(t), fmt.Sprintf("c%d", counter.Add(1)))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := pgcluster.Start(ctx, cfg)
	if err != nil {
		t.Fatalf("starting a private PostgreSQL: %v", err)
	}
	t.Cleanup(func() { _ = c.Stop() })
	u := c.URL("postgres")
	pool, err := pgxpool.New(ctx, u)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	if _, err := migrate.Up(ctx, pool); err != nil {
		t.Fatalf("migrating: %v", err)
	}
	return c, u
}

func ensureTemplate(t testing.TB) string {
	t.Helper()
	mu.Lock()
	defer mu.Unlock()
	if template != "" {
		return template
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if u := os.Getenv("TOCSIN_TEST_DATABASE_URL"); u != "" {
		adminURL = u
	} else {
		c, err := pgcluster.Start(ctx, pgcluster.Config{Dir: filepath.Join(tempRoot(t), "shared")})
		if err != nil {
			t.Fatalf("starting a private PostgreSQL for the tests: %v", err)
		}
		cluster = c
		adminURL = c.URL("postgres")
	}
	name := fmt.Sprintf("tocsin_template_%d", os.Getpid())
	admin := connect(t, adminURL)
	defer admin.Close(ctx)
	if _, err := admin.Exec(ctx, "DROP DATABASE IF EXISTS "+name); err != nil {
		t.Fatalf("dropping old template: %v", err)
	}
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("creating template database: %v", err)
	}
	pool, err := pgxpool.New(ctx, withDatabase(adminURL, name))
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	if _, err := migrate.Up(ctx, pool); err != nil {
		t.Fatalf("migrating the template database: %v", err)
	}
	template = name
	return template
}

var baseDirOnce sync.Once

// tempRoot is a directory the postgres user can reach even when tests run as root. The
// first call also clears what killed test binaries left behind (sweepAbandoned).
func tempRoot(t testing.TB) string {
	baseDirOnce.Do(func() {
		sweepAbandoned(os.TempDir())
		d, err := os.MkdirTemp("", dirPrefix)
		if err != nil {
			panic(fmt.Sprintf("creating a temporary directory: %v", err))
		}
		_ = os.Chmod(d, 0o755)
		if err := os.WriteFile(filepath.Join(d, ownerFile), []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
			panic(fmt.Sprintf("recording the test binary's pid: %v", err))
		}
		baseDir = d
	})
	return baseDir
}

const (
	dirPrefix = "tocsin-test-"
	ownerFile = "owner.pid" // the pid of the test binary that made the directory
)

// sweepAbandoned stops the clusters in, and removes, every test directory under tmp whose
// test binary is gone. Directories without an owner file (being created, or made before
// owners were recorded) and those of live binaries are left alone.
func sweepAbandoned(tmp string) {
	dirs, _ := filepath.Glob(filepath.Join(tmp, dirPrefix+"*"))
	for _, d := range dirs {
		b, err := os.ReadFile(filepath.Join(d, ownerFile))
		if err != nil {
			continue
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil || pid <= 0 || alive(pid) {
			continue
		}
		stopped := true
		datas, _ := filepath.Glob(filepath.Join(d, "*", "data"))
		for _, data := range datas {
			if err := pgcluster.StopAbandoned(data, 30*time.Second); err != nil {
				stopped = false
			}
		}
		if stopped {
			_ = os.RemoveAll(d)
		}
	}
}

func alive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

func connect(t testing.TB, u string) *pgx.Conn {
	t.Helper()
	c, err := pgx.Connect(context.Background(), u)
	if err != nil {
		t.Fatalf("connecting to %s: %v", redact(u), err)
	}
	return c
}

func withDatabase(u, name string) string {
	parsed, err := url.Parse(u)
	if err != nil {
		return u
	}
	parsed.Path = "/" + name
	return parsed.String()
}

func redact(u string) string {
	parsed, err := url.Parse(u)
	if err != nil {
		return "the test database"
	}
	return parsed.Redacted()
}
