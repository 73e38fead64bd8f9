package main

// Bench ops of the sims and prune stages:
//
//	sims        exact top-k of --nq eval rows over --nb base rows (float16 unless
//	            --dtype says otherwise) through the sims stage's scan
//	            (stages.TopKScan: shard blocks, Backend.TopK, exact merge), beside
//	            FAISS IndexFlatIP on the same data in the same run
//	            (scripts/bench_sims_faiss.py); the hpcrun row says how many times
//	            faster and how well the two agree.
//	sims-stage  the whole sims and prune stages (RunInProcess, --ranks ranks) on
//	            the same shapes plus a reference set of --nb/10 rows: seconds per
//	            stage as report.json gives them. No reference implementation.
//
// Data: seeded Gaussian unit vectors written to a temp folder (page cache
// warm before timing).

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"hpcrun/collective"
	"hpcrun/configs"
	"hpcrun/dataset"
	"hpcrun/kernels"
	"hpcrun/stages"
)

func init() {
	benchOps["sims"] = benchSims
	benchOps["sims-stage"] = benchSimsStage
}

// simsBenchData writes base (nb rows), eval (nq rows) and, when nr > 0, a
// reference set as embeddings-layout datasets under dir.
func simsBenchData(dir string, o *benchOpts, nr int) (dataset.DType, error) {
	dt := dataset.Float16
	if o.set["dtype"] && o.dtype == "float32" {
		dt = dataset.Float32
	}
	for _, s := range []struct {
		name string
		rows int
		seed uint64
	}{{"base", o.nb, 1}, {"eval", o.nq, 2}, {"ref", nr, 3}} {
		if s.rows == 0 {
			continue
		}
		if err := writeGaussShard(filepath.Join(dir, s.name, "images", "img_emb_0.npy"), s.rows, o.dim, dt, s.seed); err != nil {
			return dt, err
		}
	}
	return dt, nil
}

// writeGaussShard writes rows seeded Gaussian unit vectors.
func writeGaussShard(path string, rows, dim int, dt dataset.DType, seed uint64) error {
	w, err := dataset.CreateMatrix(path, dt, dim)
	if err != nil {
		return err
	}
	rng := rand.New(rand.NewPCG(seed, uint64(rows)))
	const chunk = 4096
	buf := make([]float32, chunk*dim)
	for r0 := 0; r0 < rows; r0 += chunk {
		n := min(chunk, rows-r0)
		for i := 0; i < n; i++ {
			row := buf[i*dim : (i+1)*dim]
			var ss float64
			for j := range row {
				v := rng.NormFloat64()
				row[j] = float32(v)
				ss += v * v
			}
			inv := float32(1 / math.Sqrt(ss))
			for j := range row {
				row[j] *= inv
			}
		}
		if err := w.Write(buf[:n*dim]); err != nil {
			w.Abort()
			return err
		}
	}
	return w.Close()
}

func simsBenchConfig(dir string, o *benchOpts, extra string) (*configs.Config, error) {
	doc := fmt.Sprintf(`
[job]
name = "bench-sims"
workdir = "run"
[runtime]
threads = %d
ranks = %d
timeout = "600s"
[datasets.base]
path = "base"
[datasets.eval]
path = "eval"
`, o.threads, max(1, o.ranks)) + extra
	return configs.Parse([]byte(doc), filepath.Join(dir, "bench.toml"), nil)
}

// warm reads files once so that both implementations start from the page cache.
func warm(paths ...string) error {
	for _, p := range paths {
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		_, err = io.Copy(io.Discard, f)
		f.Close()
		if err != nil {
			return err
		}
	}
	return nil
}

// scriptPath finds scripts/NAME beside the binary (bin/../scripts) or in
// the current folder.
func scriptPath(name string) string {
	if exe, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(exe), "..", "scripts", name)
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return filepath.Join("scripts", name)
}

func refPython() string {
	if p := os.Getenv("HPCRUN_PYTHON"); p != "" {
		return p
	}
	return "/usr/bin/python3"
}

func benchSims(ctx context.Context, o *benchOpts) ([]Measurement, error) {
	dir, err := os.MkdirTemp("", "hpcrun-bench-sims-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	dt, err := simsBenchData(dir, o, 0)
	if err != nil {
		return nil, err
	}
	cfg, err := simsBenchConfig(dir, o, "")
	if err != nil {
		return nil, err
	}
	basePath := filepath.Join(dir, "base", "images", "img_emb_0.npy")
	evalPath := filepath.Join(dir, "eval", "images", "img_emb_0.npy")
	eval, err := stages.OpenDataset(cfg, "eval")
	if err != nil {
		return nil, err
	}
	qx, err := eval.ReadAll(16384)
	if err != nil {
		return nil, err
	}
	q := kernels.F32Matrix(qx, o.nq, o.dim)
	threads := o.threads
	if threads <= 0 {
		threads = runtime.GOMAXPROCS(0)
	}
	env := &stages.Env{Cfg: cfg, Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Comm: collective.NewNetwork(1, collective.NetworkOptions{}).Comms()[0], Backend: kernels.NewCPU(threads), Threads: threads}
	if err := warm(basePath); err != nil {
		return nil, err
	}
	flops := 2 * float64(o.nq) * float64(o.nb) * float64(o.dim)
	// best of reps (a shared machine is noisy); CPU seconds beside
	reps := 1
	if flops < 2e12 {
		reps = 3
	}
	var ids []int64
	sec, cpu := math.Inf(1), 0.0
	for r := 0; r < reps; r++ {
		c0 := cpuSeconds()
		t0 := time.Now()
		_, ids, err = stages.TopKScan(ctx, env, "base", q, o.k, false)
		if err != nil {
			return nil, err
		}
		if s := time.Since(t0).Seconds(); s < sec {
			sec, cpu = s, cpuSeconds()-c0
		}
	}
	ours := Measurement{Op: "sims", Impl: "hpcrun", Host: o.host, DType: dt.Name(), NQ: o.nq, NB: o.nb, Dim: o.dim, K: o.k,
		Seconds: sec, GFLOPS: flops / sec / 1e9, PeakRSS: peakRSS(),
		Note: fmt.Sprintf("%s, %d threads, best of %d, %.1f CPU s; exact top-k through the sims scan, shard read from page cache", env.Backend.Name(), threads, reps, cpu)}

	// FAISS on the same files, same run
	outIDs := filepath.Join(dir, "faiss_ids.npy")
	if err := warm(basePath); err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, refPython(), scriptPath("bench_sims_faiss.py"), basePath, evalPath, fmt.Sprint(o.k), outIDs, fmt.Sprint(reps))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		ours.Note += "; faiss not run: " + strings.TrimSpace(err.Error()+" "+lastLine(stderr.String()))
		return []Measurement{ours}, nil
	}
	var fr struct {
		Seconds     float64 `json:"seconds"`
		CPUSeconds  float64 `json:"cpu_seconds"`
		LoadSeconds float64 `json:"load_seconds"`
		Threads     int     `json:"threads"`
	}
	if err := json.Unmarshal(out, &fr); err != nil {
		return nil, fmt.Errorf("bench_sims_faiss.py: %v: %s", err, out)
	}
	fids, err := readInt64Array(outIDs)
	if err != nil {
		return nil, err
	}
	agree := topkAgreement(ids, fids, o.nq, o.k)
	ours.Note += fmt.Sprintf("; %.2fx faiss (CPU time: %.2fx); top-k sets agree %.4f%%", fr.Seconds/sec, fr.CPUSeconds/cpu, 100*agree)
	return []Measurement{
		{Op: "sims", Impl: "faiss", Host: o.host, DType: "float32", NQ: o.nq, NB: o.nb, Dim: o.dim, K: o.k,
			Seconds: fr.Seconds, GFLOPS: flops / fr.Seconds / 1e9,
			Note: fmt.Sprintf("IndexFlatIP search, %d OpenMP threads, best of %d, %.1f CPU s; load+float32+add %.1f s not counted", fr.Threads, reps, fr.CPUSeconds, fr.LoadSeconds)},
		ours,
	}, nil
}

// cpuSeconds is this process's user+system CPU time.
func cpuSeconds() float64 {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e9
}

// readInt64Array reads an int64 .npy of any shape.
func readInt64Array(path string) ([]int64, error) {
	f, h, err := dataset.OpenNPY(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if h.DType != dataset.Int64 {
		return nil, fmt.Errorf("%s: %s, want int64", path, h.DType.Name())
	}
	b := make([]byte, 8*h.Elems())
	if _, err := io.ReadFull(f, b); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	out := make([]int64, h.Elems())
	for i := range out {
		out[i] = int64(binary.LittleEndian.Uint64(b[8*i:]))
	}
	return out, nil
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}

// topkAgreement is the fraction of (query, id) pairs in both top-k lists.
func topkAgreement(a, b []int64, nq, k int) float64 {
	if len(a) != nq*k || len(b) != nq*k || nq*k == 0 {
		return 0
	}
	same := 0
	for i := 0; i < nq; i++ {
		set := map[int64]bool{}
		for _, v := range a[i*k : (i+1)*k] {
			set[v] = true
		}
		for _, v := range b[i*k : (i+1)*k] {
			if set[v] {
				same++
			}
		}
	}
	return float64(same) / float64(nq*k)
}

func benchSimsStage(ctx context.Context, o *benchOpts) ([]Measurement, error) {
	dir, err := os.MkdirTemp("", "hpcrun-bench-sims-stage-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	nr := max(1, o.nb/10)
	dt, err := simsBenchData(dir, o, nr)
	if err != nil {
		return nil, err
	}
	cand := min(20000, o.nb)
	cfg, err := simsBenchConfig(dir, o, fmt.Sprintf(`
[datasets.ref]
path = "ref"
[sims]
base = ["base"]
eval = ["eval"]
k = %d
[prune]
base = "base"
reference = "ref"
eval = ["eval"]
random_sizes = [1000]
near_far_sizes = [1000]
candidates = %d
`, o.k, cand))
	if err != nil {
		return nil, err
	}
	if err := warm(filepath.Join(dir, "base", "images", "img_emb_0.npy")); err != nil {
		return nil, err
	}
	t0 := time.Now()
	if err := stages.RunInProcess(ctx, cfg, cfg.Runtime.Ranks, nil, slog.New(slog.NewTextHandler(io.Discard, nil))); err != nil {
		return nil, err
	}
	total := time.Since(t0).Seconds()
	var rep stages.Report
	b, err := os.ReadFile(filepath.Join(cfg.Job.Workdir, "report.json"))
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(b, &rep); err != nil {
		return nil, err
	}
	var out []Measurement
	for _, st := range []string{"sims", "prune"} {
		r := rep.Stages[st]
		out = append(out, Measurement{Op: st + "-stage", Impl: "hpcrun", Host: o.host, DType: dt.Name(), NQ: o.nq, NB: o.nb, Dim: o.dim, K: o.k,
			Seconds: r.Seconds, Note: fmt.Sprintf("%d ranks; reference %d rows; candidates %d; sims+prune %.1f s with dataset opening", r.Ranks, nr, cand, total)})
	}
	return out, nil
}
