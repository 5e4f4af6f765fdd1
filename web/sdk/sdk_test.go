// Package sdk_test runs @tocsin/client's checks and Node tests from `go test`: the
// generated types match api/openapi.yaml, the spec lints, the SDK and the demo type-check,
// and test/sdk.test.js passes against a real `tocsin serve`.
package sdk_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tocsin/tocsin/internal/demo"
	"github.com/tocsin/tocsin/internal/pgtest"
	"github.com/tocsin/tocsin/web/webtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// TestGeneratedTypesAreCurrent fails when src/schema.ts no longer matches the spec: run
// `npm run gen` in web/sdk.
func TestGeneratedTypesAreCurrent(t *testing.T) {
	t.Parallel()
	dir := webtest.Dir(t, ".")
	webtest.Track(t, "src", "package-lock.json", "../../api/openapi.yaml")
	webtest.NpmCI(t, dir)
	webtest.NpmRun(t, dir, "gen:check")
}

// TestSpecLints runs @redocly/cli's recommended rules (api/redocly.yaml) on the spec.
func TestSpecLints(t *testing.T) {
	t.Parallel()
	dir := webtest.Dir(t, ".")
	webtest.Track(t, "package-lock.json", "../../api/openapi.yaml", "../../api/redocly.yaml")
	webtest.NpmCI(t, dir)
	out := webtest.NpmRun(t, dir, "lint:api")
	require.Contains(t, out, "valid")
}

// TestTypecheck runs tsc --strict on the SDK and on the demo page (esbuild does not check types).
func TestTypecheck(t *testing.T) {
	t.Parallel()
	dir := webtest.Dir(t, ".")
	webtest.Track(t, "src", "tsconfig.json", "package-lock.json", "../demo/src", "../demo/tsconfig.json")
	webtest.NpmCI(t, dir)
	webtest.NpmRun(t, dir, "typecheck")
}

// TestSDKAgainstServe builds the SDK and runs test/sdk.test.js against `tocsin serve`.
func TestSDKAgainstServe(t *testing.T) {
	t.Parallel()
	dir := webtest.Dir(t, ".")
	webtest.Track(t, "src", "test", "package-lock.json")
	webtest.NpmCI(t, dir)
	webtest.NpmRun(t, dir, "build")

	db := pgtest.New(t)
	_, err := demo.Install(context.Background(), db.Pool)
	require.NoError(t, err)
	srv := webtest.Start(t, "serve", db.URL, "--sse-heartbeat", "1s", "--max-streams-per-recipient", "1",
		"--message-group-window", "1s", "--long-poll-max", "5s", "--poll-interval", "1s")
	ctl := webtest.Control(t, srv, db.Pool)
	webtest.RunNode(t, dir, 3*time.Minute, []string{"TOCSIN_BASE=" + srv.Base, "TOCSIN_CONTROL=" + ctl}, "test/sdk.test.js")
}
