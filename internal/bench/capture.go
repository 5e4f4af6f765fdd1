package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"
	"time"
)

// The capture modes, in the order they run within a round.
const (
	// ModeNone inserts with no trigger: the baseline of every ratio.
	ModeNone = "none"
	// ModeTrigger inserts under a Tocsin route, sequencer not running: the write-path cost.
	ModeTrigger = "trigger"
	// ModeTriggerSequencer inserts under a Tocsin route while a sequencer drains the outbox
	// on the same server: the full cost of capture.
	ModeTriggerSequencer = "trigger+sequencer"
	// ModeCaptureOff inserts under a Tocsin route with capture switched off at run time.
	ModeCaptureOff = "capture-off"
	// ModeNaive inserts under a hand-written trigger that writes to_jsonb(NEW) to an outbox.
	ModeNaive = "naive-to_jsonb"
	// ModeNotify inserts under a hand-written trigger that calls pg_notify for each row.
	ModeNotify = "notify"
)

// CaptureModes returns every capture mode, in the order they run within a round.
func CaptureModes() []string {
	out := make([]string, len(modes))
	for i, m := range modes {
		out[i] = m.name
	}
	return out
}

// CaptureConfig configures RunCapture. Zero values take the defaults below.
type CaptureConfig struct {
	// DatabaseURL names a server to measure on; the bench creates and drops its own
	// database there. Empty starts a private durable cluster (fsync and synchronous_commit
	// on) in a temporary directory and stops it afterwards.
	DatabaseURL string
	// Writers is the number of concurrent writers, each on its own connection.
	Writers int
	// Duration is how long each measurement counts commits (after a short warm-up).
	Duration time.Duration
	// Rounds is how many times every mode is measured; modes are interleaved per round.
	Rounds int
	// Modes are the modes to measure (see CaptureModes); empty means all. Ratios need
	// ModeNone.
	Modes []string
}

// Capture defaults.
const (
	WritersDefault  = 16
	DurationDefault = 10 * time.Second
	RoundsDefault   = 3
)

// CaptureResult is the outcome of one mode.
type CaptureResult struct {
	Mode string
	// TxPerSec is the median over rounds of committed insert transactions per second.
	TxPerSec float64
	// Ratio is TxPerSec over ModeNone's; 0 when ModeNone was not measured.
	Ratio float64
	// RoundTxPerSec holds each round's figure, in round order.
	RoundTxPerSec []float64
	// WriterCPU and ServerCPU are the medians over rounds of the CPU seconds per 1,000
	// writes: of the writers' backends (the application's cost, the trigger included) and
	// of the whole PostgreSQL server (the sequencer included; negative when not measured).
	WriterCPU, ServerCPU float64
	roundWriterCPU       []float64
	roundServerCPU       []float64
	// Inserts counts the rows the writers inserted over all rounds, warm-ups included.
	Inserts int64
	// Captured counts the capture rows written for those inserts: Tocsin outbox and feed
	// rows, or the naive outbox's. A route writes one per insert (one recipient each).
	Captured int64
	// Sequenced counts the captured rows the sequencer had moved into the feed when each
	// measurement ended.
	Sequenced int64
}

func (c *CaptureConfig) withDefaults() (CaptureConfig, error) {
	cfg := *c
	if cfg.Writers <= 0 {
		cfg.Writers = WritersDefault
	}
	if cfg.Duration <= 0 {
		cfg.Duration = DurationDefault
	}
	if cfg.Rounds <= 0 {
		cfg.Rounds = RoundsDefault
	}
	if len(cfg.Modes) == 0 {
		cfg.Modes = CaptureModes()
	}
	var errs []error
	for _, name := range cfg.Modes {
		if modeNamed(name) == nil {
			errs = append(errs, fmt.Errorf("unknown capture mode %q (want one of %s)", name, strings.Join(CaptureModes(), ", ")))
		}
	}
	// Keep the documented order whatever the order given, and each mode once.
	cfg.Modes = slices.DeleteFunc(CaptureModes(), func(m string) bool { return !slices.Contains(cfg.Modes, m) })
	return cfg, errors.Join(errs...)
}

// RunCapture measures insert throughput under each capture mode and writes a report to out:
// progress lines, then a table with the machine's facts and the command that reproduces it.
func RunCapture(ctx context.Context, cfg CaptureConfig, out io.Writer) ([]CaptureResult, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	srv, err := openServer(ctx, cfg.DatabaseURL)
	if err != nil {
		return nil, err
	}
	defer srv.close()
	db, err := newScratch(ctx, srv.adminURL, cfg.Writers)
	if err != nil {
		return nil, err
	}
	defer db.close()
	facts, err := db.facts(ctx)
	if err != nil {
		return nil, err
	}
	facts.private = srv.private

	results := make([]CaptureResult, len(cfg.Modes))
	for i, name := range cfg.Modes {
		results[i].Mode = name
	}
	for round := 1; round <= cfg.Rounds; round++ {
		for i, name := range cfg.Modes {
			m, err := db.measure(ctx, modeNamed(name), cfg.Writers, cfg.Duration)
			if err != nil {
				return nil, fmt.Errorf("measuring mode %q, round %d: %w", name, round, err)
			}
			r := &results[i]
			r.RoundTxPerSec = append(r.RoundTxPerSec, m.txPerSec)
			r.roundWriterCPU = append(r.roundWriterCPU, m.writerCPU)
			r.roundServerCPU = append(r.roundServerCPU, m.serverCPU)
			r.Inserts += m.inserts
			r.Captured += m.captured
			r.Sequenced += m.sequenced
			fmt.Fprintf(out, "round %d/%d  %-18s %9.1f tx/s\n", round, cfg.Rounds, name, m.txPerSec)
		}
	}
	var base float64
	for i := range results {
		results[i].TxPerSec = median(results[i].RoundTxPerSec)
		results[i].WriterCPU = median(results[i].roundWriterCPU)
		results[i].ServerCPU = median(results[i].roundServerCPU)
		if results[i].Mode == ModeNone {
			base = results[i].TxPerSec
		}
	}
	if base > 0 {
		for i := range results {
			results[i].Ratio = results[i].TxPerSec / base
		}
	}
	if err := writeReport(out, cfg, facts, results); err != nil {
		return nil, fmt.Errorf("writing the report: %w", err)
	}
	return results, nil
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	sort.Float64s(s)
	if n := len(s); n%2 == 0 {
		return (s[n/2-1] + s[n/2]) / 2
	}
	return s[len(s)/2]
}
