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
//	tocsin bench capture|replication|latency|streams|soak|fanout|storm  measure capture cost, replication lag, latency, held streams, a soak, fan-out, a reconnect storm
//	tocsin version                  version and build information
//	tocsin help COMMAND             a command's usage and flags
package main

import (
	"context"
	"errors"
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
		{"bench", "capture|replication|latency|streams|soak|fanout|storm: measure capture, replication lag, commit→client latency, held streams, a soak, fan-out, a reconnect storm", runBench},
		{"version", "print the version and build information", runVersion},
		{"help", "COMMAND: show a command's usage and flags", nil},
	}
}

func main() {
	// SIGHUP (the terminal closed) stops as cleanly as Ctrl-C and SIGTERM.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		var help *helpRequest
		if errors.As(err, &help) {
			help.print(os.Stdout)
			return
		}
		fmt.Fprintln(os.Stderr, "tocsin:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout io.Writer) error {
	if len(args) == 0 || isHelp(args[0]) {
		if len(args) > 1 && args[0] == "help" {
			// tocsin help CMD [SUB] is tocsin CMD [SUB] --help.
			return run(ctx, append(args[1:], "--help"), stdout)
		}
		return &helpRequest{print: usage}
	}
	if args[0] == "--version" || args[0] == "-version" {
		args[0] = "version"
	}
	for _, c := range commands() {
		if c.name == args[0] && c.run != nil {
			return c.run(ctx, args[1:], stdout)
		}
	}
	msg := fmt.Sprintf("unknown command %q", args[0])
	var names []string
	for _, c := range commands() {
		names = append(names, c.name)
	}
	if s := closestWord(args[0], names); s != "" {
		msg += fmt.Sprintf(" (did you mean %q?)", s)
	}
	return errors.New(msg + "; run `tocsin help` for the list")
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "Usage: tocsin COMMAND [flags]\n\nCommands:")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-8s %s\n", c.name, c.usage)
	}
	fmt.Fprintln(w, "\nRun `tocsin COMMAND --help` (or `tocsin help COMMAND`) for a command's flags.")
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
