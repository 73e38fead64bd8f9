//go:build !noasm

package kernels

import "unsafe"

// f16ToF32F16C converts n (a multiple of 8) halves with VCVTPH2PS.
//
//go:noescape
func f16ToF32F16C(dst *float32, src *uint16, n int)

// f32ToF16F16C converts n (a multiple of 8) floats with VCVTPS2PH (RNE).
//
//go:noescape
func f32ToF16F16C(dst *uint16, src *float32, n int)

func f16ToF32Asm(dst []float32, src []uint16) int {
	n := len(src) &^ 7
	if !cpuFeat.f16c || n == 0 {
		return 0
	}
	f16ToF32F16C(unsafe.SliceData(dst), unsafe.SliceData(src), n)
	return n
}

func f32ToF16Asm(dst []uint16, src []float32) int {
	n := len(src) &^ 7
	if !cpuFeat.f16c || n == 0 {
		return 0
	}
	f32ToF16F16C(unsafe.SliceData(dst), unsafe.SliceData(src), n)
	return n
}
