package main

import (
	"context"
	"errors"
	"flag"
	"io"
	"strings"
	"time"

	"github.com/tocsin/tocsin/internal/bench"
)

func runBench(ctx context.Context, args []string, stdout io.Writer) error {
	if len(args) == 0 {
		return errors.New("usage: tocsin bench capture|latency|streams|soak [flags]")
	}
	switch args[0] {
	case "capture":
		fs := flag.NewFlagSet("tocsin bench capture", flag.ContinueOnError)
		cfg := bench.CaptureConfig{}
		fs.StringVar(&cfg.DatabaseURL, "database-url", "", "server to create a scratch database on (default: a private durable cluster)")
		fs.IntVar(&cfg.Writers, "writers", bench.WritersDefault, "concurrent writers")
		fs.DurationVar(&cfg.Duration, "duration", bench.DurationDefault, "length of each measurement")
		fs.IntVar(&cfg.Rounds, "rounds", bench.RoundsDefault, "rounds; modes are interleaved in each")
		modes := fs.String("modes", strings.Join(bench.CaptureModes(), ","), "modes to measure")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		cfg.Modes = strings.Split(*modes, ",")
		_, err := bench.RunCapture(ctx, cfg, stdout)
		return err
	case "latency":
		fs := flag.NewFlagSet("tocsin bench latency", flag.ContinueOnError)
		cfg := bench.LatencyConfig{}
		fs.StringVar(&cfg.DatabaseURL, "database-url", "", "server to create a scratch database on (default: a private durable cluster)")
		fs.IntVar(&cfg.Rate, "rate", 1000, "events per second")
		fs.DurationVar(&cfg.Duration, "duration", 10*time.Second, "length of the run")
		fs.IntVar(&cfg.Clients, "clients", 100, "recipients, one following client each")
		transports := fs.String("transports", "long-poll,sse", "comma list of transports: long-poll, sse")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		cfg.Transports = strings.Split(*transports, ",")
		_, err := bench.RunLatency(ctx, cfg, stdout)
		return err
	case "streams":
		fs := flag.NewFlagSet("tocsin bench streams", flag.ContinueOnError)
		cfg := bench.StreamsConfig{}
		fs.StringVar(&cfg.DatabaseURL, "database-url", "", "server to create a scratch database on (default: a private cluster)")
		fs.IntVar(&cfg.Streams, "streams", 15000, "streams to hold open")
		fs.DurationVar(&cfg.Rest, "rest", 30*time.Second, "how long to watch CPU at rest")
		fs.DurationVar(&cfg.Heartbeat, "heartbeat", 0, "server heartbeat interval (default: the server's)")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		_, err := bench.RunStreams(ctx, cfg, stdout)
		return err
	case "soak":
		fs := flag.NewFlagSet("tocsin bench soak", flag.ContinueOnError)
		cfg := bench.SoakConfig{}
		fs.StringVar(&cfg.DatabaseURL, "database-url", "", "server to create a scratch database on (default: a private durable cluster)")
		fs.IntVar(&cfg.Clients, "clients", bench.SoakClientsDefault, "clients, a third each on SSE, long polling and short polling")
		fs.DurationVar(&cfg.Duration, "duration", bench.SoakDurationDefault, "how long events are published")
		fs.IntVar(&cfg.Rate, "rate", bench.SoakRateDefault, "events per second, to recipients in turn")
		fs.DurationVar(&cfg.ReconnectInterval, "reconnect-interval", bench.SoakReconnectIntervalDefault, "time between reconnect waves (a fifth of the clients each)")
		fs.DurationVar(&cfg.ReportInterval, "report-interval", bench.SoakReportIntervalDefault, "time between samples of the server's RSS, goroutines and open files")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		_, err := bench.RunSoak(ctx, cfg, stdout)
		return err
	}
	return errors.New("usage: tocsin bench capture|latency|streams|soak [flags]")
}
