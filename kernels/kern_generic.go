//go:build noasm || !amd64

package kernels

const haveAsmKernel = false

func microKernel(kc int, a, b, c []float32, ldc int, accum bool) {
	kernGeneric(kc, a, b, c, ldc, accum)
}

func peakLoop(n int) (flops float64, ok bool) { return 0, false }

// kern14x32AVX2 (kern5) exists only in assembly; here it is kern1.
func kern14x32AVX2(kc int, a, b, c []float32, ldc int, accum int) {
	kernGeneric(kc, a, b, c, ldc, accum != 0)
}
