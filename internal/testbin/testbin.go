// Package testbin builds the tocsin command once per test process, for the tests that run
// it as an operator would: real `tocsin serve` and `tocsin dev` processes (end to end, the
// benchmarks' harness, the web tests). pgtest.Main removes the build when the tests end.
package testbin

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
)

var (
	mu   sync.Mutex
	dir  string
	path string
	err  error
)

// Tocsin returns the path of a tocsin binary built from this module's cmd/tocsin, building
// it on the first call in this test process.
func Tocsin(t testing.TB) string {
	t.Helper()
	mu.Lock()
	defer mu.Unlock()
	if path == "" && err == nil {
		path, err = build()
	}
	require.NoError(t, err)
	return path
}

func build() (string, error) {
	d, err := os.MkdirTemp("", "tocsin-test-bin-")
	if err != nil {
		return "", err
	}
	dir = d
	p := filepath.Join(d, "tocsin")
	out, err := exec.Command("go", "build", "-o", p, "github.com/tocsin/tocsin/cmd/tocsin").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("building tocsin: %w\n%s", err, out)
	}
	return p, nil
}

// Remove deletes the binary built by Tocsin, if any. Call it when the tests have ended.
func Remove() {
	mu.Lock()
	defer mu.Unlock()
	if dir != "" {
		_ = os.RemoveAll(dir)
	}
	dir, path, err = "", "", nil
}
