package api

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/stretchr/testify/require"
)

// TestGeneratedCodeIsCurrent regenerates the code into a temporary file with the pinned
// generator (the `tool` in go.mod) and fails when api.gen.go differs: run `go generate ./api`.
func TestGeneratedCodeIsCurrent(t *testing.T) {
	t.Parallel()

	// The config names the output file, so point a copy of it at a temporary one.
	dir := t.TempDir()
	out := filepath.Join(dir, "api.gen.go")
	cfg, err := os.ReadFile("cfg.yaml")
	require.NoError(t, err)
	const outputLine = "\noutput: api.gen.go\n"
	require.Contains(t, string(cfg), outputLine)
	cfg = bytes.Replace(cfg, []byte(outputLine), []byte("\noutput: "+out+"\n"), 1)
	cfgPath := filepath.Join(dir, "cfg.yaml")
	require.NoError(t, os.WriteFile(cfgPath, cfg, 0o600))

	cmd := exec.CommandContext(t.Context(), "go", "tool", "oapi-codegen", "-config", cfgPath, "openapi.yaml")
	stderr := &bytes.Buffer{}
	cmd.Stderr = stderr
	require.NoError(t, cmd.Run(), "running oapi-codegen: %s", stderr)

	want, err := os.ReadFile(out)
	require.NoError(t, err)
	got, err := os.ReadFile("api.gen.go")
	require.NoError(t, err)
	require.True(t, bytes.Equal(want, got), "api.gen.go is stale: run `go generate ./api`")
}

// TestSpecIsValid checks the embedded spec against the OpenAPI 3.0 rules, examples included.
func TestSpecIsValid(t *testing.T) {
	t.Parallel()

	spec, err := GetSpec()
	require.NoError(t, err)
	require.NoError(t, spec.Validate(context.Background(), openapi3.EnableExamplesValidation()))

	fromFile, err := openapi3.NewLoader().LoadFromFile("openapi.yaml")
	require.NoError(t, err)
	require.Equal(t, fromFile.Paths.Len(), spec.Paths.Len())
}
