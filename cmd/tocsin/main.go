// Command tocsin makes PostgreSQL reactive: routes turn table changes into per-recipient
// events, a sequencer orders them into feeds, and an HTTP API delivers them by short
// polling, long polling or Server-Sent Events.
//
// Usage:
//
//	tocsin dev                      private PostgreSQL + demo schema + API, for trying Tocsin
//	tocsin serve                    API, sequencer and workers against TOCSIN_DATABASE_URL
//	tocsin migrate                  apply Tocsin's and River's migrations
//	tocsin routes check|apply FILE  validate or install a routes file
//	tocsin switch push|capture on|off
//	tocsin capture drop-slot        drop this database's replication slot
//	tocsin token --sub ID           mint a development token
//	tocsin bench capture            measure what trigger capture costs the application
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
)

type command struct {
	name, usage string
	run         func(ctx context.Context, args []string, stdout io.Writer) error
}

func commands() []command {
	return []command{
		{"dev", "run a private PostgreSQL with the demo schema and serve the API", runDev},
		{"serve", "run the API, the sequencer and the workers", runServe},
		{"migrate", "apply Tocsin's and River's migrations", runMigrate},
		{"routes", "check FILE | apply FILE: validate or install routes", runRoutes},
		{"switch", "push|capture on|off: flip a runtime switch on every node", runSwitch},
		{"capture", "drop-slot: drop this database's replication slot", runCapture},
		{"token", "mint an HS256 token for development and scripts", runToken},
		{"bench", "capture|latency|streams: measure capture cost, commit→client latency, held streams", runBench},
	}
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return // -h printed the command's flags
		}
		fmt.Fprintln(os.Stderr, "tocsin:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout io.Writer) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(stdout)
		return nil
	}
	for _, c := range commands() {
		if c.name == args[0] {
			return c.run(ctx, args[1:], stdout)
		}
	}
	usage(os.Stderr)
	return fmt.Errorf("unknown command %q", args[0])
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "Usage: tocsin COMMAND [flags]\n\nCommands:")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-8s %s\n", c.name, c.usage)
	}
	fmt.Fprintln(w, "\nRun `tocsin COMMAND -h` for a command's flags.")
}

func newLogger(level, format string) *slog.Logger {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		l = slog.LevelInfo
	}
	opts := &slog.HandlerOptions{Level: l}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(os.Stderr, opts))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, opts))
}
