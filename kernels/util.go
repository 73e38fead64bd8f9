package kernels

import "math"

func nan32() float32 { return float32(math.NaN()) }

func abs64(x float64) float64 { return math.Abs(x) }
