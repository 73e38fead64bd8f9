package main

// Bench ops of the sims and prune stages:
//
//	sims        exact top-k of --nq eval rows over --nb base rows (float16 unless
//	            --dtype float32) through the sims stage's scan (stages.TopKScan:
//	            shard blocks, Backend.TopK, exact merge), beside FAISS
//	            IndexFlatIP on the same data in the same run
//	            (scripts/bench_sims_faiss.py, kept loaded; the two take turns,
//	            best of 3 each, so that a shared machine's load hits both). The
//	            hpcrun row says how many times faster, by wall and by CPU time,
//	            and how well the two top-k lists agree.
//	sims-stage  the whole sims and prune stages (RunInProcess, --ranks ranks) on
//	            the same shapes, in a world shaped like the paper's: a reference
//	            of --nb/10 rows, eval rows near reference rows (cos ~0.6), and 1%
//	            of the base planted near eval rows (cos ~0.8, pruned). Seconds
//	            per stage as report.json gives them; no reference implementation.
//
// Data: seeded Gaussian unit vectors written to a temp folder (page cache
// warm before timing).

import (
	"bufio"
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

func simsBenchDType(o *benchOpts) dataset.DType {
	if o.set["dtype"] && o.dtype == "float32" {
		return dataset.Float32
	}
	return dataset.Float16
}

// writeRows writes rows unit vectors: row i is normalize(centre(i) + s·z),
// z ~ N(0, I/dim) (centre nil: pure noise, s = 1), from a seeded PCG.
// It returns the rows as float32 when keep is set.
func writeRows(path string, rows, dim int, dt dataset.DType, seed uint64, centre func(i int) ([]float32, float64), keep bool) ([]float32, error) {
	w, err := dataset.CreateMatrix(path, dt, dim)
	if err != nil {
		return nil, err
	}
	rng := rand.New(rand.NewPCG(seed, uint64(rows)))
	const chunk = 4096
	buf := make([]float32, chunk*dim)
	var all []float32
	scale := 1 / math.Sqrt(float64(dim))
	for r0 := 0; r0 < rows; r0 += chunk {
		n := min(chunk, rows-r0)
		for i := 0; i < n; i++ {
			row := buf[i*dim : (i+1)*dim]
			c, s := []float32(nil), 1.0
			if centre != nil {
				c, s = centre(r0 + i)
			}
			var ss float64
			for j := range row {
				v := rng.NormFloat64() * s * scale
				if c != nil {
					v += float64(c[j])
				}
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
			return nil, err
		}
		if keep {
			all = append(all, buf[:n*dim]...)
		}
	}
	return all, w.Close()
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

// warmFiles reads files once so that both implementations start from the page cache.
func warmFiles(paths ...string) error {
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

// simsScriptPath finds scripts/NAME beside the binary (bin/../scripts), or in
// the current folder or one above it (tests run in cmd/hpcrun).
func simsScriptPath(name string) string {
	var dirs []string
	if exe, err := os.Executable(); err == nil {
		dirs = append(dirs, filepath.Join(filepath.Dir(exe), ".."))
	}
	dirs = append(dirs, ".", "..", filepath.Join("..", ".."))
	for _, d := range dirs {
		p := filepath.Join(d, "scripts", name)
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return filepath.Join("scripts", name)
}

func simsBenchPython() string {
	if p := os.Getenv("HPCRUN_PYTHON"); p != "" {
		return p
	}
	return "/usr/bin/python3"
}

// faissRunner is scripts/bench_sims_faiss.py, loaded and waiting for
// "search" lines.
type faissRunner struct {
	cmd     *exec.Cmd
	in      io.WriteCloser
	out     *bufio.Scanner
	stderr  strings.Builder
	Threads int     `json:"threads"`
	Load    float64 `json:"load_seconds"`
}

func startFaiss(ctx context.Context, base, queries string, k int, outIDs string) (*faissRunner, error) {
	f := &faissRunner{}
	f.cmd = exec.CommandContext(ctx, simsBenchPython(), simsScriptPath("bench_sims_faiss.py"), base, queries, fmt.Sprint(k), outIDs)
	f.cmd.Stderr = &f.stderr
	var err error
	if f.in, err = f.cmd.StdinPipe(); err != nil {
		return nil, err
	}
	stdout, err := f.cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := f.cmd.Start(); err != nil {
		return nil, err
	}
	f.out = bufio.NewScanner(stdout)
	if err := f.read(f); err != nil {
		f.cmd.Wait()
		return nil, err
	}
	return f, nil
}

func (f *faissRunner) read(v any) error {
	if !f.out.Scan() {
		return fmt.Errorf("bench_sims_faiss.py: no answer (%s)", lastLine(f.stderr.String()))
	}
	return json.Unmarshal(f.out.Bytes(), v)
}

// search runs one search: wall and CPU seconds.
func (f *faissRunner) search() (float64, float64, error) {
	if _, err := io.WriteString(f.in, "search\n"); err != nil {
		return 0, 0, err
	}
	var r struct {
		Seconds float64 `json:"seconds"`
		CPU     float64 `json:"cpu_seconds"`
	}
	err := f.read(&r)
	return r.Seconds, r.CPU, err
}

// close ends the script, which writes its last ids.
func (f *faissRunner) close() error {
	f.in.Close()
	if err := f.cmd.Wait(); err != nil {
		return fmt.Errorf("bench_sims_faiss.py: %v (%s)", err, lastLine(f.stderr.String()))
	}
	return nil
}

func benchSims(ctx context.Context, o *benchOpts) ([]Measurement, error) {
	dir, err := os.MkdirTemp("", "hpcrun-bench-sims-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	dt := simsBenchDType(o)
	basePath := filepath.Join(dir, "base", "images", "img_emb_0.npy")
	evalPath := filepath.Join(dir, "eval", "images", "img_emb_0.npy")
	if _, err := writeRows(basePath, o.nb, o.dim, dt, 1, nil, false); err != nil {
		return nil, err
	}
	if _, err := writeRows(evalPath, o.nq, o.dim, dt, 2, nil, false); err != nil {
		return nil, err
	}
	cfg, err := simsBenchConfig(dir, o, "")
	if err != nil {
		return nil, err
	}
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
	if err := warmFiles(basePath); err != nil {
		return nil, err
	}
	flops := 2 * float64(o.nq) * float64(o.nb) * float64(o.dim)
	const reps = 3
	outIDs := filepath.Join(dir, "faiss_ids.npy")
	fr, ferr := startFaiss(ctx, basePath, evalPath, o.k, outIDs)
	var ids []int64
	sec, cpu := math.Inf(1), 0.0
	fsec, fcpu := math.Inf(1), 0.0
	for r := 0; r < reps; r++ {
		c0 := simsCPUSeconds()
		t0 := time.Now()
		_, ids, err = stages.TopKScan(ctx, env, "base", q, o.k, false)
		if err != nil {
			return nil, err
		}
		if s := time.Since(t0).Seconds(); s < sec {
			sec, cpu = s, simsCPUSeconds()-c0
		}
		if ferr == nil {
			s, c, err := fr.search()
			if err != nil {
				return nil, err
			}
			if s < fsec {
				fsec, fcpu = s, c
			}
		}
	}
	ours := Measurement{Op: "sims", Impl: "hpcrun", Host: o.host, DType: dt.Name(), NQ: o.nq, NB: o.nb, Dim: o.dim, K: o.k,
		Seconds: sec, GFLOPS: flops / sec / 1e9, PeakRSS: peakRSS(),
		Note: fmt.Sprintf("%s, %d threads, best of %d, %.1f CPU s; exact top-k through the sims scan, shard read from page cache", env.Backend.Name(), threads, reps, cpu)}
	if ferr != nil {
		ours.Note += "; faiss not run: " + ferr.Error()
		return []Measurement{ours}, nil
	}
	if err := fr.close(); err != nil {
		return nil, err
	}
	fids, err := readInt64Array(outIDs)
	if err != nil {
		return nil, err
	}
	agree := topkAgreement(ids, fids, o.nq, o.k)
	ours.Note += fmt.Sprintf("; %.2fx faiss (CPU time: %.2fx); top-k sets agree %.4f%%", fsec/sec, fcpu/cpu, 100*agree)
	return []Measurement{
		{Op: "sims", Impl: "faiss", Host: o.host, DType: "float32", NQ: o.nq, NB: o.nb, Dim: o.dim, K: o.k,
			Seconds: fsec, GFLOPS: flops / fsec / 1e9,
			Note: fmt.Sprintf("IndexFlatIP search, %d OpenMP threads, best of %d taking turns with hpcrun, %.1f CPU s; load+float32+add %.1f s not counted", fr.Threads, reps, fcpu, fr.Load)},
		ours,
	}, nil
}

// simsCPUSeconds is this process's user+system CPU time.
func simsCPUSeconds() float64 {
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
	dt := simsBenchDType(o)
	nr := max(1, o.nb/10)
	d := o.dim
	// a world shaped like the paper's: eval near reference rows, 1% of the
	// base near eval rows
	ref, err := writeRows(filepath.Join(dir, "ref", "images", "img_emb_0.npy"), nr, d, dt, 3, nil, true)
	if err != nil {
		return nil, err
	}
	ev, err := writeRows(filepath.Join(dir, "eval", "images", "img_emb_0.npy"), o.nq, d, dt, 2, func(i int) ([]float32, float64) {
		r := i % nr
		return ref[r*d : (r+1)*d], 1.33 // cos ~0.6
	}, true)
	if err != nil {
		return nil, err
	}
	_, err = writeRows(filepath.Join(dir, "base", "images", "img_emb_0.npy"), o.nb, d, dt, 1, func(i int) ([]float32, float64) {
		if i%100 != 0 || o.nq == 0 {
			return nil, 1
		}
		e := (i / 100) % o.nq
		return ev[e*d : (e+1)*d], 0.75 // cos ~0.8
	}, false)
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
	if err := warmFiles(filepath.Join(dir, "base", "images", "img_emb_0.npy")); err != nil {
		return nil, err
	}
	c0 := simsCPUSeconds()
	t0 := time.Now()
	if err := stages.RunInProcess(ctx, cfg, cfg.Runtime.Ranks, nil, slog.New(slog.NewTextHandler(io.Discard, nil))); err != nil {
		return nil, err
	}
	total, cpu := time.Since(t0).Seconds(), simsCPUSeconds()-c0
	var rep stages.Report
	b, err := os.ReadFile(filepath.Join(cfg.Job.Workdir, "report.json"))
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(b, &rep); err != nil {
		return nil, err
	}
	pruned := "?"
	if c, ok := rep.Stages["prune"].Extra["combined"].(map[string]any); ok {
		pruned = fmt.Sprint(c["pruned"])
	}
	var out []Measurement
	for _, st := range []string{"sims", "prune"} {
		r := rep.Stages[st]
		out = append(out, Measurement{Op: st + "-stage", Impl: "hpcrun", Host: o.host, DType: dt.Name(), NQ: o.nq, NB: o.nb, Dim: o.dim, K: o.k,
			Seconds: r.Seconds, Note: fmt.Sprintf("%d ranks; reference %d rows; candidates %d; %s pruned; both stages %.1f s, %.1f CPU s",
				r.Ranks, nr, cand, pruned, total, cpu)})
	}
	return out, nil
}
