package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/tocsin/tocsin/internal/config"
	"github.com/tocsin/tocsin/internal/routes"
)

func runRoutes(ctx context.Context, args []string, stdout io.Writer) error {
	if len(args) == 0 || (args[0] != "check" && args[0] != "apply") {
		return errors.New("usage: tocsin routes check|apply FILE")
	}
	action, rest := args[0], args[1:]
	// FILE may come before the flags (`routes check routes.yaml --database-url …`) or after.
	var file string
	if len(rest) > 0 && !strings.HasPrefix(rest[0], "-") {
		file, rest = rest[0], rest[1:]
	}
	fs := flag.NewFlagSet("tocsin routes "+action, flag.ContinueOnError)
	cfg, err := config.Load(fs, rest)
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
	pool, err := connect(ctx, cfg)
	if err != nil {
		return err
	}
	defer pool.Close()
	if action == "check" {
		if err := routes.Check(ctx, pool, f); err != nil {
			return err
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
