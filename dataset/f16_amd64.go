//go:build amd64 && !noasm

package dataset

import "golang.org/x/sys/cpu"

var useAVX512 = cpu.X86.HasAVX512F

//go:noescape
func sumSqF16AVX512(x *uint16, n int) float32

//go:noescape
func f16ToF32AVX512(dst *float32, src *uint16, n int)

// sumSqF16 is the sum of squares of the float16 values in x, in float32.
// Equivalent to: for _, h := range x { v := HalfToFloat(h); s += v * v }
// (the summation order differs).
func sumSqF16(x []uint16) float32 {
	n := len(x) &^ 15
	if !useAVX512 || n == 0 {
		return sumSqF16Go(x)
	}
	s := sumSqF16AVX512(&x[0], n)
	if n < len(x) {
		s += sumSqF16Go(x[n:])
	}
	return s
}

// F16ToF32 widens src into dst (len(dst) >= len(src)).
// Equivalent to: for i, h := range src { dst[i] = HalfToFloat(h) }.
func F16ToF32(dst []float32, src []uint16) {
	dst = dst[:len(src)]
	n := len(src) &^ 15
	if useAVX512 && n > 0 {
		f16ToF32AVX512(&dst[0], &src[0], n)
	} else {
		n = 0
	}
	f16ToF32Go(dst[n:], src[n:])
}
