package bench

import (
	_ "embed"
	"strings"
)

// captureSchemaSQL creates the bench tables and the hand-written comparison triggers.
//
//go:embed capture_schema.sql
var captureSchemaSQL string

// captureRoutesYAML holds the Tocsin routes the route modes insert under.
//
//go:embed capture_routes.yaml
var captureRoutesYAML []byte

// mode is one way of capturing inserts into its own table.
type mode struct {
	name  string
	table string
	// capture is the value of the runtime capture switch during the measurement.
	capture bool
	// sequencer runs a sequencer during the measurement.
	sequencer bool
	// about explains the mode in the report.
	about string
}

var modes = []*mode{
	{name: ModeNone, table: "bench_none", capture: true,
		about: "no trigger (baseline)"},
	{name: ModeTrigger, table: "bench_trigger", capture: true,
		about: "Tocsin route (recipients: owner_id, payload: keys), sequencer stopped: write-path cost"},
	{name: ModeTriggerSequencer, table: "bench_trigger_sequencer", capture: true, sequencer: true,
		about: "the same route, a sequencer draining the outbox on the same server: full cost"},
	{name: ModeCaptureOff, table: "bench_capture_off", capture: false,
		about: "the same route, capture switched off at run time (tocsin.setting capture=false)"},
	{name: ModeNaive, table: "bench_naive", capture: true,
		about: "hand-written trigger: INSERT INTO outbox (payload) VALUES (to_jsonb(NEW))"},
	{name: ModeNotify, table: "bench_notify", capture: true,
		about: "hand-written trigger: pg_notify('tocsin_bench', NEW.id::text) per row"},
}

func modeNamed(name string) *mode {
	for _, m := range modes {
		if m.name == name {
			return m
		}
	}
	return nil
}

// insertStatement names the prepared INSERT of m's table on every writer connection.
func (m *mode) insertStatement() string { return "insert_" + m.table }

// insertSQL is one writer transaction: a comment on a portfolio.
func (m *mode) insertSQL() string {
	return "INSERT INTO " + m.table + " (portfolio_id, owner_id, body, status) VALUES ($1, $2, $3, 'published')"
}

// benchTables are the tables truncated before every measurement.
func benchTables() string {
	names := []string{"bench_naive_outbox", "tocsin.outbox", "tocsin.feed"}
	for _, m := range modes {
		names = append(names, m.table)
	}
	return strings.Join(names, ", ")
}
