// Command updraft is Updraft's one binary: the gateway server and the tools
// around it.
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"syscall"
)

// command is one subcommand. run gets the arguments after the command name
// and returns an error to print; a usageError also prints the usage.
type command struct {
	summary string
	run     func(ctx context.Context, args []string, stdout, stderr io.Writer) error
}

var commands = map[string]command{
	"serve":    {"run a gateway node (configured by UPDRAFT_* variables)", runServe},
	"token":    {"mint a JWT for a subject and topic patterns", runToken},
	"emit":     {"publish an event through a gateway's HTTP API", runEmit},
	"tail":     {"subscribe to a topic and print its events as JSON lines", runTail},
	"presence": {"list a topic's members through the HTTP API, or follow them with --watch", runPresence},
	"tracker":  {"publish PostgreSQL changes on table topics (leader-elected, configured by UPDRAFT_*)", runTracker},
	"track":    {"install the change capture trigger on tables", runTrack},
	"untrack":  {"remove the change capture trigger from tables", runUntrack},
	"bench":    {"drive running gateways with a load scenario and report deliveries, latency and server cost", runBench},
	"version":  {"print the version (also --version)", runVersion},
}

// errUsage marks an error caused by bad arguments; the flag package has
// already printed what was wrong.
var errUsage = errors.New("usage")

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return 2
	}
	switch args[0] {
	case "-h", "-help", "--help":
		usage(stdout)
		return 0
	case "-version", "--version":
		args = []string{"version"}
	case "help":
		// `updraft help CMD` is `updraft CMD -h`.
		if len(args) == 1 {
			usage(stdout)
			return 0
		}
		args = []string{args[1], "-h"}
	}
	cmd, ok := commands[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "updraft: unknown command %q\n\n", args[0])
		usage(stderr)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if i := helpFlag(args[1:]); i >= 0 {
		return runHelp(ctx, args[0], cmd, args[1:i+2], stdout, stderr)
	}
	if err := cmd.run(ctx, args[1:], stdout, stderr); err != nil {
		if errors.Is(err, errUsage) || errors.Is(err, flag.ErrHelp) {
			return 2
		}
		fmt.Fprintf(stderr, "updraft %s: %v\n", args[0], err)
		if envCommands[args[0]] {
			noteUnknownEnv(stderr, args[0], os.Environ())
		}
		return 1
	}
	return 0
}

// helpFlag returns the index in args of the first -h, -help or --help
// before a "--", or -1.
func helpFlag(args []string) int {
	for i, a := range args {
		switch a {
		case "--":
			return -1
		case "-h", "-help", "--help":
			return i
		}
	}
	return -1
}

// runHelp runs cmd with args, which end with a help flag, and prints what
// the command wrote about its usage on stdout with exit status 0. The
// arguments stop at the help flag, so nothing after it runs; when they do
// not reach the flag parser (a help flag given as DATA or as a flag's
// value), the command fails and its message goes to stderr as usual.
func runHelp(ctx context.Context, name string, cmd command, args []string, stdout, stderr io.Writer) int {
	var help bytes.Buffer
	err := cmd.run(ctx, args, stdout, &help)
	if errors.Is(err, flag.ErrHelp) {
		_, _ = help.WriteTo(stdout)
		return 0
	}
	_, _ = help.WriteTo(stderr)
	switch {
	case err == nil:
		return 0
	case errors.Is(err, errUsage):
		return 2
	}
	fmt.Fprintf(stderr, "updraft %s: %v\n", name, err)
	return 1
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "Usage: updraft COMMAND [flags]\n\nCommands:")
	names := make([]string, 0, len(commands))
	for name := range commands {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		fmt.Fprintf(w, "  %-8s %s\n", name, commands[name].summary)
	}
	fmt.Fprintln(w, "\nRun 'updraft COMMAND -h' (or 'updraft help COMMAND') for a command's flags.")
}

// newFlagSet returns a flag set that reports errors to stderr and returns
// them rather than exiting.
func newFlagSet(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("updraft "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

// parseFlags parses args into fs and maps a parse failure to errUsage.
func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return errUsage
	}
	return nil
}
