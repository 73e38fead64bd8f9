package stages

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"hpcrun/collective"
	"hpcrun/configs"
	"hpcrun/dataset"
	"hpcrun/kernels"
)

// Env is what every stage gets: its config, the job's Comm (a one-rank
// in-process Comm when alone, never nil inside a stage), the similarity
// backend and a logger. Stages write only under Cfg.Job.Workdir, and take
// a Comm, never a NATS connection, so a 4-rank test runs in one process.
type Env struct {
	Cfg     *configs.Config
	Log     *slog.Logger
	Comm    *collective.Comm
	Backend kernels.Backend
	Threads int // compute threads of this rank
}

// Rank is this rank's number.
func (e *Env) Rank() int { return e.Comm.Rank() }

// Size is the number of ranks.
func (e *Env) Size() int { return e.Comm.Size() }

// Result is what a stage reports into report.json.
type Result struct {
	Items   int64          `json:"items"`
	Extra   map[string]any `json:"extra,omitempty"`
	Skipped bool           `json:"skipped,omitempty"` // outputs were up to date
}

// StageFunc runs one stage on every rank.
type StageFunc func(ctx context.Context, env *Env) (*Result, error)

// registry holds the stages built so far, by name; configs.Stages gives
// their order.
var registry = map[string]StageFunc{}

// StageReport is one stage's entry in report.json.
type StageReport struct {
	Status     string         `json:"status"` // done | skipped | not-built
	Seconds    float64        `json:"seconds"`
	Items      int64          `json:"items"`
	Throughput float64        `json:"throughput"` // items per second
	Ranks      int            `json:"ranks"`
	Extra      map[string]any `json:"extra,omitempty"`
	// RankSeconds is each rank's wall time in the stage (a slow rank shows).
	RankSeconds []float64 `json:"rank_seconds,omitempty"`
}

// Report is report.json.
type Report struct {
	Job      string                   `json:"job"`
	Datasets map[string]DatasetReport `json:"datasets"`
	Stages   map[string]StageReport   `json:"stages"`
}

// DatasetReport summarises an input dataset.
type DatasetReport struct {
	Path   string `json:"path"`
	Layout string `json:"layout"`
	Rows   int64  `json:"rows"`
	Dim    int    `json:"dim"`
	DType  string `json:"dtype"`
	Shards int    `json:"shards"`
}

// OpenDataset opens a dataset named in the config: a [datasets.NAME] entry,
// or the output of [embed.NAME].
func OpenDataset(cfg *configs.Config, name string) (*dataset.Dataset, error) {
	if d := cfg.Datasets[name]; d != nil {
		return dataset.Open(name, d.Path, dataset.Options{Layout: d.Layout, IDColumn: d.IDColumn, Normalize: d.Normalize})
	}
	if cfg.Embed[name] != nil {
		return dataset.Open(name, filepath.Join(cfg.Job.Workdir, "embed", name), dataset.Options{Layout: dataset.Embeddings})
	}
	return nil, fmt.Errorf("unknown dataset %q", name)
}

// Run runs the config's stages in pipeline order (only those in only, when
// given) and writes report.json.
func Run(ctx context.Context, env *Env, only []string) error {
	cfg := env.Cfg
	if env.Comm == nil {
		env.Comm = collective.NewNetwork(1, collective.NetworkOptions{}).Comms()[0]
	}
	if env.Backend == nil {
		env.Backend = kernels.NewCPU(env.Threads)
	}
	if err := os.MkdirAll(cfg.Job.Workdir, 0o755); err != nil {
		return fmt.Errorf("workdir %s: %w", cfg.Job.Workdir, err)
	}
	if env.Rank() == 0 {
		unlock, err := lockWorkdir(cfg.Job.Workdir)
		if err != nil {
			return err
		}
		defer unlock()
	}
	// rank 0 narrates; the others log only what is theirs
	note := env.Log.Info
	if env.Rank() != 0 {
		note = env.Log.Debug
	}
	rep := &Report{Job: cfg.Job.Name, Datasets: map[string]DatasetReport{}, Stages: map[string]StageReport{}}
	// Open every declared dataset first: bad input fails before any work.
	names := make([]string, 0, len(cfg.Datasets))
	for n := range cfg.Datasets {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		d, err := OpenDataset(cfg, n)
		if err != nil {
			return err
		}
		rep.Datasets[n] = DatasetReport{Path: d.Root, Layout: d.Opts.Layout, Rows: d.Rows, Dim: d.Dim, DType: d.DType.Name(), Shards: len(d.Shards)}
		note("dataset", "name", n, "rows", d.Rows, "dim", d.Dim, "dtype", d.DType.Name(), "shards", len(d.Shards))
	}
	want := map[string]bool{}
	for _, s := range only {
		want[s] = true
	}
	for _, name := range configs.Stages {
		if !cfg.Has(name) || (len(only) > 0 && !want[name]) {
			continue
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := injectedFault(env.Rank(), name); err != nil {
			return err
		}
		fn := registry[name]
		if fn == nil {
			if env.Rank() == 0 {
				env.Log.Warn("stage not built yet, skipped", "stage", name)
			}
			rep.Stages[name] = StageReport{Status: "not-built", Ranks: env.Size()}
			continue
		}
		note("stage start", "stage", name)
		t0 := time.Now()
		res, err := fn(ctx, env)
		if err != nil {
			return fmt.Errorf("stage %s: %w", name, err)
		}
		// a stage ends on every rank before the next reads its outputs
		if err := env.Comm.Barrier(ctx); err != nil {
			return fmt.Errorf("stage %s: %w", name, err)
		}
		sec := time.Since(t0).Seconds()
		sr := StageReport{Status: "done", Seconds: sec, Items: res.Items, Ranks: env.Size(), Extra: res.Extra}
		if res.Skipped {
			sr.Status = "skipped"
		}
		if sec > 0 {
			sr.Throughput = float64(res.Items) / sec
		}
		if env.Size() > 1 {
			rs := make([]float64, env.Size())
			rs[env.Rank()] = sec
			if err := collective.Allreduce(ctx, env.Comm, rs, collective.Sum); err != nil {
				return fmt.Errorf("stage %s: gathering stage times: %w", name, err)
			}
			sr.RankSeconds = rs
		}
		rep.Stages[name] = sr
		note("stage done", "stage", name, "status", sr.Status, "seconds", fmt.Sprintf("%.2f", sec), "items", res.Items)
	}
	if env.Rank() != 0 {
		return nil
	}
	return writeReport(cfg.Job.Workdir, rep)
}

// writeReport merges rep into workdir/report.json: a run of some stages
// keeps the entries of the others, and keys written by others (the
// report's "report") stay.
func writeReport(workdir string, rep *Report) error {
	path := filepath.Join(workdir, "report.json")
	out := map[string]json.RawMessage{}
	if old, err := os.ReadFile(path); err == nil {
		_ = json.Unmarshal(old, &out)
		var prev Report
		if json.Unmarshal(old, &prev) == nil {
			for k, v := range prev.Stages {
				if _, ok := rep.Stages[k]; !ok {
					rep.Stages[k] = v
				}
			}
		}
	}
	for k, v := range map[string]any{"job": rep.Job, "datasets": rep.Datasets, "stages": rep.Stages} {
		b, err := json.Marshal(v)
		if err != nil {
			return err
		}
		out[k] = b
	}
	b, err := json.MarshalIndent(out, "", "  ")
	if err != nil {
		return err
	}
	return dataset.WriteFileAtomic(path, append(b, '\n'))
}

// RunInProcess runs the job as ranks goroutines joined by an in-process
// network, each with its own Env (same config); for tests and one-machine
// runs. It returns the first rank's error, naming the rank.
func RunInProcess(ctx context.Context, cfg *configs.Config, ranks int, only []string, log *slog.Logger) error {
	net := collective.NewNetwork(ranks, collective.NetworkOptions{Timeout: cfg.Runtime.Timeout.Duration})
	comms := net.Comms()
	threads := cfg.Runtime.Threads
	if threads == 0 {
		threads = max(1, runtime.NumCPU()/ranks)
	}
	errs := make([]error, ranks)
	done := make(chan int, ranks)
	for r := 0; r < ranks; r++ {
		go func(r int) {
			env := &Env{Cfg: cfg, Log: log.With("rank", r), Comm: comms[r], Threads: threads}
			errs[r] = Run(ctx, env, only)
			if errs[r] != nil {
				comms[r].Abort(errs[r])
			}
			done <- r
		}(r)
	}
	for i := 0; i < ranks; i++ {
		<-done
	}
	for r, err := range errs {
		if err != nil {
			return fmt.Errorf("rank %d: %w", r, err)
		}
	}
	return nil
}

// injectedFault is a test hook: HPCRUN_FAULT="rank=R,stage=S[,mode=M][,after=D]"
// strikes rank R when stage S starts (any stage when S is empty):
//
//	mode=error (default)  the stage fails with an error, as a failing rank
//	mode=exit             the process exits at once with status 3
//	mode=kill             the process SIGKILLs itself D later (a crash at a random point)
//	mode=term             the process gets SIGTERM D later (graceful stop)
//
// Every other rank must then fail, naming R, and a restart must resume.
func injectedFault(rank int, stage string) error {
	spec := os.Getenv("HPCRUN_FAULT")
	if spec == "" {
		return nil
	}
	want := map[string]string{}
	for _, kv := range strings.Split(spec, ",") {
		k, v, _ := strings.Cut(strings.TrimSpace(kv), "=")
		want[k] = v
	}
	if want["rank"] != strconv.Itoa(rank) || (want["stage"] != "" && want["stage"] != stage) {
		return nil
	}
	after, _ := time.ParseDuration(firstNonEmpty(want["after"], "0s"))
	self, _ := os.FindProcess(os.Getpid())
	switch want["mode"] {
	case "exit":
		fmt.Fprintf(os.Stderr, "hpcrun: rank %d: injected fault (HPCRUN_FAULT), exiting at stage %s\n", rank, stage)
		os.Exit(3)
	case "kill", "term":
		time.AfterFunc(after, func() {
			// the test measures from this line to the end of the job
			fmt.Fprintf(os.Stderr, "hpcrun: rank %d: HPCRUN_FAULT strikes (%s) at %s\n", rank, want["mode"], time.Now().UTC().Format(time.RFC3339Nano))
			if want["mode"] == "kill" {
				self.Kill()
			} else {
				self.Signal(syscall.SIGTERM)
			}
		})
		return nil
	}
	return fmt.Errorf("rank %d: injected fault at stage %s (HPCRUN_FAULT)", rank, stage)
}

func firstNonEmpty(a ...string) string {
	for _, s := range a {
		if s != "" {
			return s
		}
	}
	return ""
}
