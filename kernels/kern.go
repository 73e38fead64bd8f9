package kernels

// Micro-kernel versions (C[14x32] (+)= A-panel(14 x kc) * B-panel(kc x 32),
// both panels packed k-major, see pack.go):
//
//	kern1  kernGeneric     plain Go, any CPU (kern_generic path, -tags noasm, arm64): FMA chains
//	                       through madd32 (arm64 fuses a*b + c itself; elsewhere fma32 in software)
//	kern2  kern14x32bcst   AVX-512, 28 zmm accumulators, FMA with {1to16} memory broadcast
//	kern3  kern14x32       AVX-512, 28 zmm accumulators, VBROADCASTSS + register FMA (default)
//	kern4  amxTile         AMX-BF16 approximate tile for engine 2's filter (amx.go); not exact,
//	                       every entry it lets through is recomputed by kern3's FMA chain
//	kern5  kern14x32AVX2   AVX2+FMA (CPUs without AVX-512, or HPCRUN_NO_AVX512=1): the block as
//	                       four 6x16 and one 2x32 sub-blocks of ymm accumulators, kern3's FMA chains
//
// All versions compute every C element as one float32 FMA chain over k in
// increasing order (starting from 0, or from C when accum is set), so results
// do not depend on tile position, thread count or how the k range is blocked.

const (
	mr = 14 // rows of the A panel (query side) per micro-kernel
	nr = 32 // columns of the B panel (base side) per micro-kernel
)

// kernGeneric is kern1. Equivalent loop:
//
//	for i := 0; i < mr; i++ {
//		for j := 0; j < nr; j++ {
//			s := 0 (or c[i*ldc+j] if accum)
//			for p := 0; p < kc; p++ { s = fma32(a[p*mr+i], b[p*nr+j], s) }
//			c[i*ldc+j] = s
//		}
//	}
func kernGeneric(kc int, a, b, c []float32, ldc int, accum bool) {
	var acc [mr][nr]float32
	if accum {
		for i := 0; i < mr; i++ {
			copy(acc[i][:], c[i*ldc:i*ldc+nr])
		}
	}
	a = a[:kc*mr]
	b = b[:kc*nr]
	for p := 0; p < kc; p++ {
		ap := a[p*mr : p*mr+mr]
		bp := (*[nr]float32)(b[p*nr : p*nr+nr])
		for i := 0; i < mr; i++ {
			ai := ap[i]
			r := &acc[i]
			for j := 0; j < nr; j++ {
				r[j] = madd32(ai, bp[j], r[j])
			}
		}
	}
	for i := 0; i < mr; i++ {
		copy(c[i*ldc:i*ldc+nr], acc[i][:])
	}
}
