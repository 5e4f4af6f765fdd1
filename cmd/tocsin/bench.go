package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/tocsin/tocsin/internal/bench"
	"github.com/tocsin/tocsin/internal/config"
)

var benchCommands = [][2]string{
	{"capture", "write-path cost of each capture mode (durable writers)"},
	{"replication", "replication capture: commit → outbox lag by stage, write throughput with the consumer running and paused"},
	{"latency", "commit → client latency over long polling and SSE"},
	{"streams", "memory and CPU of one node holding many SSE streams"},
	{"soak", "thousands of clients over every transport with reconnect waves; fails on loss or growth"},
	{"fanout", "one change to many recipients: time until the first and the last client has it"},
	{"storm", "thousands of clients reconnect from their cursors after a node restart: time until all caught up"},
}

const benchServerAbout = "\n\nThe bench creates and drops a scratch database on the server of --database-url, else\n" +
	"TOCSIN_DATABASE_URL, else `tocsin dev`'s cluster in this folder (fsync off), else a private\n" +
	"durable cluster it starts (--private forces that one)."

func runBench(ctx context.Context, args []string, stdout io.Writer) error {
	if len(args) == 0 || !slices.ContainsFunc(benchCommands, func(c [2]string) bool { return c[0] == args[0] }) {
		return groupUsage(args, "tocsin bench", "tocsin bench capture|replication|latency|streams|soak|fanout|storm [flags]", benchCommands)
	}
	name := args[0]
	fs := newFlagSet("tocsin bench "+name, "tocsin bench "+name+" [flags]", "")
	databaseURL := fs.String("database-url", "", "server to create a scratch database on")
	private := fs.Bool("private", false, "use a private durable cluster even where another server is configured")
	server := func() string {
		if *private {
			return ""
		}
		cfg := &config.Config{DatabaseURL: *databaseURL}
		if cfg.DatabaseURL == "" {
			cfg.DatabaseURL = os.Getenv("TOCSIN_DATABASE_URL")
		}
		if useDevDatabase(cfg).database {
			fmt.Fprintln(stderr, "tocsin: the dev cluster runs with fsync=off: these are not durable-commit figures (--private for those)")
		}
		return cfg.DatabaseURL
	}
	switch name {
	case "capture":
		fs.about = "Measure what each capture mode costs the application's writes: insert throughput of\n" +
			"concurrent writers, modes interleaved over rounds." + benchServerAbout
		cfg := bench.CaptureConfig{}
		fs.IntVar(&cfg.Writers, "writers", bench.WritersDefault, "concurrent writers")
		fs.DurationVar(&cfg.Duration, "duration", bench.DurationDefault, "length of each measurement")
		fs.IntVar(&cfg.Rounds, "rounds", bench.RoundsDefault, "rounds; modes are interleaved in each")
		modes := fs.String("modes", strings.Join(bench.CaptureModes(), ","), "modes to measure")
		if err := fs.parse(args[1:]); err != nil {
			return err
		}
		cfg.Modes = strings.Split(*modes, ",")
		cfg.DatabaseURL = server()
		_, err := bench.RunCapture(ctx, cfg, stdout)
		return err
	case "replication":
		fs.about = "Measure replication capture: the commit → outbox lag at steady change rates, stage by stage,\n" +
			"and the insert throughput of concurrent writers with no capture, with the consumer paused\n" +
			"(what the application pays) and with it running (what the machine pays)." + benchServerAbout
		cfg := bench.ReplicationConfig{}
		rates := fs.String("rates", joinInts(bench.RatesDefault), "comma list of change rates (single-row transactions per second) whose lag is measured")
		fs.DurationVar(&cfg.LagDuration, "lag-duration", bench.LagDurationDefault, "how long each rate is held")
		fs.IntVar(&cfg.Connections, "connections", bench.ConnectionsDefault, "connections sharing each rate's transactions")
		lag := fs.Bool("lag", true, "measure the lag")
		sequencer := fs.Bool("sequencer", true, "run a sequencer while the lag is measured, as a node does")
		throughput := fs.Bool("throughput", true, "measure the throughput")
		fs.IntVar(&cfg.Writers, "writers", bench.WritersDefault, "concurrent writers of the throughput measurement")
		fs.DurationVar(&cfg.Duration, "duration", bench.DurationDefault, "length of each throughput measurement")
		fs.IntVar(&cfg.Rounds, "rounds", bench.RoundsDefault, "throughput rounds; modes are interleaved in each")
		modes := fs.String("modes", strings.Join(bench.ReplicationModes(), ","), "throughput modes to measure")
		if err := fs.parse(args[1:]); err != nil {
			return err
		}
		var err error
		if cfg.Rates, err = intList(*rates); err != nil {
			return fmt.Errorf("--rates: %w", err)
		}
		cfg.NoLag, cfg.NoThroughput, cfg.NoSequencer = !*lag, !*throughput, !*sequencer
		cfg.Modes = strings.Split(*modes, ",")
		cfg.DatabaseURL = server()
		_, err = bench.RunReplication(ctx, cfg, stdout)
		return err
	case "latency":
		fs.about = "Measure commit → client latency at a steady event rate, one following client per\n" +
			"recipient, over each transport (mixed: SSE and long polling in alternation); fail on a\n" +
			"lost or duplicated event." + benchServerAbout
		cfg := bench.LatencyConfig{}
		fs.IntVar(&cfg.Rate, "rate", bench.LatencyRateDefault, "events per second")
		fs.DurationVar(&cfg.Duration, "duration", bench.LatencyDurationDefault, "length of the run")
		fs.IntVar(&cfg.Clients, "clients", bench.LatencyClientsDefault, "recipients, one following client each")
		transports := fs.String("transports", "long-poll,sse", "comma list of transports: long-poll, sse, mixed")
		perTx := fs.String("per-tx", "1", "comma list of events per publishing transaction, one run each")
		fs.IntVar(&cfg.Writers, "writers", bench.LatencyWritersDefault, "connections publishing side by side")
		fs.DurationVar(&cfg.Rest, "rest", bench.RestDefault, "CPU at rest is measured this long, clients connected, before the run")
		fs.StringVar(&cfg.Roles, "roles", bench.LatencyRolesDefault, "roles of the measured tocsin serve (all: River's workers too)")
		if err := fs.parse(args[1:]); err != nil {
			return err
		}
		cfg.Transports = strings.Split(*transports, ",")
		var err error
		if cfg.PerTx, err = intList(*perTx); err != nil {
			return fmt.Errorf("--per-tx: %w", err)
		}
		cfg.DatabaseURL = server()
		_, err = bench.RunLatency(ctx, cfg, stdout)
		return err
	case "soak":
		fs.about = "Run thousands of clients (a third each on SSE, long polling and short polling) against one\n" +
			"node under steady events and reconnect waves; fail on loss, duplicates or growing memory." + benchServerAbout
		cfg := bench.SoakConfig{}
		fs.IntVar(&cfg.Clients, "clients", bench.SoakClientsDefault, "clients, a third each on SSE, long polling and short polling")
		fs.DurationVar(&cfg.Duration, "duration", bench.SoakDurationDefault, "how long events are published")
		fs.IntVar(&cfg.Rate, "rate", bench.SoakRateDefault, "events per second, to recipients in turn")
		fs.DurationVar(&cfg.ReconnectInterval, "reconnect-interval", bench.SoakReconnectIntervalDefault, "time between reconnect waves (a fifth of the clients each)")
		fs.DurationVar(&cfg.ReportInterval, "report-interval", bench.SoakReportIntervalDefault, "time between samples of the server's RSS, goroutines and open files")
		if err := fs.parse(args[1:]); err != nil {
			return err
		}
		cfg.DatabaseURL = server()
		_, err := bench.RunSoak(ctx, cfg, stdout)
		return err
	case "fanout":
		fs.about = "Publish one change to many recipients in one transaction, round after round, and measure\n" +
			"the time from commit until the first and the last of their clients has it; fail on a\n" +
			"missed or repeated delivery." + benchServerAbout
		cfg := bench.FanoutConfig{}
		fs.IntVar(&cfg.Clients, "clients", bench.FanoutClientsDefault, "recipients of each change, one following client each")
		fs.IntVar(&cfg.Rounds, "rounds", bench.FanoutRoundsDefault, "changes published, one after the other")
		fs.StringVar(&cfg.Transport, "transport", bench.FanoutTransportDefault, "the clients' transport: sse, long-poll or mixed")
		if err := fs.parse(args[1:]); err != nil {
			return err
		}
		cfg.DatabaseURL = server()
		_, err := bench.RunFanout(ctx, cfg, stdout)
		return err
	case "storm":
		fs.about = "Stop and start a `tocsin serve` node while thousands of clients follow their feeds from\n" +
			"cursors and events keep being published; measure the time until every client has caught\n" +
			"up, the clients' errors and the database's CPU; fail on a lost or duplicated event." + benchServerAbout
		cfg := bench.StormConfig{}
		fs.IntVar(&cfg.Clients, "clients", bench.StormClientsDefault, "clients, one recipient each")
		fs.IntVar(&cfg.Rate, "rate", bench.StormRateDefault, "events per second, to recipients in turn")
		fs.DurationVar(&cfg.Duration, "duration", bench.StormDurationDefault, "how long events are published; the node stops a third in")
		fs.DurationVar(&cfg.Down, "down", bench.StormDownDefault, "how long the node stays stopped")
		fs.DurationVar(&cfg.Retry, "retry", bench.StormRetryDefault, "longest random pause of a client before it reconnects after an error")
		fs.StringVar(&cfg.Transport, "transport", bench.StormTransportDefault, "the clients' transport: sse, long-poll or mixed")
		fs.StringVar(&cfg.Stop, "stop", bench.StormStopDefault, "how the node stops: term (SIGTERM, streams drain as in a deploy) or kill (SIGKILL, a crash)")
		if err := fs.parse(args[1:]); err != nil {
			return err
		}
		cfg.DatabaseURL = server()
		_, err := bench.RunStorm(ctx, cfg, stdout)
		return err
	default: // streams
		fs.about = "Measure the memory and CPU of one `tocsin serve` process holding many SSE streams\n" +
			"(the client runs in another process)." + benchServerAbout
		cfg := bench.StreamsConfig{}
		fs.IntVar(&cfg.Streams, "streams", 15000, "streams to hold open")
		fs.DurationVar(&cfg.Rest, "rest", 30*time.Second, "how long to watch CPU at rest")
		fs.DurationVar(&cfg.Heartbeat, "heartbeat", 0, "server heartbeat interval (0: the server's default)")
		if err := fs.parse(args[1:]); err != nil {
			return err
		}
		cfg.DatabaseURL = server()
		_, err := bench.RunStreams(ctx, cfg, stdout)
		return err
	}
}

// intList parses a comma list of positive integers.
func intList(s string) ([]int, error) {
	var list []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("%q is not a positive integer", f)
		}
		list = append(list, n)
	}
	return list, nil
}

// joinInts writes xs as a comma list.
func joinInts(xs []int) string {
	s := make([]string, len(xs))
	for i, x := range xs {
		s[i] = strconv.Itoa(x)
	}
	return strings.Join(s, ",")
}
