package kernels

import (
	"fmt"
	"math/rand/v2"
	"runtime"
	"testing"
)

// BenchmarkAMXTile times kern4 alone on one thread (GFLOP per thread-CPU
// second): mb 32-row blocks of A against np 32-column pairs of B, d=512.
func BenchmarkAMXTile(b *testing.B) {
	if !cpuFeat.amx || !amxGranted() {
		b.Skip("no AMX")
	}
	for _, sh := range [][4]int{{1, 1, 0, 512}, {1, 1, 0, 256}, {1, 1, 0, 128}, {4, 1, 0, 128}, {1, 4, 0, 128}, {7, 16, 0, 512}, {7, 16, 0, 256}, {7, 32, 0, 512}, {7, 32, 1, 512}, {2, 32, 0, 512}} {
		mb, np, split, d := sh[0], sh[1], sh[2], sh[3]
		b.Run(fmt.Sprintf("rows=%d,cols=%d,split=%d,d=%d", 32*mb, 32*np, split, d), func(b *testing.B) {
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			ks := d / 32
			a := make([]uint16, 32*mb*d)
			bv := make([]uint16, np*ks*1024)
			for i := range a {
				a[i] = 0x3f80
			}
			for i := range bv {
				bv[i] = 0x3f80
			}
			ldc := 32 * np
			c := make([]float32, 32*mb*ldc)
			c0 := threadCPU()
			for it := 0; it < b.N; it++ {
				switch split {
				case 0:
					amxTileS(a, bv, c, ldc, mb, np, ks)
				case 1: // row blocks outer
					for q := 0; q < mb; q++ {
						amxTileS(a[q*32*d:], bv, c[q*32*ldc:], ldc, 1, np, ks)
					}
				default: // column chunks of split pairs outer
					for p := 0; p < np; p += split {
						amxTileS(a, bv[p*ks*1024:], c[p*32:], ldc, mb, split, ks)
					}
				}
			}
			cpu := threadCPU() - c0
			b.ReportMetric(float64(b.N)*2*float64(32*mb*32*np*d)/cpu/1e9, "GFLOP/cpu-s")
		})
	}
}

// BenchmarkRescore times the exact rescoring kernels per pair (ns per pair
// of thread CPU), operands row-major, d=512: A rows from 224, B rows from nb.
func BenchmarkRescore(b *testing.B) {
	const d = 512
	for _, nb := range []int{64, 1000} {
		for _, kind := range []string{"dotGather", "dotT", "dotGather1", "dotT1"} {
			b.Run(fmt.Sprintf("%s,nb=%d", kind, nb), func(b *testing.B) {
				runtime.LockOSThread()
				defer runtime.UnlockOSThread()
				r := rand.New(rand.NewPCG(1, 2))
				a := randSlice(r, 224*d)
				bb := randSlice(r, nb*d)
				const n = 1024
				offa := make([]int32, n)
				offb := make([]int32, n)
				for l := range offa {
					offa[l] = int32(r.IntN(224) * d)
					offb[l] = int32(r.IntN(nb) * d)
				}
				out := make([]float32, n)
				scratch := make([]float32, 272)
				c0 := threadCPU()
				for it := 0; it < b.N; it++ {
					switch kind {
					case "dotGather":
						dotGatherS(a, offa, 1, bb, offb, 1, d, out)
					case "dotT":
						dotTS(a, offa, bb, offb, d, out, scratch)
					case "dotGather1":
						dotGather1S(a, 1, bb, offb, 1, d, out, nil)
					case "dotT1":
						dotT1S(a, bb, offb, d, out, nil, scratch)
					}
				}
				b.ReportMetric((threadCPU()-c0)/float64(b.N*n)*1e9, "ns/pair")
			})
		}
	}
}
