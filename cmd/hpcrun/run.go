package main

import (
	"context"
	"flag"
	"os"
	"strings"

	"hpcrun/configs"
	"hpcrun/stages"
)

var stderrW = os.Stderr

func cmdRun(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	var sets multiFlag
	fs.Var(&sets, "set", "override a config key: KEY=VALUE (repeatable)")
	only := fs.String("only", "", "run only these stages (comma-separated)")
	ranks := fs.Int("ranks", 0, "local ranks to launch outside Slurm (default runtime.ranks)")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("run: want exactly one CONFIG file")
	}
	cfg, err := configs.Load(pos[0], sets)
	if err != nil {
		return err
	}
	var pick []string
	if *only != "" {
		for _, s := range strings.Split(*only, ",") {
			s = strings.TrimSpace(s)
			if !isStage(s) {
				return usagef("run: --only: unknown stage %q (stages: %s)", s, strings.Join(configs.Stages, ", "))
			}
			pick = append(pick, s)
		}
	}
	if *ranks < 0 {
		return usagef("run: --ranks must be positive")
	}
	log := newLogger(0, stderrW)
	return stages.Run(ctx, &stages.Env{Cfg: cfg, Log: log}, pick)
}

func isStage(s string) bool {
	for _, n := range configs.Stages {
		if n == s {
			return true
		}
	}
	return false
}
