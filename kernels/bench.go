package kernels

import (
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"sync"
	"time"
)

// BenchResult is one timed run of Bench.
type BenchResult struct {
	Op, Dtype   string
	NQ, NB, Dim int
	K           int
	Threads     int
	Seconds     float64 // wall time of one call (best of the timed repetitions)
	GFLOPS      float64 // useful flops (2·d per similarity) / Seconds / 1e9
	PeakGFLOPS  float64 // this machine's FMA peak with the same threads
	PctPeak     float64 // 100·GFLOPS/PeakGFLOPS
	CPUSeconds  float64 // process CPU time of the best repetition (contention shows as CPUSeconds < Threads·Seconds)
	Backend     string
	Reps        int
}

// Bench times one op on seeded random unit vectors and reports GFLOP/s:
//
//	peak        FMA loop on all threads (sizes ignored)
//	topk        nq queries x nb base, k best          flops 2·nq·nb·d
//	maxarg      nq queries x nb base                  flops 2·nq·nb·d
//	shiftedmax  nq queries x nb base (random thresholds)
//	centroid    one k-means iteration: nb points, k centroids (L2,
//	            fixed-point sums, means); nq ignored     flops 2·nb·k·d
//	prefixmax   nb ordered rows                       flops nb·(nb-1)·d
//
// dtype is "f32" or "f16". threads <= 0 means GOMAXPROCS. Repeats the call
// until about 0.3 s have been spent (at least once) and keeps the fastest.
func Bench(op, dtype string, nq, nb, dim, k, threads int) (BenchResult, error) {
	if threads <= 0 {
		threads = runtime.GOMAXPROCS(0)
	}
	return BenchOn(NewCPU(threads), PeakGFLOPS(threads), op, dtype, nq, nb, dim, k, threads)
}

// BenchOn is Bench on backend e (e.g. the CUDA one), with peak the
// GFLOP/s PctPeak is relative to (0: none; op "peak" reports peak itself).
func BenchOn(e Backend, peak float64, op, dtype string, nq, nb, dim, k, threads int) (BenchResult, error) {
	if threads <= 0 {
		threads = runtime.GOMAXPROCS(0)
	}
	r := BenchResult{Op: op, Dtype: dtype, NQ: nq, NB: nb, Dim: dim, K: k, Threads: threads}
	r.Backend = e.Name()
	r.PeakGFLOPS = peak
	if op == "peak" {
		r.GFLOPS, r.Seconds, r.Reps = r.PeakGFLOPS, 0, 1
		r.PctPeak = 100
		return r, nil
	}
	if dtype != "f32" && dtype != "f16" {
		return r, fmt.Errorf("kernels: Bench: dtype %q (want f32 or f16)", dtype)
	}
	gen := func(seed uint64, rows int) Matrix { return RandomUnit(seed, rows, dim, dtype == "f16", threads) }
	var run func() error
	var flops float64
	switch op {
	case "topk", "maxarg", "shiftedmax":
		q, b := gen(1, nq), gen(2, nb)
		flops = 2 * float64(nq) * float64(nb) * float64(dim)
		switch op {
		case "topk":
			if k < 1 {
				return r, fmt.Errorf("kernels: Bench: topk needs k >= 1")
			}
			run = func() error { _, err := e.TopK(q, b, TopKOptions{K: k}); return err }
		case "maxarg":
			run = func() error { _, err := e.MaxArg(q, b); return err }
		default:
			thr := make([]float32, nq)
			rr := rand.New(rand.NewPCG(3, 3))
			for i := range thr {
				thr[i] = float32(rr.Float64() * 0.2)
			}
			run = func() error { _, err := e.ShiftedMax(q, b, thr); return err }
		}
	case "centroid":
		if k < 1 {
			return r, fmt.Errorf("kernels: Bench: centroid needs k >= 1 centroids")
		}
		x, c := gen(1, nb), gen(2, k)
		flops = 2 * float64(nb) * float64(k) * float64(dim)
		means := make([]float32, k*dim)
		run = func() error {
			acc := NewAccum(k, dim)
			if _, err := e.NearestCentroid(x, c, L2, acc); err != nil {
				return err
			}
			acc.Means(means)
			return nil
		}
	case "prefixmax":
		x := gen(1, nb)
		flops = float64(nb) * float64(max(nb-1, 0)) * float64(dim)
		run = func() error { _, err := e.PrefixMax(x); return err }
	default:
		return r, fmt.Errorf("kernels: Bench: unknown op %q", op)
	}
	best := math.Inf(1)
	var spent time.Duration
	for r.Reps == 0 || spent < 300*time.Millisecond {
		t0, c0 := time.Now(), ProcessCPUSeconds()
		if err := run(); err != nil {
			return r, err
		}
		dt := time.Since(t0)
		spent += dt
		if dt.Seconds() < best {
			best = dt.Seconds()
			r.CPUSeconds = ProcessCPUSeconds() - c0
		}
		r.Reps++
	}
	r.Seconds = best
	r.GFLOPS = flops / best / 1e9
	if r.PeakGFLOPS > 0 {
		r.PctPeak = 100 * r.GFLOPS / r.PeakGFLOPS
	}
	return r, nil
}

// RandomUnit returns rows seeded random unit vectors (Gaussian, normalised)
// of dimension dim, as float16 when f16 is set.
// Float16 rows are converted one at a time (no float32 copy of the whole
// set: the GPU benchmark asks for 10 million rows).
func RandomUnit(seed uint64, rows, dim int, f16 bool, threads int) Matrix {
	var f []float32
	var h []uint16
	if f16 {
		h = make([]uint16, rows*dim)
	} else {
		f = make([]float32, rows*dim)
	}
	const chunk = 4096
	var wg sync.WaitGroup
	sem := make(chan struct{}, max(threads, 1))
	for c0 := 0; c0 < rows; c0 += chunk {
		wg.Add(1)
		sem <- struct{}{}
		go func(c0 int) {
			defer func() { <-sem; wg.Done() }()
			r := rand.New(rand.NewPCG(seed, uint64(c0)))
			buf := make([]float32, dim)
			for i := c0; i < min(rows, c0+chunk); i++ {
				row := buf
				if !f16 {
					row = f[i*dim : (i+1)*dim]
				}
				var s float64
				for k := range row {
					v := r.NormFloat64()
					row[k] = float32(v)
					s += v * v
				}
				if s > 0 {
					inv := 1 / math.Sqrt(s)
					for k := range row {
						row[k] = float32(float64(row[k]) * inv)
					}
				}
				if f16 {
					F32ToF16(h[i*dim:(i+1)*dim], row)
				}
			}
		}(c0)
	}
	wg.Wait()
	if f16 {
		return F16Matrix(h, rows, dim)
	}
	return F32Matrix(f, rows, dim)
}

var peakCache sync.Map // threads -> float64

// PeakGFLOPS measures (once per thread count, ~0.02 s) the float32 FMA
// peak of this machine: independent FMA chains (512-bit, or 256-bit on
// AVX2-only CPUs) on every thread. It
// returns 0 where no assembly path exists.
func PeakGFLOPS(threads int) float64 {
	if threads <= 0 {
		threads = runtime.GOMAXPROCS(0)
	}
	if v, ok := peakCache.Load(threads); ok {
		return v.(float64)
	}
	perIter, ok := peakLoop(1)
	if !ok {
		return 0
	}
	// about 0.8 GFLOP per thread and repetition whatever the vector width
	// (AVX-512: 768 flops per iteration, AVX2: 192), so that goroutine
	// start-up skew stays small against the timed loop
	n := int(8e8 / perIter)
	best := 0.0
	for rep := 0; rep < 3; rep++ {
		var wg sync.WaitGroup
		t0 := time.Now()
		var total float64
		var mu sync.Mutex
		for t := 0; t < threads; t++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				f, _ := peakLoop(n)
				mu.Lock()
				total += f
				mu.Unlock()
			}()
		}
		wg.Wait()
		best = max(best, total/time.Since(t0).Seconds()/1e9)
	}
	peakCache.Store(threads, best)
	return best
}
