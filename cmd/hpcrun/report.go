package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"path/filepath"

	"hpcrun/configs"
	"hpcrun/report"
)

// cmdReport writes workdir/report/index.html and its figures from the
// workdir's outputs (it reads no dataset and starts no rank).
func cmdReport(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("report", flag.ContinueOnError)
	var sets multiFlag
	fs.Var(&sets, "set", "override a config key: KEY=VALUE (repeatable)")
	cfg, err := loadConfigArgs(fs, &sets, args)
	if err != nil {
		return err
	}
	sum, err := report.Build(cfg)
	if err != nil {
		return err
	}
	fmt.Println(reportLine(cfg, sum))
	return nil
}

// runReport writes the report at the end of `hpcrun run` (rank 0, after
// every rank has finished). A report that cannot be written does not fail
// the run: its outputs are complete; the warning says how to retry.
func runReport(cfg *configs.Config, log *slog.Logger) {
	sum, err := report.Build(cfg)
	if err != nil {
		log.Warn("report not written (the run's outputs are complete; retry with hpcrun report CONFIG)", "err", err)
		return
	}
	log.Info(reportLine(cfg, sum))
}

func reportLine(cfg *configs.Config, sum *report.Summary) string {
	return fmt.Sprintf("report: %s (%d figures, %d left out)",
		filepath.Join(cfg.Job.Workdir, report.Dir, "index.html"), len(sum.Figures), len(sum.Missing))
}
