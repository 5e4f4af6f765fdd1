package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/tocsin/tocsin/internal/bench"
	"github.com/tocsin/tocsin/internal/config"
)

var benchCommands = [][2]string{
	{"capture", "write-path cost of each capture mode (durable writers)"},
	{"latency", "commit → client latency over long polling and SSE"},
	{"streams", "memory and CPU of one node holding many SSE streams"},
	{"soak", "thousands of clients over every transport with reconnect waves; fails on loss or growth"},
}

const benchServerAbout = "\n\nThe bench creates and drops a scratch database on the server of --database-url, else\n" +
	"TOCSIN_DATABASE_URL, else `tocsin dev`'s cluster in this folder (fsync off), else a private\n" +
	"durable cluster it starts (--private forces that one)."

func runBench(ctx context.Context, args []string, stdout io.Writer) error {
	if len(args) == 0 || (args[0] != "capture" && args[0] != "latency" && args[0] != "streams" && args[0] != "soak") {
		return groupUsage(args, "tocsin bench", "tocsin bench capture|latency|streams|soak [flags]", benchCommands)
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
	case "latency":
		fs.about = "Measure commit → client latency at a steady event rate, one following client per\n" +
			"recipient, over each transport." + benchServerAbout
		cfg := bench.LatencyConfig{}
		fs.IntVar(&cfg.Rate, "rate", 1000, "events per second")
		fs.DurationVar(&cfg.Duration, "duration", 10*time.Second, "length of the run")
		fs.IntVar(&cfg.Clients, "clients", 100, "recipients, one following client each")
		transports := fs.String("transports", "long-poll,sse", "comma list of transports: long-poll, sse")
		fs.DurationVar(&cfg.Rest, "rest", bench.RestDefault, "CPU at rest is measured this long, clients connected, before the run")
		if err := fs.parse(args[1:]); err != nil {
			return err
		}
		cfg.Transports = strings.Split(*transports, ",")
		cfg.DatabaseURL = server()
		_, err := bench.RunLatency(ctx, cfg, stdout)
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
