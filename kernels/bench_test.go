package kernels

import (
	"fmt"
	"testing"
)

// Benchmarks of the five ops (GFLOP/s via b.ReportMetric). Sizes are kept
// small enough for a quick run on 2 cores; scripts/bench_faiss.py runs the
// full-size comparison against FAISS.
func benchOp(b *testing.B, op, dtype string, nq, nb, d, k int) {
	b.Helper()
	r, err := Bench(op, dtype, nq, nb, d, k, 0)
	if err != nil {
		b.Fatal(err)
	}
	_ = r
	// Bench already repeats and keeps the best; run b.N more for the harness.
	var gf float64
	for i := 0; i < b.N; i++ {
		r, err = Bench(op, dtype, nq, nb, d, k, 0)
		if err != nil {
			b.Fatal(err)
		}
		gf = max(gf, r.GFLOPS)
	}
	b.ReportMetric(gf, "GFLOP/s")
	if r.PeakGFLOPS > 0 {
		b.ReportMetric(100*gf/r.PeakGFLOPS, "%peak")
	}
}

func BenchmarkTopK(b *testing.B) {
	for _, dt := range []string{"f32", "f16"} {
		for _, k := range []int{1, 100, 20000} {
			b.Run(fmt.Sprintf("nq=4096,nb=65536,d=512,k=%d,%s", k, dt), func(b *testing.B) { benchOp(b, "topk", dt, 4096, 65536, 512, k) })
		}
	}
}

func BenchmarkMaxArg(b *testing.B) {
	for _, dt := range []string{"f32", "f16"} {
		b.Run("nq=4096,nb=65536,d=512,"+dt, func(b *testing.B) { benchOp(b, "maxarg", dt, 4096, 65536, 512, 0) })
	}
}

func BenchmarkShiftedMax(b *testing.B) {
	for _, dt := range []string{"f32", "f16"} {
		b.Run("nq=4096,nb=65536,d=512,"+dt, func(b *testing.B) { benchOp(b, "shiftedmax", dt, 4096, 65536, 512, 0) })
	}
}

func BenchmarkNearestCentroid(b *testing.B) {
	for _, dt := range []string{"f32", "f16"} {
		b.Run("n=100000,k=1000,d=512,"+dt, func(b *testing.B) { benchOp(b, "centroid", dt, 0, 100000, 512, 1000) })
	}
}

func BenchmarkPrefixMax(b *testing.B) {
	for _, dt := range []string{"f32", "f16"} {
		b.Run("n=32768,d=512,"+dt, func(b *testing.B) { benchOp(b, "prefixmax", dt, 0, 32768, 512, 0) })
	}
}
