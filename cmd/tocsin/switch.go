package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
)

// runSwitch flips a runtime switch stored in tocsin.setting. Route triggers read `capture`
// on every write; nodes read `push` (see the README's "Runtime switches").
func runSwitch(ctx context.Context, args []string, stdout io.Writer) error {
	if len(args) < 2 || (args[0] != "push" && args[0] != "capture") || (args[1] != "on" && args[1] != "off") {
		return errors.New("usage: tocsin switch push|capture on|off")
	}
	_, pool, err := openDatabase(ctx, flag.NewFlagSet("tocsin switch", flag.ContinueOnError), args[2:])
	if err != nil {
		return err
	}
	defer pool.Close()
	value := args[1] == "on"
	if _, err := pool.Exec(ctx, `
		INSERT INTO tocsin.setting (key, value, updated_at) VALUES ($1, to_jsonb($2::boolean), now())
		ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = now()`, args[0], value); err != nil {
		return fmt.Errorf("switching %s %s: %w", args[0], args[1], err)
	}
	fmt.Fprintf(stdout, "%s is %s\n", args[0], args[1])
	return nil
}
