// Command hpcrun runs the CLIP train-test similarity pipeline of
// Mayilvahanan et al. (ICLR 2024) as an HPC batch job: one binary that runs
// a TOML experiment, renders and submits sbatch scripts, synthesises test
// data and benchmarks its kernels.
//
// Exit status: 0 success, 1 a run failed, 2 bad usage or bad config.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"

	"hpcrun/configs"
)

// version is set at build time (-ldflags "-X main.version=...").
var version = "dev"

// usageError exits 2.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, a ...any) error { return usageError{fmt.Sprintf(format, a...)} }

type command struct {
	name, args, help string
	run              func(ctx context.Context, args []string) error
}

var commands []command

func init() {
	commands = []command{
		{"run", "CONFIG [--only STAGE[,STAGE...]] [--ranks N] [--set KEY=VALUE]...", "run an experiment's stages", cmdRun},
		{"synth", "--out DIR [--preset quickstart|bench|tiny] [--seed S]", "write a synthetic world to run on", cmdSynth},
		{"sbatch", "CONFIG [--nodes N] [--ntasks-per-node T] [--gpus-per-node G] [--partition P] [--time HH:MM:SS] [--submit] [--wait]", "render (and submit) an sbatch script", cmdSbatch},
		{"bench", "[--ranks N] [--ops OP[,OP...]] [--nq N] [--nb N] [--dim D] [--k K] [--dtype float32|float16] [--bytes N[,N...]] [--json FILE]", "benchmark kernels, I/O and collectives", cmdBench},
		{"config", "CONFIG [--set KEY=VALUE]...", "print the effective config as TOML", cmdConfig},
		{"report", "CONFIG", "write report/index.html and figures from the workdir", cmdReport},
		{"plan", "CONFIG --nodes N [--gpus-per-node G] [--bench FILE]", "estimate each stage's cost", cmdPlan},
		{"version", "", "print the version", cmdVersion},
	}
}

func main() {
	os.Exit(mainExit(os.Args[1:], os.Stderr))
}

func mainExit(args []string, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		printUsage(stderr)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	name := args[0]
	for _, c := range commands {
		if c.name == name {
			err := c.run(ctx, args[1:])
			return exitCode(err, stderr)
		}
	}
	if name == benchReadChild { // internal: the measured half of `bench --ops read`
		return exitCode(cmdBenchReadChild(args[1:]), stderr)
	}
	fmt.Fprintf(stderr, "hpcrun: unknown command %q\n\n", name)
	printUsage(stderr)
	return 2
}

func exitCode(err error, stderr io.Writer) int {
	if err == nil {
		return 0
	}
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	// one clear line first; details (if any) after
	fmt.Fprintln(stderr, "hpcrun: "+err.Error())
	var ue usageError
	var ce *configs.Error
	if errors.As(err, &ue) || errors.As(err, &ce) {
		return 2
	}
	return 1
}

func printUsage(w io.Writer) {
	fmt.Fprintln(w, "usage: hpcrun COMMAND [ARGS]")
	fmt.Fprintln(w)
	for _, c := range commands {
		fmt.Fprintf(w, "  hpcrun %s %s\n      %s\n", c.name, c.args, c.help)
	}
}

func cmdVersion(ctx context.Context, args []string) error {
	fmt.Println("hpcrun", version)
	return nil
}

// multiFlag collects repeated --set flags.
type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

// parseFlags parses fs from args, allowing flags after positionals
// (`hpcrun run CONFIG --ranks 2`), and returns the positionals.
func parseFlags(fs *flag.FlagSet, args []string) ([]string, error) {
	fs.SetOutput(io.Discard)
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				fs.SetOutput(os.Stderr)
				fs.PrintDefaults()
				return nil, err
			}
			return nil, usagef("%s: %v", fs.Name(), err)
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

func cmdConfig(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("config", flag.ContinueOnError)
	var sets multiFlag
	fs.Var(&sets, "set", "override a config key: KEY=VALUE (repeatable)")
	cfg, err := loadConfigArgs(fs, &sets, args)
	if err != nil {
		return err
	}
	out, err := cfg.Encode()
	if err != nil {
		return err
	}
	_, err = os.Stdout.Write(out)
	return err
}

// newLogger logs one line per event, prefixed with the rank.
func newLogger(rank int, w io.Writer) *slog.Logger {
	return newLoggerPrefix(fmt.Sprintf("[rank %d] ", rank), w)
}

func newLoggerPrefix(prefix string, w io.Writer) *slog.Logger {
	level := slog.LevelInfo
	if os.Getenv("HPCRUN_DEBUG") != "" {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(&prefixWriter{prefix: prefix, w: w}, &slog.HandlerOptions{Level: level}))
}

type prefixWriter struct {
	prefix string
	w      io.Writer
}

// Write gets one whole record per call from slog's handlers.
func (p *prefixWriter) Write(b []byte) (int, error) {
	if _, err := io.WriteString(p.w, p.prefix+string(b)); err != nil {
		return 0, err
	}
	return len(b), nil
}

func notBuilt(what, issue string) error {
	return usagef("%s is not built yet (%s)", what, issue)
}

func sortedNames[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// loadConfigArgs parses a command's flags (which may follow the CONFIG
// argument), wants exactly one CONFIG, and loads it with the --set
// overrides gathered in sets.
func loadConfigArgs(fs *flag.FlagSet, sets *multiFlag, args []string) (*configs.Config, error) {
	pos, err := parseFlags(fs, args)
	if err != nil {
		return nil, err
	}
	if len(pos) != 1 {
		return nil, usagef("%s: want exactly one CONFIG file", fs.Name())
	}
	return configs.Load(pos[0], *sets)
}
