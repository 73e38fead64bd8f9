// Command kbench times one kernels op and prints a JSON BenchResult.
//
// Random data (seeded):
//
//	kbench -op topk -dtype f32 -nq 10000 -nb 200000 -d 512 -k 100
//
// Data from .npy files (float32 or float16, C order, 2-D), as used by
// scripts/bench_faiss.py to time the same data as FAISS:
//
//	kbench -op topk -q xq.npy -b xb.npy -k 100 -out res      # writes res_I.npy, res_D.npy
//	kbench -op kmeans -b x.npy -c c0.npy -out res            # one k-means iteration: res_assign.npy, res_centroids.npy
//
// -cpuprofile FILE writes a CPU profile of the run (go tool pprof kbench
// FILE). HPCRUN_NO_AMX=1 in the environment times engine 1 (float32
// micro-kernels on every entry) instead of engine 2 (AMX filter); the
// results are the same bytes.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"runtime/pprof"
	"time"

	"hpcrun/kernels"
)

func main() {
	op := flag.String("op", "topk", "peak|topk|maxarg|shiftedmax|centroid|prefixmax|kmeans (kmeans needs -b and -c)")
	dtype := flag.String("dtype", "f32", "f32|f16 (random data)")
	nq := flag.Int("nq", 4096, "queries")
	nb := flag.Int("nb", 65536, "base rows / points")
	d := flag.Int("d", 512, "dimension")
	k := flag.Int("k", 100, "k (topk) / centroids (centroid)")
	threads := flag.Int("threads", 0, "threads (0 = GOMAXPROCS)")
	qf := flag.String("q", "", "queries .npy")
	bf := flag.String("b", "", "base / points .npy")
	cf := flag.String("c", "", "initial centroids .npy (kmeans)")
	out := flag.String("out", "", "prefix for result .npy files")
	reps := flag.Int("reps", 1, "timed repetitions on file data (best is reported)")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile of the whole run here")
	flag.Parse()
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err == nil {
			err = pprof.StartCPUProfile(f)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "kbench:", err)
			os.Exit(1)
		}
		defer pprof.StopCPUProfile()
	}

	var res any
	var err error
	if *bf == "" {
		res, err = kernels.Bench(*op, *dtype, *nq, *nb, *d, *k, *threads)
	} else {
		res, err = fileBench(*op, *qf, *bf, *cf, *k, *threads, *reps, *out)
	}
	if err != nil {
		pprof.StopCPUProfile()
		fmt.Fprintln(os.Stderr, "kbench:", err)
		os.Exit(1)
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	enc.Encode(res)
}

func fileBench(op, qf, bf, cf string, k, threads, reps int, out string) (kernels.BenchResult, error) {
	var r kernels.BenchResult
	e := kernels.NewCPU(threads)
	b, err := readNpy(bf)
	if err != nil {
		return r, err
	}
	r = kernels.BenchResult{Op: op, NB: b.Rows, Dim: b.Dim, K: k, Backend: e.Name(), Dtype: "f32"}
	if b.IsF16() {
		r.Dtype = "f16"
	}
	var flops float64
	var run func() error
	var save func() error
	switch op {
	case "topk":
		q, err := readNpy(qf)
		if err != nil {
			return r, err
		}
		r.NQ = q.Rows
		flops = 2 * float64(q.Rows) * float64(b.Rows) * float64(b.Dim)
		var tk kernels.TopKResult
		run = func() (err error) { tk, err = e.TopK(q, b, kernels.TopKOptions{K: k}); return }
		save = func() error {
			if err := writeNpyI64(out+"_I.npy", tk.Idx, tk.NQ, tk.K); err != nil {
				return err
			}
			return writeNpyF32(out+"_D.npy", tk.Val, tk.NQ, tk.K)
		}
	case "kmeans":
		c, err := readNpy(cf)
		if err != nil {
			return r, err
		}
		r.K = c.Rows
		flops = 2 * float64(b.Rows) * float64(c.Rows) * float64(b.Dim)
		means := make([]float32, c.Rows*c.Dim)
		var am kernels.ArgMax
		run = func() (err error) {
			acc := kernels.NewAccum(c.Rows, c.Dim)
			if am, err = e.NearestCentroid(b, c, kernels.L2, acc); err != nil {
				return err
			}
			acc.Means(means) // empty clusters: left as zero
			return nil
		}
		save = func() error {
			a := make([]int64, len(am.Idx))
			for i, v := range am.Idx {
				a[i] = int64(v)
			}
			if err := writeNpyI64(out+"_assign.npy", a, len(a), 1); err != nil {
				return err
			}
			return writeNpyF32(out+"_centroids.npy", means, c.Rows, c.Dim)
		}
	default:
		return r, fmt.Errorf("op %q not supported with files (topk, kmeans)", op)
	}
	r.Threads = threads
	r.PeakGFLOPS = kernels.PeakGFLOPS(threads)
	best := 0.0
	for i := 0; i < max(reps, 1); i++ {
		t0, c0 := time.Now(), kernels.ProcessCPUSeconds()
		if err := run(); err != nil {
			return r, err
		}
		dt := time.Since(t0).Seconds()
		if i == 0 || dt < best {
			best = dt
			r.CPUSeconds = kernels.ProcessCPUSeconds() - c0
		}
	}
	r.Reps = max(reps, 1)
	r.Seconds = best
	r.GFLOPS = flops / best / 1e9
	if r.PeakGFLOPS > 0 {
		r.PctPeak = 100 * r.GFLOPS / r.PeakGFLOPS
	}
	if out != "" {
		return r, save()
	}
	return r, nil
}
