//go:build !amd64 || noasm

package dataset

// sumSqF16 is the sum of squares of the float16 values in x, in float32.
func sumSqF16(x []uint16) float32 { return sumSqF16Go(x) }

// F16ToF32 widens src into dst (len(dst) >= len(src)).
// Equivalent to: for i, h := range src { dst[i] = HalfToFloat(h) }.
func F16ToF32(dst []float32, src []uint16) { f16ToF32Go(dst, src) }
