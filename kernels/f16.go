package kernels

import "math"

// F16ToF32 converts IEEE binary16 bit patterns to float32 (exact):
//
//	for i := range src { dst[i] = f16ToF32(src[i]) }
//
// dst must be at least as long as src. Uses F16C (VCVTPH2PS) on amd64.
func F16ToF32(dst []float32, src []uint16) {
	dst = dst[:len(src)]
	n := f16ToF32Asm(dst, src)
	for i := n; i < len(src); i++ {
		dst[i] = f16ToF32(src[i])
	}
}

// F32ToF16 converts float32 to IEEE binary16 bit patterns, rounding to
// nearest even; overflow gives ±Inf, NaN stays NaN:
//
//	for i := range src { dst[i] = f32ToF16(src[i]) }
//
// dst must be at least as long as src. Uses F16C (VCVTPS2PH) on amd64.
func F32ToF16(dst []uint16, src []float32) {
	dst = dst[:len(src)]
	n := f32ToF16Asm(dst, src)
	for i := n; i < len(src); i++ {
		dst[i] = f32ToF16(src[i])
	}
}

// F16Bits returns the binary16 bit pattern nearest to f (ties to even).
func F16Bits(f float32) uint16 { return f32ToF16(f) }

// F16Value returns the float32 value of the binary16 bit pattern h.
func F16Value(h uint16) float32 { return f16ToF32(h) }

func f16ToF32(h uint16) float32 {
	sign := uint32(h>>15) << 31
	exp := uint32(h>>10) & 0x1f
	man := uint32(h) & 0x3ff
	switch {
	case exp == 0x1f: // Inf / NaN
		return math.Float32frombits(sign | 0x7f800000 | man<<13)
	case exp != 0:
		return math.Float32frombits(sign | (exp+112)<<23 | man<<13)
	case man == 0:
		return math.Float32frombits(sign)
	}
	// subnormal: man * 2^-24
	f := float32(man) * (1.0 / (1 << 24))
	return math.Float32frombits(sign | math.Float32bits(f))
}

func f32ToF16(f float32) uint16 {
	b := math.Float32bits(f)
	sign := uint16(b>>16) & 0x8000
	exp := int32(b>>23) & 0xff
	man := b & 0x7fffff
	if exp == 0xff {
		if man != 0 { // NaN: quiet, keep top payload bits
			return sign | 0x7e00 | uint16(man>>13)
		}
		return sign | 0x7c00
	}
	e := exp - 127 + 15
	if e >= 0x1f {
		return sign | 0x7c00
	}
	if e <= 0 {
		if e < -10 {
			return sign // rounds to zero
		}
		// subnormal half: shift the full 24-bit significand
		m := man | 0x800000
		shift := uint32(14 - e)
		h := m >> shift
		rem := m & (1<<shift - 1)
		half := uint32(1) << (shift - 1)
		if rem > half || (rem == half && h&1 == 1) {
			h++
		}
		return sign | uint16(h)
	}
	h := uint32(e)<<10 | man>>13
	rem := man & 0x1fff
	if rem > 0x1000 || (rem == 0x1000 && h&1 == 1) {
		h++ // may carry into the exponent, giving Inf correctly
	}
	return sign | uint16(h)
}
