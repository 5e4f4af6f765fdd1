package main

import (
	"context"
	"fmt"
	"io"

	"github.com/tocsin/tocsin/internal/routes"
)

var captureCommands = [][2]string{
	{"drop-slot", "drop this database's replication slot"},
}

// runCapture runs `tocsin capture drop-slot`: it drops this database's replication slot,
// ending the session streaming from it. The slot's record stays: if replication routes
// remain, the next consumer recreates the slot and resets the feed epoch (changes in
// between were missed). Remove the replication routes first to retire capture cleanly.
func runCapture(ctx context.Context, args []string, stdout io.Writer) error {
	if len(args) == 0 || args[0] != "drop-slot" {
		return groupUsage(args, "tocsin capture", "tocsin capture drop-slot [flags]", captureCommands)
	}
	fs := newFlagSet("tocsin capture drop-slot", "tocsin capture drop-slot [flags]",
		"Drop this database's replication slot. If replication routes remain, the capture consumer\n"+
			"recreates it and resets the feed epoch (clients refetch): remove those routes first.\n"+
			"Without --database-url or TOCSIN_DATABASE_URL, uses the database of `tocsin dev` in this folder.")
	_, pool, err := openDatabase(ctx, fs, args[1:])
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
	routed, err := routes.HasReplicationRoutes(ctx, pool)
	if err != nil {
		return err
	}
	if routed {
		fmt.Fprintln(stdout, "replication routes remain: the capture consumer will recreate the slot and reset the feed epoch (clients refetch)")
	}
	return nil
}
