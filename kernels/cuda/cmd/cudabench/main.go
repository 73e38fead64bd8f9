// Command cudabench times the CUDA backend's ops on seeded random unit
// vectors and prints TFLOP/s (useful flops: 2·d per similarity), one JSON
// object per measurement in the schema of `hpcrun bench --json` plus
// "impl", "device", "version" and "note". It is part of the GPU check
// bundle (scripts/gpu-check.sh); torch_ref.py times PyTorch on the same
// shapes in the same run and prints the ratios.
//
//	cudabench -ops topk,centroid,maxarg -nq 50000 -nb 10000000 -dim 512 -k 1000 -centroids 4096 -version 2,3 -json out.json
//
// Times are end to end from host memory (float16 rows in Go slices:
// conversion and NaN checks, host-to-device copies overlapped with
// compute, results back and decoded), best of -reps runs after one
// warm-up on a small prefix.
//
// -queries float32 makes the small operand (queries; centroids) float32,
// as the pipeline has it (eval embeddings, k-means means) against float16
// base rows; -precision float32,float16 then times both settings of
// runtime.gpu_precision (the FFMA kernels, or everything rounded onto the
// tensor cores); "filter" in -precision is float32 with runtime.gpu_filter
// (the ops on the tensor cores with exact results).
//
// topk-stream is top-k as the sims stage runs it on a GPU: one
// kernels.TopKStream, the base added in blocks of -block rows (1M), one
// flush at the end; torch_ref.py sets it beside torch's topk.
//
// centroid-kept is NearestCentroid as k-means' iterations after the first
// run it: the points kept on the device (kernels.Keeper; the upload is in
// the untimed warm-up, printed apart), float32 centroids whatever -queries
// says, sums and assignments back to the host. With -precision float16 or
// filter it is the tensor-core figure to set beside PyTorch's centroid op
// (data on the GPU) and the GPU's dense float16 peak.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"math"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"

	"hpcrun/kernels"
	"hpcrun/kernels/cuda"
)

type measurement struct {
	Op      string  `json:"op"`
	Impl    string  `json:"impl"`
	Device  string  `json:"device"`
	Host    string  `json:"host"`
	DType   string  `json:"dtype"`
	NQ      int     `json:"nq,omitempty"`
	NB      int     `json:"nb"`
	Dim     int     `json:"dim"`
	K       int     `json:"k,omitempty"`
	Version int     `json:"version"`
	Seconds float64 `json:"seconds"`
	GFLOPS  float64 `json:"gflops"`
	Note    string  `json:"note,omitempty"`
}

func main() {
	ops := flag.String("ops", "topk,centroid,maxarg", "comma-separated: topk, topk-stream, centroid, centroid-kept, maxarg, shiftedmax, prefixmax, kernel-topk, kernel-centroid")
	nq := flag.Int("nq", 50000, "queries")
	nb := flag.Int("nb", 10000000, "base rows (points for centroid)")
	dim := flag.Int("dim", 512, "dimension")
	k := flag.Int("k", 1000, "top-k")
	kc := flag.Int("centroids", 4096, "centroids for the centroid op")
	npm := flag.Int("prefix-rows", 50000, "rows for prefixmax")
	block := flag.Int("block", 1<<20, "topk-stream: base rows per Add (the sims stage's scan blocks on a GPU)")
	versions := flag.String("version", "0", "kernel versions, comma-separated (0 = auto, 1 to 7): every op runs with each (one the GPU lacks is skipped)")
	reps := flag.Int("reps", 1, "timed repetitions (best is reported)")
	threads := flag.Int("threads", 0, "host threads (0 = GOMAXPROCS)")
	jsonOut := flag.String("json", "", "write the measurements here as a JSON array")
	profile := flag.Bool("profile", false, "after each timed op, one more run synchronising after every kernel: where the time goes")
	queries := flag.String("queries", "float16", "dtype of the small operand (queries, centroids): float16 or float32 (the pipeline's eval embeddings and means)")
	precisions := flag.String("precision", "float32", "runtime.gpu_precision settings, comma-separated (float32, float16x2, float16, or filter: float32 with gpu_filter): every op runs with each")
	flag.Parse()
	if *queries != "float16" && *queries != "float32" {
		fmt.Fprintf(os.Stderr, "cudabench: -queries %q: want float16 or float32\n", *queries)
		os.Exit(2)
	}
	type setting struct {
		p      cuda.Precision
		filter bool // runtime.gpu_filter
	}
	var precs []setting
	for _, f := range strings.Split(*precisions, ",") {
		if strings.TrimSpace(f) == "filter" {
			precs = append(precs, setting{cuda.Exact, true})
			continue
		}
		p, err := cuda.ParsePrecision(strings.TrimSpace(f))
		if err != nil {
			fmt.Fprintln(os.Stderr, "cudabench:", err)
			os.Exit(2)
		}
		precs = append(precs, setting{p, false})
	}
	dtype := "float16"
	if *queries == "float32" {
		dtype = "float32xfloat16"
	}

	desc, err := cuda.Available()
	if err != nil {
		fmt.Fprintln(os.Stderr, "cudabench:", err)
		os.Exit(1)
	}
	b, err := cuda.New(0, *threads)
	if err != nil {
		fmt.Fprintln(os.Stderr, "cudabench:", err)
		os.Exit(1)
	}
	defer b.Close()
	var vers []int
	for _, f := range strings.Split(*versions, ",") {
		v, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || v < 0 || v > 7 {
			fmt.Fprintf(os.Stderr, "cudabench: -version %q: want 0 to 7\n", f)
			os.Exit(2)
		}
		vers = append(vers, v)
	}
	host, _ := os.Hostname()
	fmt.Printf("device: %s\n", desc)
	th := *threads
	if th <= 0 {
		th = runtime.GOMAXPROCS(0)
	}

	var out []measurement
	timeIt := func(name string, flops float64, m measurement, run func(n int) error) {
		note := m.Note
		dt := dtype // the op's operand dtypes (centroid-kept: always float32 centroids)
		if m.DType != "" {
			dt = m.DType
		}
		done := map[[3]int]bool{}
		// the exact filter takes the ops on float16 rows (not the kernel-only timings)
		filtered := name == "topk" || name == "topk-stream" || name == "maxarg" || name == "shiftedmax" || name == "centroid" || name == "centroid-kept" || name == "prefixmax"
		for _, ps := range precs {
			p := ps.p
			if ps.filter && !filtered {
				continue // the same kernels as float32
			}
			for _, v := range vers {
				b.Version, b.Precision, b.Filter = v, p, ps.filter
				// a float32 operand kept float32 runs the FFMA kernels (unless
				// the filter's band kernels take it)
				eff := b.Float16Version()
				if dt != "float16" && p == cuda.Exact && !ps.filter {
					eff = b.Float32Version()
				}
				if ps.filter && name != "topk" && name != "topk-stream" {
					eff = b.BandVersion() // the argmax ops' band kernels
				}
				if ps.filter && (eff < 2 || eff == 6) {
					continue // no band kernels: every row recomputed exactly, a fallback, not a setting to time
				}
				key := [3]int{int(p), eff, 0}
				if ps.filter {
					key[2] = 1
				}
				if !runs(b, v) || done[key] {
					continue
				}
				done[key] = true
				if dt != "float16" || ps.filter {
					m.Note = strings.TrimPrefix(note+"; gpu_precision "+p.String(), "; ")
					if ps.filter {
						m.Note += ", gpu_filter (exact)"
					}
				}
				if err := run(-1); err != nil { // warm-up: JIT, staging buffers
					fmt.Fprintf(os.Stderr, "cudabench: %s v%d warm-up: %v\n", name, v, err)
					os.Exit(1)
				}
				b.Profile() // reset the counters
				best := math.Inf(1)
				for r := 0; r < max(1, *reps); r++ {
					t0 := time.Now()
					if err := run(0); err != nil {
						fmt.Fprintf(os.Stderr, "cudabench: %s v%d: %v\n", name, v, err)
						os.Exit(1)
					}
					best = min(best, time.Since(t0).Seconds())
				}
				m.Op, m.Impl, m.Device, m.Host, m.DType, m.Version = name, "hpcrun-cuda", b.Name(), host, dt, eff
				m.Seconds, m.GFLOPS = best, flops/best/1e9
				fmt.Printf("%-10s hpcrun-cuda v%d  %8.3f s  %8.1f TFLOP/s  nq=%d nb=%d dim=%d k=%d  %s\n", name, eff, best, m.GFLOPS/1e3, m.NQ, m.NB, m.Dim, m.K, m.Note)
				fmt.Printf("             %s\n", b.Profile())
				out = append(out, m)
				if *profile {
					b.SetProfile(true)
					t0 := time.Now()
					if err := run(0); err != nil {
						fmt.Fprintf(os.Stderr, "cudabench: %s v%d (profiled): %v\n", name, v, err)
						os.Exit(1)
					}
					fmt.Printf("             profiled run %.3f s: %s\n", time.Since(t0).Seconds(), b.Profile())
					b.SetProfile(false)
				}
			}
		}
	}
	prefix := func(m kernels.Matrix, n int) kernels.Matrix {
		if n < 0 {
			n = min(m.Rows, 4096)
		} else {
			n = m.Rows
		}
		return kernels.F16Matrix(m.F16[:n*m.Dim], n, m.Dim)
	}
	// small: the small operand in the dtype -queries asks for
	f32 := func(m kernels.Matrix) kernels.Matrix {
		f := make([]float32, len(m.F16))
		kernels.F16ToF32(f, m.F16)
		return kernels.F32Matrix(f, m.Rows, m.Dim)
	}
	small := func(m kernels.Matrix) kernels.Matrix {
		if *queries == "float16" {
			return m
		}
		return f32(m)
	}

	var Q, B kernels.Matrix
	need := func() {
		if B.Rows == 0 {
			t0 := time.Now()
			Q = small(kernels.RandomUnit(1, *nq, *dim, true, th))
			B = kernels.RandomUnit(2, *nb, *dim, true, th)
			fmt.Printf("generated %d %s + %d float16 rows of dim %d in %.1f s\n", *nq, *queries, *nb, *dim, time.Since(t0).Seconds())
		}
	}
	for _, op := range strings.Split(*ops, ",") {
		switch op {
		case "topk":
			need()
			timeIt("topk", 2*float64(*nq)*float64(*nb)*float64(*dim), measurement{NQ: *nq, NB: *nb, Dim: *dim, K: *k}, func(n int) error {
				_, err := b.TopK(Q, prefix(B, n), kernels.TopKOptions{K: *k})
				return err
			})
		case "topk-stream":
			// top-k as the sims stage runs it: one stream, the base added
			// in blocks, one flush at the end
			need()
			note := fmt.Sprintf("TopKStream, blocks of %d rows", *block)
			timeIt("topk-stream", 2*float64(*nq)*float64(*nb)*float64(*dim), measurement{NQ: *nq, NB: *nb, Dim: *dim, K: *k, Note: note}, func(n int) error {
				st, err := b.NewTopKStream(Q, kernels.TopKOptions{K: *k})
				if err != nil {
					return err
				}
				defer st.Release()
				base := prefix(B, n)
				for r0 := 0; r0 < base.Rows; r0 += max(1, *block) {
					r1 := min(base.Rows, r0+max(1, *block))
					if err := st.Add(kernels.F16Matrix(base.F16[r0*base.Dim:r1*base.Dim], r1-r0, base.Dim)); err != nil {
						return err
					}
				}
				_, err = st.Flush()
				return err
			})
		case "maxarg":
			need()
			timeIt("maxarg", 2*float64(*nq)*float64(*nb)*float64(*dim), measurement{NQ: *nq, NB: *nb, Dim: *dim}, func(n int) error {
				_, err := b.MaxArg(Q, prefix(B, n))
				return err
			})
		case "shiftedmax":
			need()
			thr := make([]float32, *nq)
			for i := range thr {
				thr[i] = 0.1
			}
			timeIt("shiftedmax", 2*float64(*nq)*float64(*nb)*float64(*dim), measurement{NQ: *nq, NB: *nb, Dim: *dim}, func(n int) error {
				_, err := b.ShiftedMax(Q, prefix(B, n), thr)
				return err
			})
		case "centroid":
			need()
			C := small(kernels.RandomUnit(3, *kc, *dim, true, th))
			timeIt("centroid", 2*float64(*nb)*float64(*kc)*float64(*dim), measurement{NB: *nb, Dim: *dim, K: *kc, Note: "L2, fixed-point sums"}, func(n int) error {
				_, err := b.NearestCentroid(prefix(B, n), C, kernels.L2, kernels.NewAccum(*kc, *dim))
				return err
			})
		case "centroid-kept":
			// k-means' iterations after the first: the points stay on the
			// device (kernels.Keeper, kept in the warm-up, untimed) and each
			// call sends float32 centroids (the pipeline's means) and brings
			// back the assignment and the fixed-point sums. The tensor cores
			// run it with -precision float16 or filter; float32 is FFMA.
			need()
			C := f32(kernels.RandomUnit(3, *kc, *dim, true, th)) // the centroid op's, as -queries float32 has them
			var kept kernels.Kept
			defer func() {
				if kept != nil {
					kept.Release()
				}
			}()
			timeIt("centroid-kept", 2*float64(*nb)*float64(*kc)*float64(*dim),
				measurement{NB: *nb, Dim: *dim, K: *kc, DType: "float32xfloat16", Note: "L2, fixed-point sums, points kept on the device"}, func(n int) error {
					if n < 0 { // warm-up: keep the points in this setting's layout
						if kept != nil {
							kept.Release()
							kept = nil
						}
						t0 := time.Now()
						k, err := b.Keep(B)
						if err != nil {
							return err
						}
						kept = k
						fmt.Printf("             kept %d points on the device in %.3f s\n", B.Rows, time.Since(t0).Seconds())
					}
					_, err := kept.NearestCentroid(C, kernels.L2, kernels.NewAccum(*kc, *dim))
					return err
				})
		case "kernel-topk", "kernel-centroid":
			// the similarity kernel alone on device-resident data: the
			// queries (or one chunk of points) against one chunk of base
			// rows (or the centroids)
			kop := strings.TrimPrefix(op, "kernel-")
			nA, nB := *nq, min(*nb, 262144)
			if kop == "centroid" {
				nA, nB = min(*nb, 262144), *kc
			}
			for _, v := range vers {
				b.Version = v
				if !runs(b, v) {
					continue
				}
				sec, err := b.KernelSeconds(kop, nA, nB, *dim, max(3, *reps))
				if err != nil {
					fmt.Fprintf(os.Stderr, "cudabench: %s v%d: %v\n", op, v, err)
					os.Exit(1)
				}
				m := measurement{Op: op, Impl: "hpcrun-cuda", Device: b.Name(), Host: host, DType: "float16", NQ: nA, NB: nB, Dim: *dim,
					Version: v, Seconds: sec, GFLOPS: 2 * float64(nA) * float64(nB) * float64(*dim) / sec / 1e9,
					Note: "one kernel launch, data resident on the GPU"}
				fmt.Printf("%-15s hpcrun-cuda v%d  %8.4f s  %8.1f TFLOP/s  nA=%d nB=%d dim=%d  %s\n", op, v, sec, m.GFLOPS/1e3, nA, nB, *dim, m.Note)
				out = append(out, m)
			}
		case "prefixmax":
			X := kernels.RandomUnit(4, *npm, *dim, true, th)
			timeIt("prefixmax", float64(*npm)*float64(*npm-1)*float64(*dim), measurement{NB: *npm, Dim: *dim}, func(n int) error {
				_, err := b.PrefixMax(prefix(X, n))
				return err
			})
		default:
			fmt.Fprintf(os.Stderr, "cudabench: unknown op %q\n", op)
			os.Exit(2)
		}
	}
	if *jsonOut != "" {
		data, _ := json.MarshalIndent(out, "", "  ")
		if err := os.WriteFile(*jsonOut, append(data, '\n'), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "cudabench:", err)
			os.Exit(1)
		}
	}
}

// runs reports whether b runs version v as asked (0: whatever it picks),
// saying so when this GPU falls back to another version.
func runs(b *cuda.Backend, v int) bool {
	if got := b.Float16Version(); v != 0 && got != v {
		fmt.Printf("version %d: not on this GPU (it would run version %d): skipped\n", v, got)
		return false
	}
	return true
}
