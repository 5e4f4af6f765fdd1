package bench

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"text/tabwriter"
)

// facts describe the machine and server a run measured.
type facts struct {
	private  bool
	version  string
	settings []string // name=value of the settings that decide commit cost
	cpu      string
	// checkpoint is true when every measurement started with a CHECKPOINT.
	checkpoint bool
}

// facts reads the server's version and durability settings as the writers see them.
func (s *scratch) facts(ctx context.Context) (facts, error) {
	var f facts
	names := []string{"fsync", "synchronous_commit", "full_page_writes", "wal_sync_method", "shared_buffers", "max_wal_size"}
	values := make([]string, len(names))
	dest := []any{&f.version}
	for i := range values {
		dest = append(dest, &values[i])
	}
	q := "SELECT current_setting('server_version')"
	for _, n := range names {
		q += ", current_setting('" + n + "')"
	}
	if err := s.writers.QueryRow(ctx, q).Scan(dest...); err != nil {
		return f, fmt.Errorf("reading the server's settings: %w", err)
	}
	for i, n := range names {
		f.settings = append(f.settings, n+"="+values[i])
	}
	f.cpu = cpuModel()
	f.checkpoint = s.checkpoint
	return f, nil
}

// cpuModel returns the processor's name where the system says it (Linux), else "".
func cpuModel() string {
	file, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return ""
	}
	defer file.Close()
	sc := bufio.NewScanner(file)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// writeReport prints the results table, the facts that qualify it and the command that
// reproduces it.
func writeReport(out io.Writer, cfg CaptureConfig, f facts, results []CaptureResult) error {
	w := &errWriter{w: out}
	where := "a server given by --database-url (scratch database)"
	if f.private {
		where = "a private cluster started for the run"
	}
	machine := fmt.Sprintf("%s/%s, %d CPUs", runtime.GOOS, runtime.GOARCH, runtime.NumCPU())
	if f.cpu != "" {
		machine += " (" + f.cpu + ")"
	}
	w.printf("\nTocsin capture cost: insert throughput of %d concurrent writers, one INSERT per transaction (autocommit)\n", cfg.Writers)
	w.printf("  machine     %s, %s\n", machine, runtime.Version())
	w.printf("  postgresql  %s on %s\n", f.version, where)
	w.printf("  durability  %s\n", strings.Join(f.settings, " "))
	w.printf("  method      %s per measurement after a %s warm-up; %d round(s), modes interleaved; median per mode;\n",
		cfg.Duration, warmupFor(cfg.Duration), cfg.Rounds)
	checkpoint := "and CHECKPOINT "
	if !f.checkpoint {
		checkpoint = "(no CHECKPOINT: the role may not) "
	}
	w.printf("              every table, the outbox and the feed truncated %sbefore each measurement\n\n", checkpoint)

	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "mode\ttx/s (median)\tvs none\ttx/s per round\tcapture rows/insert\tsequenced\twriters' CPU/1k\tpostgres CPU/1k\t")
	for _, r := range results {
		c := r.cells()
		sequenced := "-"
		if modeNamed(r.Mode).sequencer && r.Captured > 0 {
			sequenced = fmt.Sprintf("%.1f%%", 100*float64(r.Sequenced)/float64(r.Captured))
		}
		fmt.Fprintf(tw, "%s\t%.1f\t%s\t%s\t%s\t%s\t%s\t%s\t\n", r.Mode, r.TxPerSec, c.ratio, c.rounds,
			c.perInsert, sequenced, c.writerCPU, c.serverCPU)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	w.printf("\n")
	for _, r := range results {
		w.printf("  %-18s %s\n", r.Mode, modeNamed(r.Mode).about)
	}
	w.printf("  (sequenced: share of the captured rows already in the feed when the measurement ended;\n")
	w.printf("   CPU/1k: CPU time per 1,000 writes from /proc, medians over rounds — of the writers' own\n")
	w.printf("   backends, where a trigger is paid, and of the whole PostgreSQL server)\n\n")
	w.printf("reproduce: %s\n", command(cfg))
	return w.err
}

// command returns the command line that reproduces a run of cfg.
func command(cfg CaptureConfig) string {
	c := fmt.Sprintf("tocsin bench capture --writers %d --duration %s --rounds %d", cfg.Writers, cfg.Duration, cfg.Rounds)
	if len(cfg.Modes) != len(modes) {
		c += " --modes " + strings.Join(cfg.Modes, ",")
	}
	if cfg.DatabaseURL != "" {
		c += " --database-url URL"
	}
	return c
}

// errWriter keeps the first write error so that the report reads as a list of prints.
type errWriter struct {
	w   io.Writer
	err error
}

func (e *errWriter) Write(p []byte) (int, error) {
	if e.err != nil {
		return 0, e.err
	}
	n, err := e.w.Write(p)
	e.err = err
	return n, err
}

func (e *errWriter) printf(format string, args ...any) { fmt.Fprintf(e, format, args...) }

// captureCells are the cells a throughput row of the capture and replication reports share.
type captureCells struct {
	ratio, rounds, perInsert, writerCPU, serverCPU string
}

func (r CaptureResult) cells() captureCells {
	c := captureCells{ratio: "-", perInsert: "-", serverCPU: "n/a",
		writerCPU: fmt.Sprintf("%.0f ms", 1000*r.WriterCPU)}
	if r.Ratio > 0 {
		c.ratio = fmt.Sprintf("%.2fx", r.Ratio)
	}
	rounds := make([]string, len(r.RoundTxPerSec))
	for i, x := range r.RoundTxPerSec {
		rounds[i] = fmt.Sprintf("%.0f", x)
	}
	c.rounds = strings.Join(rounds, " ")
	if r.Inserts > 0 {
		c.perInsert = fmt.Sprintf("%.2f", float64(r.Captured)/float64(r.Inserts))
	}
	if r.ServerCPU >= 0 {
		c.serverCPU = fmt.Sprintf("%.0f ms", 1000*r.ServerCPU)
	}
	return c
}
