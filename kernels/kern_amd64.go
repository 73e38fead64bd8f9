//go:build !noasm

package kernels

import "unsafe"

// kern14x32bcst is kern2; kern14x32 is kern3 (see kern.go). Both compute
// exactly kernGeneric's loop on pointers to packed panels; c has row stride
// ldc floats; accum != 0 continues the FMA chains from the values in c.
//
//go:noescape
func kern14x32bcst(kc int, a, b, c *float32, ldc int, accum int)

//go:noescape
func kern14x32(kc int, a, b, c *float32, ldc int, accum int)

// kern6x16avx2 and kern2x32avx2 are the AVX2+FMA sub-block kernels of
// kern5 (kern14x32AVX2): 6 rows x 16 columns and 2 rows x 32 columns of the
// 14x32 block (12 and 8 ymm accumulators: enough independent FMA chains to
// keep both FMA ports busy); a points at the block's first row in the A
// panel, b at its first column in the B panel, c at the sub-block.
//
//go:noescape
func kern6x16avx2(kc int, a, b, c *float32, ldc int, accum int)

//go:noescape
func kern2x32avx2(kc int, a, b, c *float32, ldc int, accum int)

// kern14x32AVX2 is kern5: the 14x32 block as five AVX2 sub-blocks (rows
// 0-5 and 6-11 x columns 0-15 and 16-31, rows 12-13 x all 32), each element
// the same FMA chain as kern3's, so results are bit-identical on CPUs
// without AVX-512.
func kern14x32AVX2(kc int, a, b, c []float32, ldc int, accum int) {
	for c0 := 0; c0 < nr; c0 += 16 {
		kern6x16avx2(kc, &a[0], &b[c0], &c[c0], ldc, accum)
		kern6x16avx2(kc, &a[6], &b[c0], &c[6*ldc+c0], ldc, accum)
	}
	kern2x32avx2(kc, &a[12], &b[0], &c[12*ldc], ldc, accum)
}

// peakFMA runs n iterations of 24 independent zmm FMAs (768 flops each).
//
//go:noescape
func peakFMA(n int)

const haveAsmKernel = true

// microKernel runs the best available micro-kernel version.
func microKernel(kc int, a, b, c []float32, ldc int, accum bool) {
	if !(cpuFeat.avx512 || cpuFeat.avx2 && cpuFeat.fma) || kc == 0 {
		kernGeneric(kc, a, b, c, ldc, accum)
		return
	}
	_ = a[kc*mr-1]
	_ = b[kc*nr-1]
	_ = c[(mr-1)*ldc+nr-1]
	acc := 0
	if accum {
		acc = 1
	}
	if !cpuFeat.avx512 {
		kern14x32AVX2(kc, a, b, c, ldc, acc)
		return
	}
	kern14x32(kc, unsafe.SliceData(a), unsafe.SliceData(b), unsafe.SliceData(c), ldc, acc)
}

// peakFMAavx2 runs n iterations of 12 independent ymm FMAs (192 flops each).
//
//go:noescape
func peakFMAavx2(n int)

func peakLoop(n int) (flops float64, ok bool) {
	switch {
	case cpuFeat.avx512:
		peakFMA(n)
		return float64(n) * 24 * 32, true
	case cpuFeat.avx2 && cpuFeat.fma:
		peakFMAavx2(n)
		return float64(n) * 12 * 16, true
	}
	return 0, false
}
