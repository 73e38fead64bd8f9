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

// peakFMA runs n iterations of 24 independent zmm FMAs (768 flops each).
//
//go:noescape
func peakFMA(n int)

const haveAsmKernel = true

// microKernel runs the best available micro-kernel version.
func microKernel(kc int, a, b, c []float32, ldc int, accum bool) {
	if !cpuFeat.avx512 || kc == 0 {
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
	kern14x32(kc, unsafe.SliceData(a), unsafe.SliceData(b), unsafe.SliceData(c), ldc, acc)
}

func peakLoop(n int) (flops float64, ok bool) {
	if !cpuFeat.avx512 {
		return 0, false
	}
	peakFMA(n)
	return float64(n) * 24 * 32, true
}
