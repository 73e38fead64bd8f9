package main

// Bench ops of the kmeans and dedup stages, each beside its reference in
// the same run:
//
//	kmeans-iter  one k-means iteration of the kmeans stage (1 rank unless
//	             --ranks is given; assignment + fixed-point sums + allreduce
//	             + update, data read from the page cache) on --nb points
//	             (default 200000) x --dim, --k centroids (default 1000),
//	             beside faiss.Kmeans(d, k, niter=1).train on the same .npy
//	             (scripts/kmeans_ref.py).
//	dedup        the dedup rule on one cluster of --nb points (default
//	             20000) x --dim, streamed in blocks (stages.DedupCluster),
//	             beside SemDeDup's full-matrix numpy code
//	             (scripts/dedup_ref.py); both must remove the same count.
//
// The references run with HPCRUN_PYTHON (default /usr/bin/python3) from
// HPCRUN_SCRIPTS (default ./scripts); without them only hpcrun is timed.
// --threads N (N > 0) also limits the references (OMP_NUM_THREADS,
// OPENBLAS_NUM_THREADS). Notes give each side's CPU seconds beside its
// wall seconds: on a shared machine the wall time of both is noisy.

import (
	"context"
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
	"syscall"
	"time"

	"hpcrun/configs"
	"hpcrun/dataset"
	"hpcrun/kernels"
	"hpcrun/stages"
)

func init() {
	benchOps["kmeans-iter"] = benchKMeansIter
	benchOps["dedup"] = benchDedup
}

// refPython runs scripts/<script> with args and decodes its JSON output;
// ok is false (with the reason) when python or the script is missing.
func refPython(ctx context.Context, threads int, script string, out any, args ...string) (ok bool, why string, err error) {
	py := os.Getenv("HPCRUN_PYTHON")
	if py == "" {
		py = "/usr/bin/python3"
	}
	dir := os.Getenv("HPCRUN_SCRIPTS")
	if dir == "" {
		dir = "scripts"
	}
	path := filepath.Join(dir, script)
	if _, err := os.Stat(path); err != nil {
		return false, "reference " + path + " not found (run from the repository root or set HPCRUN_SCRIPTS)", nil
	}
	if _, err := os.Stat(py); err != nil {
		return false, "no " + py + " (set HPCRUN_PYTHON)", nil
	}
	cmd := exec.CommandContext(ctx, py, append([]string{path}, args...)...)
	cmd.Stderr = os.Stderr
	if threads > 0 {
		n := fmt.Sprint(threads)
		cmd.Env = append(os.Environ(), "OMP_NUM_THREADS="+n, "OPENBLAS_NUM_THREADS="+n, "MKL_NUM_THREADS="+n)
	}
	b, err := cmd.Output()
	if err != nil {
		return false, "", fmt.Errorf("%s: %w", script, err)
	}
	return true, "", json.Unmarshal(b, out)
}

// benchPoints makes n unit vectors of dimension dim around topics seeded
// directions (cosine to the topic about 0.6), every dupEvery-th a near-copy
// of an earlier point (0 = none).
func benchPoints(n, dim, topics, dupEvery int, seed uint64) []float32 {
	rng := rand.New(rand.NewPCG(seed, 99))
	centre := make([]float32, topics*dim)
	for i := range centre {
		centre[i] = float32(rng.NormFloat64())
	}
	for t := 0; t < topics; t++ {
		unit(centre[t*dim : (t+1)*dim])
	}
	x := make([]float32, n*dim)
	s := 1.3 / math.Sqrt(float64(dim))
	for i := 0; i < n; i++ {
		row := x[i*dim : (i+1)*dim]
		if dupEvery > 0 && i%dupEvery == dupEvery-1 {
			src := x[rng.IntN(i)*dim:]
			for j := range row {
				row[j] = src[j] + float32(rng.NormFloat64()*0.03/math.Sqrt(float64(dim)))
			}
		} else {
			c := centre[(i%topics)*dim:]
			for j := range row {
				row[j] = c[j] + float32(rng.NormFloat64()*s)
			}
		}
		unit(row)
	}
	return x
}

func unit(v []float32) {
	var ss float64
	for _, x := range v {
		ss += float64(x) * float64(x)
	}
	inv := 1 / math.Sqrt(ss)
	for i := range v {
		v[i] = float32(float64(v[i]) * inv)
	}
}

func writeBenchNPY(path string, x []float32, dim int, dtype string) error {
	dt := dataset.Float32
	if dtype == "float16" {
		dt = dataset.Float16
	}
	w, err := dataset.CreateMatrix(path, dt, dim)
	if err != nil {
		return err
	}
	if err := w.Write(x); err != nil {
		w.Abort()
		return err
	}
	return w.Close()
}

// ---------------------------------------------------------------- kmeans-iter

func benchKMeansIter(ctx context.Context, o *benchOpts) ([]Measurement, error) {
	n, k, d := 200000, 1000, o.dim
	if o.set["nb"] {
		n = o.nb
	}
	if o.set["k"] {
		k = o.k
	}
	ranks := 1
	if o.set["ranks"] {
		ranks = o.ranks
	}
	tmp, err := os.MkdirTemp("", "hpcrun-bench-kmeans-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	shard := filepath.Join(tmp, "data", "images", "img_emb_0.npy")
	if err := writeBenchNPY(shard, benchPoints(n, d, k, 0, 1), d, o.dtype); err != nil {
		return nil, err
	}
	runtime.GC()
	threads := o.threads
	if threads <= 0 {
		threads = max(1, runtime.NumCPU()/ranks)
	}
	toml := fmt.Sprintf(`
[job]
name = "bench-kmeans"
workdir = %q
seed = 1
[runtime]
timeout = "600s"
threads = %d
[datasets.x]
path = %q
layout = "embeddings"
[kmeans]
dataset = "x"
k = %d
max_iter = 1
change_lower_bound = 0
checkpoint = false
`, filepath.Join(tmp, "work"), threads, filepath.Join(tmp, "data"), k)
	cfg, err := configs.Parse([]byte(toml), "", nil)
	if err != nil {
		return nil, err
	}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	best, bestCPU := math.Inf(1), 0.0
	for rep := 0; rep < 3; rep++ {
		os.RemoveAll(cfg.Job.Workdir)
		cpu0 := cpuSeconds()
		if err := stages.RunInProcess(ctx, cfg, ranks, []string{"kmeans"}, quiet); err != nil {
			return nil, err
		}
		var st struct {
			Run struct {
				SecondsPerIter []float64 `json:"seconds_per_iter"`
			} `json:"run"`
		}
		b, err := os.ReadFile(filepath.Join(cfg.Job.Workdir, "kmeans", "state.json"))
		if err != nil {
			return nil, err
		}
		if err := json.Unmarshal(b, &st); err != nil || len(st.Run.SecondsPerIter) != 1 {
			return nil, fmt.Errorf("kmeans state.json: %v", err)
		}
		if s := st.Run.SecondsPerIter[0]; s < best {
			// CPU of the whole stage run (init and outputs included)
			best, bestCPU = s, cpuSeconds()-cpu0
		}
	}
	flops := 2 * float64(n) * float64(k) * float64(d)
	ours := Measurement{Op: "kmeans-iter", Impl: "hpcrun", Host: o.host, DType: o.dtype, NB: n, Dim: d, K: k,
		Seconds: best, GFLOPS: flops / best / 1e9,
		Note: fmt.Sprintf("%d rank(s) x %d threads, %s, best of 3; %.2f CPU s for the whole stage run", ranks, threads, kernels.NewCPU(threads).Name(), bestCPU)}
	var ref struct {
		Seconds float64 `json:"seconds"`
		CPU     float64 `json:"cpu_seconds"`
		Threads int     `json:"threads"`
		Faiss   string  `json:"faiss"`
		PeakRSS int64   `json:"peak_rss"`
	}
	ok, why, err := refPython(ctx, o.threads, "kmeans_ref.py", &ref, "bench", shard, fmt.Sprint(k), "3")
	if err != nil {
		return nil, err
	}
	if !ok {
		ours.Note += "; no faiss reference: " + why
		return []Measurement{ours}, nil
	}
	ours.Note += fmt.Sprintf("; %.2fx faiss", ref.Seconds/best)
	return []Measurement{
		{Op: "kmeans-iter", Impl: "faiss", Host: o.host, DType: o.dtype, NB: n, Dim: d, K: k, Seconds: ref.Seconds,
			GFLOPS: flops / ref.Seconds / 1e9, PeakRSS: ref.PeakRSS,
			Note: fmt.Sprintf("faiss %s Kmeans(niter=1).train, %d threads, float32, best of 3; %.2f CPU s", ref.Faiss, ref.Threads, ref.CPU)},
		ours,
	}, nil
}

// ---------------------------------------------------------------- dedup

func benchDedup(ctx context.Context, o *benchOpts) ([]Measurement, error) {
	m, d := 20000, o.dim
	if o.set["nb"] {
		m = o.nb
	}
	const eps = 0.124
	tmp, err := os.MkdirTemp("", "hpcrun-bench-dedup-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	x32 := benchPoints(m, d, 1, 5, 2)
	path := filepath.Join(tmp, "cluster.npy")
	if err := writeBenchNPY(path, x32, d, o.dtype); err != nil {
		return nil, err
	}
	x := kernels.F32Matrix(x32, m, d)
	if o.dtype == "float16" {
		h := make([]uint16, len(x32))
		dataset.F32ToF16(h, x32)
		x = kernels.F16Matrix(h, m, d)
	}
	be := kernels.NewCPU(o.threads)
	runtime.GC()
	resetPeakRSS()
	best, bestCPU, removed := math.Inf(1), 0.0, 0
	for rep := 0; rep < 2; rep++ {
		t0, cpu0 := time.Now(), cpuSeconds()
		keep, err := stages.DedupCluster(be, x, eps)
		if err != nil {
			return nil, err
		}
		if s := time.Since(t0).Seconds(); s < best {
			best, bestCPU = s, cpuSeconds()-cpu0
		}
		removed = 0
		for _, k := range keep {
			if !k {
				removed++
			}
		}
	}
	rss := peakRSS()
	flops := float64(m) * float64(m-1) * float64(d) // the strict triangle, 2 flops per term
	ours := Measurement{Op: "dedup", Impl: "hpcrun", Host: o.host, DType: o.dtype, NB: m, Dim: d, Seconds: best,
		GFLOPS: flops / best / 1e9, PeakRSS: rss,
		Note: fmt.Sprintf("streamed PrefixMax+MaxArg, eps %g, %d removed, %s, best of 2; %.2f CPU s; peak RSS of the whole bench process", eps, removed, be.Name(), bestCPU)}
	var ref struct {
		Seconds float64 `json:"seconds"`
		CPU     float64 `json:"cpu_seconds"`
		Removed int     `json:"removed"`
		PeakRSS int64   `json:"peak_rss"`
	}
	ok, why, err := refPython(ctx, o.threads, "dedup_ref.py", &ref, "bench", path, fmt.Sprint(eps))
	if err != nil {
		return nil, err
	}
	if !ok {
		ours.Note += "; no numpy reference: " + why
		return []Measurement{ours}, nil
	}
	check := "same removed count"
	if ref.Removed != removed {
		check = fmt.Sprintf("MISMATCH: numpy removes %d", ref.Removed)
	}
	ours.Note += fmt.Sprintf("; %.2fx numpy; %s", ref.Seconds/best, check)
	return []Measurement{
		{Op: "dedup", Impl: "numpy", Host: o.host, DType: o.dtype, NB: m, Dim: d, Seconds: ref.Seconds,
			GFLOPS: flops / ref.Seconds / 1e9, PeakRSS: ref.PeakRSS,
			Note: fmt.Sprintf("SemDeDup full matrix (x@x.T, triu, max), float32, %d removed, best of 2; %.2f CPU s", ref.Removed, ref.CPU)},
		ours,
	}, nil
}

// resetPeakRSS resets this process's VmHWM (Linux >= 4.0), so that
// peakRSS measures from here on.
func resetPeakRSS() {
	f, err := os.OpenFile("/proc/self/clear_refs", os.O_WRONLY, 0)
	if err != nil {
		return
	}
	f.WriteString("5")
	f.Close()
}

// cpuSeconds is the user+system CPU time of this process so far.
func cpuSeconds() float64 {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	tv := func(t syscall.Timeval) float64 { return float64(t.Sec) + float64(t.Usec)/1e6 }
	return tv(ru.Utime) + tv(ru.Stime)
}
