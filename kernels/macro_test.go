package kernels

import (
	"fmt"
	"math/rand/v2"
	"runtime"
	"syscall"
	"testing"
)

func threadCPU() float64 {
	var ru syscall.Rusage
	syscall.Getrusage(1 /* RUSAGE_THREAD */, &ru)
	return float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e9
}

// BenchmarkMacro times one thread's macro-kernel (mcBlock x ncBlock tile
// from packed blocks) and reports GFLOP per thread-CPU-second, which is
// robust to other processes sharing the cores.
func BenchmarkMacro(b *testing.B) {
	for _, kc := range []int{128, 256, 512} {
		for _, order := range []string{"B-outer", "A-outer"} {
			b.Run(fmt.Sprintf("kc=%d,%s", kc, order), func(b *testing.B) {
				runtime.LockOSThread()
				defer runtime.UnlockOSThread()
				const d = 512
				r := rand.New(rand.NewPCG(1, 1))
				ap := randSlice(r, mcBlock*d)
				bp := randSlice(r, ncBlock*d)
				c := make([]float32, mcBlock*ncBlock)
				mp, np := mcBlock/mr, ncBlock/nr
				c0 := threadCPU()
				for it := 0; it < b.N; it++ {
					for k0 := 0; k0 < d; k0 += kc {
						if order == "B-outer" {
							for q := 0; q < np; q++ {
								for rr := 0; rr < mp; rr++ {
									microKernel(kc, ap[rr*mr*d+k0*mr:], bp[q*nr*d+k0*nr:], c[rr*mr*ncBlock+q*nr:], ncBlock, k0 > 0)
								}
							}
						} else {
							for rr := 0; rr < mp; rr++ {
								for q := 0; q < np; q++ {
									microKernel(kc, ap[rr*mr*d+k0*mr:], bp[q*nr*d+k0*nr:], c[rr*mr*ncBlock+q*nr:], ncBlock, k0 > 0)
								}
							}
						}
					}
				}
				cpu := threadCPU() - c0
				b.ReportMetric(float64(b.N)*2*float64(mcBlock*ncBlock*d)/cpu/1e9, "GFLOP/cpu-s")
			})
		}
	}
}
