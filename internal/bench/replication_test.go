package bench

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tocsin/tocsin/internal/pgtest"
)

// TestRunReplication checks the harness, not the timing: the lag is measured over every
// change of the window with each stage, the paused mode captures nothing until the
// consumer runs, the running mode captures each insert exactly once, and the slot goes
// with the scratch database.
func TestRunReplication(t *testing.T) {
	t.Parallel()
	db := pgtest.New(t)
	var out bytes.Buffer
	res, err := RunReplication(context.Background(), ReplicationConfig{
		DatabaseURL: db.URL, Rates: []int{200}, LagDuration: 500 * time.Millisecond, Connections: 2,
		Writers: 2, Duration: 300 * time.Millisecond, Rounds: 1,
	}, &out)
	require.NoError(t, err)
	t.Log("\n" + out.String())

	require.Len(t, res.Lag, 1)
	l := res.Lag[0]
	require.Equal(t, 200, l.Rate)
	require.Positive(t, l.Changes)
	require.LessOrEqual(t, l.Changes, 100+2, "200 changes/s for 500ms over 2 connections, at most")
	require.Positive(t, l.Lag.P50)
	require.LessOrEqual(t, l.Lag.P50, l.Lag.P99)
	require.LessOrEqual(t, l.Lag.P99, l.Lag.Max)
	for i, st := range l.Stages {
		require.LessOrEqual(t, st.P50, st.Max, lagStages[i].name)
	}
	require.Positive(t, l.Stages[3].P50, "the outbox commit takes time")
	require.Positive(t, l.WriterCommit.P50)

	byMode := map[string]CaptureResult{}
	for _, r := range res.Throughput {
		byMode[r.Mode] = r
	}
	require.Len(t, byMode, len(ReplicationModes()))
	for _, name := range ReplicationModes() {
		r := byMode[name]
		require.Positive(t, r.TxPerSec, name)
		require.Positive(t, r.Inserts, name)
		require.Contains(t, out.String(), name)
	}
	require.InDelta(t, 1, byMode[ReplicationModeNone].Ratio, 1e-9)
	require.Zero(t, byMode[ReplicationModeNone].Captured)
	require.Zero(t, byMode[ReplicationModePaused].Captured, "nothing is captured while the consumer is stopped")
	require.Equal(t, byMode[ReplicationModeRunning].Inserts, byMode[ReplicationModeRunning].Captured,
		"one outbox or feed row per insert, once the consumer caught up (and nothing left from the paused mode)")
	require.Positive(t, byMode[ReplicationModeRunning].Sequenced)

	require.Contains(t, out.String(), "tocsin bench replication --rates 200 --lag-duration 500ms --connections 2 --writers 2 --duration 300ms --rounds 1 --database-url URL")
	require.Contains(t, out.String(), "commit→sent")
	require.NotContains(t, out.String(), db.URL)

	var slots int
	require.NoError(t, db.Pool.QueryRow(context.Background(),
		`SELECT count(*) FROM pg_replication_slots WHERE slot_name LIKE 'tocsin_tocsin_bench_%'`).Scan(&slots))
	require.Zero(t, slots, "the bench's slot is dropped")
}

func TestReplicationConfig(t *testing.T) {
	t.Parallel()
	cfg, err := (&ReplicationConfig{Modes: []string{ReplicationModeRunning, ReplicationModeNone}}).withDefaults()
	require.NoError(t, err)
	require.Equal(t, []string{ReplicationModeNone, ReplicationModeRunning}, cfg.Modes, "documented order")
	require.Equal(t, RatesDefault, cfg.Rates)
	require.Equal(t, "tocsin bench replication --rates 1000,5000 --lag-duration 10s --connections 16 --writers 16 --duration 10s --rounds 3 --modes none,replication",
		replicationCommand(cfg))
	cfg.NoLag, cfg.Modes = true, ReplicationModes()
	require.Equal(t, "tocsin bench replication --lag=false --writers 16 --duration 10s --rounds 3", replicationCommand(cfg))

	_, err = (&ReplicationConfig{Modes: []string{"replicaton"}, Rates: []int{-1}}).withDefaults()
	require.ErrorContains(t, err, `unknown replication mode "replicaton"`)
	require.ErrorContains(t, err, "rate -1")
	require.InDelta(t, 0.9, pairedRatio([]float64{90, 50, 270}, []float64{100, 100, 300}), 1e-9)
	require.Zero(t, pairedRatio([]float64{90}, nil))

	_, err = (&ReplicationConfig{NoLag: true, NoThroughput: true}).withDefaults()
	require.ErrorContains(t, err, "nothing to measure")
}
