package main

import (
	"context"
	"os"

	"hpcrun/collective"
	"hpcrun/configs"
)

// launchLocal runs the job as n local rank processes of this binary (the
// same arguments; each child sees HPCRUN_RANK and joins through rank 0's
// embedded NATS server, with a fresh secret in its environment only).
// A rank that fails makes the whole job fail, naming it.
func launchLocal(ctx context.Context, cfg *configs.Config, n int, args []string) error {
	if n < 1 {
		return usagef("run: --ranks must be at least 1")
	}
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	l := &collective.Launch{
		Ranks:   n,
		Argv:    append([]string{exe, "run"}, args...),
		Env:     os.Environ(),
		Timeout: cfg.Runtime.Timeout.Duration,
		URL:     cfg.Runtime.NatsURL,
		Secret:  os.Getenv(collective.EnvSecret), // for an external server; "" = generate
		Stderr:  stderrW,
	}
	return l.Run(ctx)
}
