package kernels

import "math"

func nan32() float32 { return float32(math.NaN()) }

func abs64(x float64) float64 { return math.Abs(x) }

// FMA32 returns a·b + c rounded once to float32, as the FMA instructions of
// the CPU kernels and fma.rn.f32 on a GPU compute it: the exact value's
// reference for other backends (kernels/cuda's emulator).
func FMA32(a, b, c float32) float32 { return fma32(a, b, c) }
