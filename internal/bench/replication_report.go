package bench

import (
	"fmt"
	"io"
	"runtime"
	"strconv"
	"strings"
	"text/tabwriter"
)

var replicationModeAbout = map[string]string{
	ReplicationModeNone:    "no route (baseline), consumer stopped",
	ReplicationModePaused:  "replication route, consumer stopped (the slot keeps the WAL): what the application's writes pay",
	ReplicationModeRunning: "replication route, consumer and sequencer running on the same machine: what the machine pays",
}

// writeReplicationReport prints the lag and throughput tables, the facts that qualify them
// and the command that reproduces them.
func writeReplicationReport(out io.Writer, cfg ReplicationConfig, f facts, res ReplicationResult) error {
	w := &errWriter{w: out}
	where := "a server given by --database-url (scratch database)"
	if f.private {
		where = "a private cluster started for the run"
	}
	machine := fmt.Sprintf("%s/%s, %d CPUs", runtime.GOOS, runtime.GOARCH, runtime.NumCPU())
	if f.cpu != "" {
		machine += " (" + f.cpu + ")"
	}
	w.printf("\nTocsin replication capture (pgoutput through a slot, consumer and sequencer in this process)\n")
	w.printf("  machine     %s, %s\n", machine, runtime.Version())
	w.printf("  postgresql  %s on %s\n", f.version, where)
	w.printf("  durability  %s\n", strings.Join(f.settings, " "))
	w.printf("  load        %s at the start, %s at the end (1, 5, 15 minutes)\n", res.LoadStart, res.LoadEnd)

	if len(res.Lag) > 0 {
		sequencer := "consumer and sequencer running"
		if cfg.NoSequencer {
			sequencer = "consumer running, sequencer stopped"
		}
		w.printf("\ncommit → outbox lag: single-row transactions over %d connections, %s per rate after a 1s warm-up, %s;\n",
			cfg.Connections, cfg.LagDuration, sequencer)
		w.printf("from the source commit (its WAL timestamp) to the commit of the consumer's outbox rows\n\n")
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "changes/s\tchanges\tachieved/s\tp50\tp90\tp99\tmax\tload (1 min)\t")
		for _, l := range res.Lag {
			load, _, _ := strings.Cut(l.Load, " ")
			fmt.Fprintf(tw, "%d\t%d\t%.1f\t%s\t%s\t%s\t%s\t%s\t\n", l.Rate, l.Changes, l.Achieved,
				ms(l.Lag.P50), ms(l.Lag.P90), ms(l.Lag.P99), ms(l.Lag.Max), load)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		w.printf("\nwhere it goes, p50 / p99 of each stage:\n")
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		head := "changes/s\t"
		for _, st := range lagStages {
			head += st.name + "\t"
		}
		fmt.Fprintln(tw, head)
		for _, l := range res.Lag {
			row := strconv.Itoa(l.Rate) + "\t"
			for _, p := range l.Stages {
				row += fmt.Sprintf("%.2f / %.2f ms\t", float64(p.P50.Microseconds())/1000, float64(p.P99.Microseconds())/1000)
			}
			fmt.Fprintln(tw, row)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		w.printf("  (commit→sent: the server flushes the commit, wakes its walsender, decodes and sends;\n")
		w.printf("   sent→received: until the consumer reads it; received→write: queued behind the batch being\n")
		w.printf("   written; write→committed: the outbox rows, the applied LSN and their commit)\n")
		w.printf("\nthe writers' own INSERT round trip (durable commit included), and CPU during the window in %% of a core:\n")
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "changes/s\tINSERT p50 / p99\twriters' backends\twalsender (waiting for a core)\trest of postgres\tthis process\tsequencer batches/s\t")
		for _, l := range res.Lag {
			pct := func(x float64) string {
				if x < 0 {
					return "n/a"
				}
				return fmt.Sprintf("%.1f%%", 100*x)
			}
			fmt.Fprintf(tw, "%d\t%.2f / %.2f ms\t%s\t%s (%s)\t%s\t%s\t%.0f\t\n", l.Rate,
				float64(l.WriterCommit.P50.Microseconds())/1000, float64(l.WriterCommit.P99.Microseconds())/1000,
				pct(l.CPU.Writers), pct(l.CPU.Walsender), pct(l.CPU.WalsenderWaiting), pct(l.CPU.OtherPostgres), pct(l.CPU.Process),
				l.CPU.SequencerBatches)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		w.printf("  (waiting for a core: share of the window the walsender was runnable but not running,\n")
		w.printf("   from the kernel's run-queue wait; rest of postgres: the consumer's and the sequencer's\n")
		w.printf("   backends, WAL writer, checkpointer…;\n")
		w.printf("   this process: the consumer, the sequencer and the writers' client side)\n")
	}

	if len(res.Throughput) > 0 {
		w.printf("\ninsert throughput of %d concurrent writers, one INSERT per transaction, %s per measurement after a %s\n",
			cfg.Writers, cfg.Duration, warmupFor(cfg.Duration))
		w.printf("warm-up; %d round(s), modes interleaved; median per mode\n\n", cfg.Rounds)
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		var base []float64
		for _, r := range res.Throughput {
			if r.Mode == ReplicationModeNone {
				base = r.RoundTxPerSec
			}
		}
		fmt.Fprintln(tw, "mode\ttx/s (median)\tvs none\tvs none, round by round\ttx/s per round\tcapture rows/insert\twriters' CPU/1k\tpostgres CPU/1k\t")
		for _, r := range res.Throughput {
			c, paired := r.cells(), "-"
			if p := pairedRatio(r.RoundTxPerSec, base); p > 0 {
				paired = fmt.Sprintf("%.2fx", p)
			}
			fmt.Fprintf(tw, "%s\t%.1f\t%s\t%s\t%s\t%s\t%s\t%s\t\n", r.Mode, r.TxPerSec, c.ratio, paired, c.rounds,
				c.perInsert, c.writerCPU, c.serverCPU)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		w.printf("\n")
		for _, r := range res.Throughput {
			w.printf("  %-18s %s\n", r.Mode, replicationModeAbout[r.Mode])
		}
		w.printf("  (vs none, round by round: the median of each round's ratio to none in the same round, which\n")
		w.printf("   the machine's drift between rounds does not move; capture rows/insert: outbox and feed rows\n")
		w.printf("   per inserted row once the consumer caught up;\n")
		w.printf("   CPU/1k: CPU time per 1,000 writes from /proc, of the writers' backends and of the whole server)\n")
	}
	w.printf("\nreproduce: %s\n", replicationCommand(cfg))
	return w.err
}

// pairedRatio is the median over rounds of rounds[i] / base[i] (0 without a base).
func pairedRatio(rounds, base []float64) float64 {
	var rs []float64
	for i := range min(len(rounds), len(base)) {
		if base[i] > 0 {
			rs = append(rs, rounds[i]/base[i])
		}
	}
	return median(rs)
}

// replicationCommand returns the command line that reproduces a run of cfg.
func replicationCommand(cfg ReplicationConfig) string {
	c := "tocsin bench replication"
	if !cfg.NoLag {
		rates := make([]string, len(cfg.Rates))
		for i, r := range cfg.Rates {
			rates[i] = strconv.Itoa(r)
		}
		c += fmt.Sprintf(" --rates %s --lag-duration %s --connections %d", strings.Join(rates, ","), cfg.LagDuration, cfg.Connections)
		if cfg.NoSequencer {
			c += " --sequencer=false"
		}
	} else {
		c += " --lag=false"
	}
	if !cfg.NoThroughput {
		c += fmt.Sprintf(" --writers %d --duration %s --rounds %d", cfg.Writers, cfg.Duration, cfg.Rounds)
		if len(cfg.Modes) != len(ReplicationModes()) {
			c += " --modes " + strings.Join(cfg.Modes, ",")
		}
	} else {
		c += " --throughput=false"
	}
	if cfg.DatabaseURL != "" {
		c += " --database-url URL"
	}
	return c
}
