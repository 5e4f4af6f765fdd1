package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"

	"github.com/tocsin/tocsin/internal/config"
	"github.com/tocsin/tocsin/internal/routes"
)

func runRoutes(ctx context.Context, args []string, stdout io.Writer) error {
	if len(args) == 0 || (args[0] != "check" && args[0] != "apply") {
		return errors.New("usage: tocsin routes check|apply FILE")
	}
	action := args[0]
	fs := flag.NewFlagSet("tocsin routes "+action, flag.ContinueOnError)
	cfg, err := config.Load(fs, args[1:])
	if err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return fmt.Errorf("usage: tocsin routes %s FILE", action)
	}
	f, err := routes.ParseFile(fs.Arg(0))
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
		fmt.Fprintf(stdout, "%s: %d routes ok\n", fs.Arg(0), len(f.Routes))
		return nil
	}
	summary, err := routes.Apply(ctx, pool, f)
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, summary.String())
	return nil
}
