package main

import (
	"context"
	"fmt"
	"io"

	"github.com/tocsin/tocsin/internal/settings"
)

var switchCommands = [][2]string{
	{"push on|off", "off: open streams end with push-disabled, new ones get 204; polling is unaffected"},
	{"capture on|off", "off: every route trigger returns at once (changes made meanwhile are not captured)"},
}

// runSwitch flips a runtime switch stored in tocsin.setting. Route triggers read `capture`
// on every write; nodes read `push` (see the README's "Runtime switches").
func runSwitch(ctx context.Context, args []string, stdout io.Writer) error {
	if len(args) < 1 || (args[0] != "push" && args[0] != "capture") {
		return groupUsage(args, "tocsin switch", "tocsin switch push|capture on|off [flags]", switchCommands)
	}
	name := args[0]
	fs := newFlagSet("tocsin switch "+name, "tocsin switch "+name+" on|off [flags]",
		"Flip the "+name+" switch on every node within a second.\n"+
			"Without --database-url or TOCSIN_DATABASE_URL, uses the database of `tocsin dev` in this folder.")
	rest := args[1:]
	var state string
	if len(rest) > 0 && (rest[0] == "on" || rest[0] == "off") {
		state, rest = rest[0], rest[1:]
	}
	cfg, err := fs.load(rest, "database-url")
	if err != nil {
		return err
	}
	if state == "" && fs.NArg() == 1 && (fs.Arg(0) == "on" || fs.Arg(0) == "off") {
		state = fs.Arg(0)
	} else if state == "" || fs.NArg() != 0 {
		return fmt.Errorf("usage: tocsin switch %s on|off [flags]", name)
	}
	pool, err := connect(ctx, cfg, useDevDatabase(cfg))
	if err != nil {
		return err
	}
	defer pool.Close()
	if err := settings.Set(ctx, pool, settings.Switch(name), state == "on"); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s is %s\n", name, state)
	return nil
}
