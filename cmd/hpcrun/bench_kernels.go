package main

import (
	"context"
	"fmt"

	"hpcrun/kernels"
)

// The similarity-engine ops: GFLOP/s per op and input precision, beside
// this machine's FMA peak measured in the same run (op peak).
func init() {
	for _, op := range []string{"peak", "topk", "maxarg", "shiftedmax", "centroid", "prefixmax"} {
		benchOps[op] = benchKernel(op)
	}
}

func benchKernel(op string) benchOp {
	return func(ctx context.Context, o *benchOpts) ([]Measurement, error) {
		dtypes := []string{"float32", "float16"}
		if o.set["dtype"] {
			dtypes = []string{o.dtype}
		}
		if op == "peak" {
			dtypes = dtypes[:1]
		}
		nq, nb, k := o.nq, o.nb, o.k
		if op == "prefixmax" && !o.set["nb"] {
			nb = 20000 // nb² work: the size of a large cluster, not a base set
		}
		var out []Measurement
		for _, dt := range dtypes {
			short := map[string]string{"float32": "f32", "float16": "f16"}[dt]
			var r kernels.BenchResult
			var err error
			if o.gpu != nil {
				if op == "peak" {
					continue // the CPU's FMA peak says nothing about the GPU
				}
				r, err = kernels.BenchOn(o.gpu, 0, op, short, nq, nb, o.dim, k, o.threads)
			} else {
				r, err = kernels.Bench(op, short, nq, nb, o.dim, k, o.threads)
			}
			if err != nil {
				return nil, err
			}
			m := Measurement{Op: op, Impl: "hpcrun", Seconds: r.Seconds, GFLOPS: r.GFLOPS,
				Note: fmt.Sprintf("%.0f%% of %.0f GFLOP/s peak, %d threads", r.PctPeak, r.PeakGFLOPS, r.Threads)}
			if o.gpu != nil {
				m.Impl = "hpcrun-cuda"
				m.Note = fmt.Sprintf("%s, from host memory (conversion, copies, selection included)", r.Backend)
			}
			if op != "peak" {
				m.DType, m.NQ, m.NB, m.Dim, m.K = dt, r.NQ, r.NB, r.Dim, r.K
			} else {
				m.Note = fmt.Sprintf("FMA loop, %d threads", r.Threads)
			}
			out = append(out, m)
		}
		return out, nil
	}
}
