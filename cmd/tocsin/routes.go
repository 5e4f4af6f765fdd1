package main

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/tocsin/tocsin/internal/routes"
)

var routesCommands = [][2]string{
	{"check FILE", "validate a routes file against the database's catalog"},
	{"apply FILE", "validate and install a routes file in one transaction"},
}

func runRoutes(ctx context.Context, args []string, stdout io.Writer) error {
	if len(args) == 0 || (args[0] != "check" && args[0] != "apply") {
		return groupUsage(args, "tocsin routes", "tocsin routes check|apply FILE [flags]", routesCommands)
	}
	action, rest := args[0], args[1:]
	about := map[string]string{
		"check": "Validate a routes file: its syntax, then its tables, columns and recipient SQL against\nthe database. Errors name the file, line, route and field.",
		"apply": "Validate and install a routes file in one transaction (all-or-nothing, idempotent): a\nroute removed from the file loses its trigger.",
	}[action]
	fs := newFlagSet("tocsin routes "+action, "tocsin routes "+action+" FILE [flags]", about+
		"\nWithout --database-url or TOCSIN_DATABASE_URL, uses the database of `tocsin dev` in this folder.")
	// FILE may come before the flags (`routes check routes.yaml --database-url …`) or after.
	var file string
	if len(rest) > 0 && !strings.HasPrefix(rest[0], "-") {
		file, rest = rest[0], rest[1:]
	}
	cfg, err := fs.load(rest, "database-url", "capture-default")
	if err != nil {
		return err
	}
	if file == "" && fs.NArg() == 1 {
		file = fs.Arg(0)
	} else if file == "" || fs.NArg() != 0 {
		return fmt.Errorf("usage: tocsin routes %s FILE [flags]", action)
	}
	f, err := routes.ParseFile(file)
	if err != nil {
		return err
	}
	f.SetDefaultCapture(routes.Capture(cfg.CaptureDefault))
	pool, err := connect(ctx, cfg, useDevDatabase(cfg))
	if err != nil {
		return err
	}
	defer pool.Close()
	if action == "check" {
		if err := routes.Check(ctx, pool, f); err != nil {
			return err
		}
		for _, n := range f.Notes {
			fmt.Fprintln(stdout, n)
		}
		fmt.Fprintf(stdout, "%s: %d routes ok\n", file, len(f.Routes))
		return nil
	}
	summary, err := routes.Apply(ctx, pool, f)
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, summary.String())
	return nil
}
