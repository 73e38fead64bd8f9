package main

import (
	"context"
	"flag"
	"fmt"
	"time"

	"hpcrun/synth"
)

func cmdSynth(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("synth", flag.ContinueOnError)
	out := fs.String("out", "", "output folder (required)")
	preset := fs.String("preset", "quickstart", "quickstart | bench | tiny")
	seed := fs.Uint64("seed", 333, "random seed: the same seed gives the same bytes")
	force := fs.Bool("force", false, "write even if DIR already holds a world")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("synth: unexpected argument %q", pos[0])
	}
	if *out == "" {
		return usagef("synth: --out DIR is required")
	}
	p, ok := synth.Presets[*preset]
	if !ok {
		return usagef("synth: unknown preset %q (quickstart, bench, tiny)", *preset)
	}
	log := newLogger(0, stderrW)
	if synth.Exists(*out) && !*force {
		log.Info("synth: a world of this version is already there, nothing to do (use --force to rewrite)", "out", *out)
		return nil
	}
	t0 := time.Now()
	truth, err := synth.Write(*out, p, *seed)
	if err != nil {
		return fmt.Errorf("synth %s: %w", *out, err)
	}
	log.Info("synth: wrote world", "out", *out, "preset", p.Name, "seed", *seed, "laion_rows", truth.BaseRows,
		"dup_groups", len(truth.DupGroups), "dim", p.Dim, "seconds", fmt.Sprintf("%.1f", time.Since(t0).Seconds()))
	return nil
}
