package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"strconv"
	"strings"

	"hpcrun/collective"
	"hpcrun/configs"
	"hpcrun/kernels"
	"hpcrun/kernels/cuda"
	"hpcrun/slurm"
	"hpcrun/stages"
)

var stderrW = os.Stderr

// cmdRun runs an experiment. Who runs it decides how:
//   - under srun (SLURM_PROCID and SLURM_STEP_ID set): this process is one
//     rank of the job step; rank 0's host comes from the step's node list;
//   - as a child of a local launch (HPCRUN_RANK set): one rank;
//   - otherwise: --ranks N (default runtime.ranks) local rank processes of
//     this binary are launched, with a fresh job secret, and waited for.
func cmdRun(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	var sets multiFlag
	fs.Var(&sets, "set", "override a config key: KEY=VALUE (repeatable)")
	only := fs.String("only", "", "run only these stages (comma-separated)")
	ranks := fs.Int("ranks", 0, "local ranks to launch outside Slurm (default runtime.ranks)")
	cfg, err := loadConfigArgs(fs, &sets, args)
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

	opts, threads, err := rankOptions(cfg)
	if err != nil {
		return err
	}
	if opts == nil { // the launcher
		n := *ranks
		if n == 0 {
			n = cfg.Runtime.Ranks
		}
		if n > 1 || cfg.Runtime.NatsURL != "" {
			return launchLocal(ctx, cfg, n, args)
		}
		// one rank: run here, no server, no child process
		opts = &collective.Options{Rank: 0, Size: 1, Timeout: cfg.Runtime.Timeout.Duration}
		if threads == 0 {
			threads = runtime.NumCPU()
		}
	}
	log := newLogger(opts.Rank, stderrW)
	if !slurm.InSlurm() && os.Getenv(collective.EnvRank) != "" {
		log = newLoggerPrefix("", stderrW) // the launcher prefixes our lines with the rank
	}
	opts.Logger = log
	backend, err := pickBackend(cfg, threads, log, opts.Rank == 0)
	if err != nil {
		return err
	}
	if c, ok := backend.(interface{ Close() error }); ok {
		defer c.Close()
	} else if c, ok := backend.(interface{ Close() }); ok {
		defer c.Close()
	}
	comm, err := collective.Connect(ctx, *opts)
	if err != nil {
		return fmt.Errorf("rank %d: joining the job: %w", opts.Rank, err)
	}
	env := &stages.Env{Cfg: cfg, Log: log, Comm: comm, Backend: backend, Threads: threads}
	runErr := stages.Run(ctx, env, pick)
	if runErr != nil {
		comm.Abort(runErr)
		return runErr
	}
	if err := comm.Close(); err != nil {
		return err
	}
	if opts.Rank == 0 {
		runReport(cfg, log)
	}
	return nil
}

// rankOptions says how this process joins the job: nil when it is the
// local launcher (not under srun, not a launched child).
func rankOptions(cfg *configs.Config) (*collective.Options, int, error) {
	threads := cfg.Runtime.Threads
	if slurm.InSlurm() {
		se, err := slurm.LoadEnv(os.Getenv)
		if err != nil {
			return nil, 0, usagef("run: %v", err)
		}
		if !se.InStep {
			return nil, 0, usagef("run: inside an sbatch script but not in a job step: start it with srun (hpcrun sbatch writes such a script)")
		}
		o, err := collective.OptionsFromEnv(os.Getenv)
		if err != nil {
			return nil, 0, usagef("run: %v", err)
		}
		o.Host0 = se.FirstHost()
		o.URL = firstNonEmpty(o.URL, cfg.Runtime.NatsURL)
		o.Timeout = cfg.Runtime.Timeout.Duration
		o.RendezvousDir = cfg.Job.Workdir
		if threads == 0 {
			threads = se.Threads()
		}
		return &o, max(threads, 1), nil
	}
	if os.Getenv(collective.EnvRank) == "" {
		return nil, 0, nil
	}
	o, err := collective.OptionsFromEnv(os.Getenv)
	if err != nil {
		return nil, 0, usagef("run: %v", err)
	}
	o.URL = firstNonEmpty(o.URL, cfg.Runtime.NatsURL)
	if o.Timeout == 0 {
		o.Timeout = cfg.Runtime.Timeout.Duration
	}
	if o.RendezvousDir == "" {
		o.RendezvousDir = cfg.Job.Workdir
	}
	if threads == 0 {
		threads = max(1, runtime.NumCPU()/max(o.Size, 1))
	}
	return &o, threads, nil
}

// pickBackend chooses the similarity engine: cpu, or cuda when asked for
// and available; auto falls back to cpu with one log line.
func pickBackend(cfg *configs.Config, threads int, log *slog.Logger, narrate bool) (kernels.Backend, error) {
	gpu := gpuOrdinal()
	prec, err := cuda.ParsePrecision(cfg.Runtime.GPUPrecision)
	if err != nil {
		return nil, fmt.Errorf("runtime.gpu_precision: %w", err)
	}
	switch cfg.Runtime.Backend {
	case "cuda":
		b, err := cuda.New(gpu, threads)
		if err != nil {
			return nil, fmt.Errorf(`runtime.backend = "cuda": %w`, err)
		}
		b.Precision = prec
		b.Filter = b.Filter || cfg.Runtime.GPUFilter
		if narrate {
			log.Info("backend cuda", "gpu", gpu, "gpu_precision", prec.String(), "gpu_filter", b.Filter, "kernels", b.Versions())
		}
		return b, nil
	case "auto":
		desc, err := cuda.Available()
		if err == nil {
			b, nerr := cuda.New(gpu, threads)
			if nerr == nil {
				b.Precision = prec
				b.Filter = b.Filter || cfg.Runtime.GPUFilter
				if narrate {
					log.Info("backend auto: using cuda", "device", desc, "gpu", gpu, "gpu_precision", prec.String(), "gpu_filter", b.Filter, "kernels", b.Versions())
				}
				return b, nil
			}
			err = nerr
		}
		if narrate {
			log.Info("backend auto: using cpu", "reason", err.Error(), "threads", threads, "features", kernels.CPUFeatures())
		}
	}
	return kernels.NewCPU(threads), nil
}

// gpuOrdinal is the GPU this rank uses: under Slurm the one its local rank
// and CUDA_VISIBLE_DEVICES give it; otherwise local rank mod device count.
func gpuOrdinal() int {
	if slurm.InSlurm() {
		if se, err := slurm.LoadEnv(os.Getenv); err == nil {
			if g := se.GPU(); g.OK() {
				return g.Ordinal
			}
		}
	}
	local, _ := strconv.Atoi(os.Getenv(collective.EnvLocalRank))
	if n, err := cuda.DeviceCount(); err == nil && n > 0 {
		return local % n
	}
	return 0
}

func firstNonEmpty(a ...string) string {
	for _, s := range a {
		if s != "" {
			return s
		}
	}
	return ""
}

func isStage(s string) bool {
	for _, n := range configs.Stages {
		if n == s {
			return true
		}
	}
	return false
}
