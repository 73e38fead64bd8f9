//go:build !arm64

package kernels

// madd32 is a·b + c rounded once to float32, as the FMA kernels compute it:
// this compiler leaves a float32 a*b + c unfused, so kern1 calls fma32.
func madd32(a, b, c float32) float32 { return fma32(a, b, c) }
