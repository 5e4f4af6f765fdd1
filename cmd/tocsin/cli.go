package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/tocsin/tocsin/internal/config"
)

// flagSet is a command's flags with what its --help prints around them. Parse errors come
// back as one line (see parsed); the flag package prints nothing itself.
type flagSet struct {
	*flag.FlagSet
	synopsis string // "tocsin token --sub ID [flags]"
	about    string // one paragraph on what the command does
}

func newFlagSet(name, synopsis, about string) *flagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	return &flagSet{FlagSet: fs, synopsis: synopsis, about: about}
}

// parse parses args; see parsed.
func (fs *flagSet) parse(args []string) error { return fs.parsed(fs.Parse(args)) }

// parsed turns the flag package's parse error into what the CLI reports: a help request
// (printed to stdout, exit 0), or one line naming the flag, with a suggestion when an
// unknown flag is close to a known one.
func (fs *flagSet) parsed(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, flag.ErrHelp):
		return &helpRequest{print: fs.printUsage}
	}
	msg := err.Error()
	if name, ok := strings.CutPrefix(msg, "flag provided but not defined: -"); ok {
		msg = fmt.Sprintf("unknown flag --%s", name)
		if s := fs.closest(name); s != "" {
			msg += fmt.Sprintf(" (did you mean --%s?)", s)
		}
	} else if name, ok := strings.CutPrefix(msg, "flag needs an argument: -"); ok {
		msg = fmt.Sprintf("flag --%s needs a value", name)
	} else {
		// invalid value "x" for flag -ttl: parse error
		msg = strings.Replace(msg, "for flag -", "for --", 1)
	}
	return fmt.Errorf("%s; see `%s --help`", msg, fs.Name())
}

// closest is the defined flag nearest to name, or "" when none is close.
func (fs *flagSet) closest(name string) string {
	var names []string
	fs.VisitAll(func(f *flag.Flag) { names = append(names, f.Name) })
	return closestWord(name, names)
}

// closestWord is the word nearest to s (at most two edits away, or s is a prefix of at
// least three letters), or "".
func closestWord(s string, words []string) string {
	best, bestDist := "", 3
	for _, w := range words {
		d := editDistance(s, w)
		if len(s) >= 3 && strings.HasPrefix(w, s) {
			d = min(d, 1)
		}
		if d < bestDist {
			best, bestDist = w, d
		}
	}
	return best
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev = cur
	}
	return prev[len(b)]
}

// printUsage prints the synopsis, the description and this command's flags with their
// types and defaults.
func (fs *flagSet) printUsage(w io.Writer) {
	fmt.Fprintf(w, "Usage: %s\n", fs.synopsis)
	if fs.about != "" {
		fmt.Fprintf(w, "\n%s\n", fs.about)
	}
	var flags []*flag.Flag
	fs.VisitAll(func(f *flag.Flag) { flags = append(flags, f) })
	if len(flags) == 0 {
		return
	}
	sort.Slice(flags, func(i, j int) bool { return flags[i].Name < flags[j].Name })
	fmt.Fprintln(w, "\nFlags:")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, f := range flags {
		typ := flagType(f)
		usage := f.Usage
		if f.DefValue != "" && f.DefValue != "false" {
			usage += fmt.Sprintf(" (default %s)", f.DefValue)
		}
		fmt.Fprintf(tw, "  --%s %s\t%s\n", f.Name, typ, usage)
	}
	_ = tw.Flush()
}

// flagType names a flag's value type: the configuration's own kinds, else the flag
// package's (string, duration, int, …); booleans take none.
func flagType(f *flag.Flag) string {
	if t, ok := f.Value.(interface{ Type() string }); ok {
		return t.Type()
	}
	if b, ok := f.Value.(interface{ IsBoolFlag() bool }); ok && b.IsBoolFlag() {
		return ""
	}
	name, _ := flag.UnquoteUsage(f)
	if name == "value" {
		return "string"
	}
	return name
}

// helpRequest is returned for --help: main prints it to stdout and exits 0.
type helpRequest struct {
	print func(io.Writer)
}

func (h *helpRequest) Error() string { return "help requested" }

// groupUsage answers a command group (routes, switch, capture, bench) called without a
// known subcommand: a help request when args ask for help (-h, --help, help), else one
// line with the group's usage.
func groupUsage(args []string, group, synopsis string, subs [][2]string) error {
	print := func(w io.Writer) {
		fmt.Fprintf(w, "Usage: %s\n\nCommands:\n", synopsis)
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		for _, s := range subs {
			fmt.Fprintf(tw, "  %s\t%s\n", s[0], s[1])
		}
		_ = tw.Flush()
		fmt.Fprintf(w, "\nRun `%s COMMAND --help` for a command's flags.\n", group)
	}
	if len(args) > 0 && isHelp(args[0]) {
		return &helpRequest{print: print}
	}
	if len(args) == 0 {
		return fmt.Errorf("missing command; usage: %s", synopsis)
	}
	return fmt.Errorf("unknown command %q; usage: %s", args[0], synopsis)
}

func isHelp(arg string) bool {
	return arg == "-h" || arg == "-help" || arg == "--help" || arg == "help"
}

// stderr receives the notes commands make beside their output (e.g. which database they
// use), so that stdout stays clean for scripts (`TOKEN=$(tocsin token …)`).
var stderr io.Writer = os.Stderr

// load reads the configuration with the flags of the named settings (every setting when
// none is named), reporting flag errors as parsed does and bad values as config does.
func (fs *flagSet) load(args []string, names ...string) (*config.Config, error) {
	var cfg *config.Config
	var err error
	if names == nil {
		cfg, err = config.Load(fs.FlagSet, args)
	} else {
		cfg, err = config.LoadOnly(fs.FlagSet, args, names...)
	}
	if cfg == nil && err != nil {
		return nil, fs.parsed(err)
	}
	return cfg, err
}
