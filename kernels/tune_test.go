package kernels

import (
	"fmt"
	"testing"
)

// BenchmarkTuneTopK sweeps the block tunables on a mid-size TopK and
// reports GFLOP per CPU-second x threads (robust to other load).
func BenchmarkTuneTopK(b *testing.B) {
	q := RandomUnit(1, 4096, 512, false, 2)
	x := RandomUnit(2, 131072, 512, false, 2)
	e := NewCPU(2)
	for _, mc := range []int{8 * mr, 24 * mr} {
		for _, nc := range []int{8 * nr, 16 * nr} {
			b.Run(fmt.Sprintf("mc=%d,nc=%d", mc, nc), func(b *testing.B) {
				m0, n0, bp := mcBlock, ncBlock, bPackBytes
				mcBlock, ncBlock, bPackBytes = mc, nc, 0
				defer func() { mcBlock, ncBlock, bPackBytes = m0, n0, bp }()
				c0 := ProcessCPUSeconds()
				for i := 0; i < b.N; i++ {
					if _, err := e.TopK(q, x, TopKOptions{K: 100}); err != nil {
						b.Fatal(err)
					}
				}
				cpu := ProcessCPUSeconds() - c0
				fl := float64(b.N) * 2 * 4096 * 131072 * 512
				b.ReportMetric(fl/cpu/1e9*2, "GFLOP/s@2cores")
				b.ReportMetric(fl/b.Elapsed().Seconds()/1e9, "GFLOP/s")
			})
		}
	}
}
