package main

import (
	"context"
	"fmt"
	"io"
	"runtime/debug"
)

// runVersion prints the module version and the build information Go stamped into the
// binary: the Go version, the platform, the VCS revision and whether the tree was modified.
func runVersion(_ context.Context, args []string, stdout io.Writer) error {
	fs := newFlagSet("tocsin version", "tocsin version", "Print Tocsin's version and build information.")
	if err := fs.parse(args); err != nil {
		return err
	}
	info, ok := debug.ReadBuildInfo()
	if !ok {
		fmt.Fprintln(stdout, "tocsin (no build information)")
		return nil
	}
	fmt.Fprintf(stdout, "tocsin %s\n", info.Main.Version)
	fmt.Fprintf(stdout, "  module     %s\n", info.Main.Path)
	fmt.Fprintf(stdout, "  go         %s\n", info.GoVersion)
	settings := map[string]string{}
	for _, s := range info.Settings {
		settings[s.Key] = s.Value
	}
	fmt.Fprintf(stdout, "  platform   %s/%s\n", settings["GOOS"], settings["GOARCH"])
	if rev := settings["vcs.revision"]; rev != "" {
		modified := ""
		if settings["vcs.modified"] == "true" {
			modified = " (modified)"
		}
		fmt.Fprintf(stdout, "  revision   %s%s\n", rev, modified)
		fmt.Fprintf(stdout, "  committed  %s\n", settings["vcs.time"])
	}
	return nil
}
