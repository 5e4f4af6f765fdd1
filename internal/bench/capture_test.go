package bench

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tocsin/tocsin/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// TestRunCapture checks the harness, not the timing: every mode runs and commits, each
// route writes exactly one outbox row per insert, and the capture switch really stops it.
//
// Not parallel: it checks that no scratch database is left in the shared cluster, which
// the package's other benchmarks create while they run.
func TestRunCapture(t *testing.T) {
	db := pgtest.New(t)
	var out bytes.Buffer
	res, err := RunCapture(context.Background(), CaptureConfig{
		DatabaseURL: db.URL, Writers: 2, Duration: 200 * time.Millisecond, Rounds: 1,
	}, &out)
	require.NoError(t, err)
	t.Log("\n" + out.String())

	byMode := map[string]CaptureResult{}
	for _, r := range res {
		byMode[r.Mode] = r
	}
	require.Len(t, byMode, len(CaptureModes()))
	for _, name := range CaptureModes() {
		r := byMode[name]
		require.Positive(t, r.TxPerSec, name)
		require.Positive(t, r.Inserts, name)
		require.Positive(t, r.Ratio, name)
		require.Len(t, r.RoundTxPerSec, 1, name)
		require.Positive(t, r.WriterCPU, "%s: the writers' CPU is read from /proc", name)
		require.Contains(t, out.String(), name)
	}
	require.InDelta(t, 1, byMode[ModeNone].Ratio, 1e-9)

	for _, name := range []string{ModeTrigger, ModeTriggerSequencer, ModeNaive} {
		require.Equal(t, byMode[name].Inserts, byMode[name].Captured, "%s: one capture row per insert", name)
	}
	for _, name := range []string{ModeNone, ModeCaptureOff, ModeNotify} {
		require.Zero(t, byMode[name].Captured, "%s: no capture rows", name)
	}
	require.Zero(t, byMode[ModeTrigger].Sequenced, "no sequencer runs in mode trigger")
	require.Positive(t, byMode[ModeTriggerSequencer].Sequenced, "the sequencer drained the outbox")

	require.Contains(t, out.String(), "tocsin bench capture --writers 2 --duration 200ms --rounds 1 --database-url URL")
	require.Contains(t, out.String(), "fsync=")
	require.NotContains(t, out.String(), db.URL)

	// The scratch database is gone.
	var left int
	require.NoError(t, db.Pool.QueryRow(context.Background(),
		`SELECT count(*) FROM pg_database WHERE datname LIKE 'tocsin_bench_%'`).Scan(&left))
	require.Zero(t, left)
}

func TestRunCaptureModes(t *testing.T) {
	t.Parallel()
	cfg, err := (&CaptureConfig{Modes: []string{ModeTrigger, ModeNone, ModeTrigger}}).withDefaults()
	require.NoError(t, err)
	require.Equal(t, []string{ModeNone, ModeTrigger}, cfg.Modes, "documented order, each mode once")
	require.Equal(t, WritersDefault, cfg.Writers)
	require.Equal(t, DurationDefault, cfg.Duration)
	require.Equal(t, RoundsDefault, cfg.Rounds)
	require.Equal(t, "tocsin bench capture --writers 16 --duration 10s --rounds 3 --modes none,trigger", command(cfg))

	_, err = RunCapture(context.Background(), CaptureConfig{Modes: []string{"none", "trigers"}}, &bytes.Buffer{})
	require.ErrorContains(t, err, `unknown capture mode "trigers"`)
}

func TestMedian(t *testing.T) {
	t.Parallel()
	require.Equal(t, 2.0, median([]float64{3, 1, 2}))
	require.Equal(t, 2.5, median([]float64{4, 1, 3, 2}))
	require.Equal(t, 0.0, median(nil))
}

// BenchmarkCapture is a short RunCapture on a private durable cluster: the route's
// write-path cost as a ratio to the same inserts without it. The full figures come from
// `tocsin bench capture`; run this one with
//
//	go test -run '^$' -bench Capture ./internal/bench/
func BenchmarkCapture(b *testing.B) {
	var res []CaptureResult
	for b.Loop() {
		var out bytes.Buffer
		var err error
		res, err = RunCapture(context.Background(), CaptureConfig{
			Duration: 2 * time.Second, Rounds: 1, Modes: []string{ModeNone, ModeTrigger},
		}, &out)
		if err != nil {
			b.Fatal(err)
		}
		b.Log("\n" + out.String())
	}
	for _, r := range res {
		b.ReportMetric(r.TxPerSec, r.Mode+"_tx/s")
		if r.Mode == ModeTrigger {
			b.ReportMetric(r.Ratio, "x_vs_none")
		}
	}
}
