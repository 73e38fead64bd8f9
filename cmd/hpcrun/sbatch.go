package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"hpcrun/configs"
	"hpcrun/slurm"
)

// cmdSbatch renders the job's sbatch script from the config's [slurm]
// section and the flags; prints it, or submits it (--submit) and waits for
// the job (--wait), exiting with 0 when it completed and 1 otherwise.
func cmdSbatch(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("sbatch", flag.ContinueOnError)
	var sets multiFlag
	fs.Var(&sets, "set", "override a config key in the job: KEY=VALUE (repeatable)")
	nodes := fs.Int("nodes", 0, "nodes (default slurm.nodes or 1)")
	tpn := fs.Int("ntasks-per-node", 0, "ranks per node (default slurm.ntasks_per_node or 1)")
	gpn := fs.Int("gpus-per-node", -1, "GPUs per node (default slurm.gpus_per_node)")
	cpt := fs.Int("cpus-per-task", 0, "CPUs per rank (default slurm.cpus_per_task)")
	part := fs.String("partition", "", "partition (default slurm.partition)")
	tlimit := fs.String("time", "", "time limit HH:MM:SS or D-HH:MM:SS (default slurm.time)")
	submit := fs.Bool("submit", false, "submit with sbatch and print the job id")
	wait := fs.Bool("wait", false, "with --submit: wait for the job and exit with its status")
	bin := fs.String("binary", "", "the hpcrun binary the job runs (default: this one)")
	benchOps := fs.String("bench", "", "run `hpcrun bench --ops OPS` on every task instead of the experiment; JSON to WORKDIR/bench-JOBID.json")
	benchArgs := fs.String("bench-args", "", "more `hpcrun bench` flags, space-separated (e.g. \"--nq 4096 --nb 65536\")")
	cfg, err := loadConfigArgs(fs, &sets, args)
	if err != nil {
		return err
	}
	if *wait && !*submit {
		return usagef("sbatch: --wait needs --submit")
	}
	sc := cfg.Slurm
	if sc == nil {
		sc = &configs.Slurm{}
	}
	pick := func(flagV, cfgV int) int {
		if flagV > 0 {
			return flagV
		}
		return cfgV
	}
	pickS := func(flagV, cfgV string) string {
		if flagV != "" {
			return flagV
		}
		return cfgV
	}
	exe := *bin
	if exe == "" {
		if exe, err = os.Executable(); err != nil {
			return err
		}
	}
	if exe, err = filepath.Abs(exe); err != nil {
		return err
	}
	opts := slurm.ScriptOptions{
		JobName: cfg.Job.Name, Nodes: pick(*nodes, sc.Nodes), NTasksPerNode: pick(*tpn, sc.NTasksPerNode),
		GPUsPerNode: sc.GPUsPerNode, CPUsPerTask: pick(*cpt, sc.CPUsPerTask),
		Time: pickS(*tlimit, sc.Time), Partition: pickS(*part, sc.Partition),
		Account: sc.Account, QOS: sc.QOS, Constraint: sc.Constraint, Extra: sc.Extra,
		WorkDir: cfg.Job.Workdir, Binary: exe, Config: cfg.File, Set: sets,
	}
	if *gpn >= 0 {
		opts.GPUsPerNode = *gpn
	}
	if *benchOps != "" {
		// every task is a rank of the bench job; rank 0 prints the per-rank table
		opts.Command = append([]string{exe, "bench", "--ops", *benchOps, "--json", filepath.Join(cfg.Job.Workdir, "bench-%j.json")}, strings.Fields(*benchArgs)...)
	}
	var script string
	if sc.Template != "" {
		tmpl, err := os.ReadFile(sc.Template)
		if err != nil {
			return &configs.Error{File: cfg.File, Key: "slurm.template", Msg: err.Error()}
		}
		script, err = slurm.RenderTemplate(string(tmpl), opts)
		if err != nil {
			return usagef("sbatch: %v", err)
		}
	} else if script, err = slurm.Render(opts); err != nil {
		return usagef("sbatch: %v", err)
	}
	if !*submit {
		fmt.Print(script)
		return nil
	}
	// Slurm creates neither --chdir nor the output folder.
	if err := os.MkdirAll(cfg.Job.Workdir, 0o755); err != nil {
		return err
	}
	id, err := slurm.Submit(ctx, script, cfg.Job.Workdir)
	if err != nil {
		return fmt.Errorf("sbatch: %w", err)
	}
	fmt.Println(id)
	if !*wait {
		return nil
	}
	code, state, err := slurm.Wait(ctx, id)
	if err != nil {
		return fmt.Errorf("job %s: %w", id, err)
	}
	if code != 0 || state != "COMPLETED" {
		return fmt.Errorf("job %s ended %s with exit status %d (see %s)", id, state, code,
			filepath.Join(cfg.Job.Workdir, "slurm-"+id+".err"))
	}
	fmt.Fprintf(os.Stderr, "job %s %s\n", id, state)
	return nil
}
