package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"

	"github.com/tocsin/tocsin/internal/routes"
)

// runCapture runs `tocsin capture drop-slot`: it drops this database's replication slot,
// ending the session streaming from it. The slot's record stays: if replication routes
// remain, the next consumer recreates the slot and resets the feed epoch (changes in
// between were missed). Remove the replication routes first to retire capture cleanly.
func runCapture(ctx context.Context, args []string, stdout io.Writer) error {
	if len(args) == 0 || args[0] != "drop-slot" {
		return errors.New("usage: tocsin capture drop-slot")
	}
	_, pool, err := openDatabase(ctx, flag.NewFlagSet("tocsin capture drop-slot", flag.ContinueOnError), args[1:])
	if err != nil {
		return err
	}
	defer pool.Close()
	slot, err := routes.SlotName(ctx, pool)
	if err != nil {
		return err
	}
	dropped, err := routes.DropSlot(ctx, pool, slot)
	if err != nil {
		return err
	}
	if !dropped {
		fmt.Fprintf(stdout, "no replication slot %q\n", slot)
		return nil
	}
	fmt.Fprintf(stdout, "dropped replication slot %q\n", slot)
	var routed bool
	if err := pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM tocsin.route WHERE capture = 'replication')`).Scan(&routed); err != nil {
		return fmt.Errorf("looking for replication routes: %w", err)
	}
	if routed {
		fmt.Fprintln(stdout, "replication routes remain: the capture consumer will recreate the slot and reset the feed epoch (clients refetch)")
	}
	return nil
}
