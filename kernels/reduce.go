package kernels

import "math"

// Row reductions used by the epilogues. Each has a plain-Go version (the
// reference for its assembly twin in reduce_amd64.s).

// rowArgmaxGo returns max_j (row[j] + bias[j]) and the smallest j reaching it
// (bias nil means 0). row must be non-empty.
//
//	best, arg := -Inf, -1
//	for j := range row { if v := row[j]+bias[j]; v > best || arg < 0 { best, arg = v, j } }
func rowArgmaxGo(row, bias []float32) (float32, int) {
	best, arg := row[0], 0
	if bias != nil {
		bias = bias[:len(row)]
		best += bias[0]
		for j := 1; j < len(row); j++ {
			if v := row[j] + bias[j]; v > best {
				best, arg = v, j
			}
		}
		return best, arg
	}
	for j := 1; j < len(row); j++ {
		if v := row[j]; v > best {
			best, arg = v, j
		}
	}
	return best, arg
}

// filterGTGo stores in out the indices j with row[j] > thr, in increasing
// order, and returns their count. out must hold len(row) entries.
//
//	n := 0
//	for j, v := range row { if v > thr { out[n] = int32(j); n++ } }
func filterGTGo(row []float32, thr float32, out []int32) int {
	n := 0
	out = out[:len(row)]
	for j, v := range row {
		if v > thr {
			out[n] = int32(j)
			n++
		}
	}
	return n
}

// FixedShift is the binary scale of the fixed-point centroid sums:
// Accum.Sums hold round-to-nearest-even(x * 2^FixedShift) as int64. Every
// float16 value is exactly representable (its lowest bit is 2^-24), so sums
// of float16 inputs are exact; float32 inputs are rounded to 2^-32 before
// summing. Integer sums are associative, so partial sums from any split of
// the points (threads, chunks, ranks) add up to bit-identical totals.
// Overflow-free while the sum of |x| per coordinate stays below 2^31 (e.g.
// up to 2^31 unit vectors per cluster); each |x| must be below 2^31.
const FixedShift = 32

// ToFixed converts v to the fixed-point representation of the sums.
func ToFixed(v float32) int64 {
	return int64(math.RoundToEven(float64(v) * (1 << FixedShift)))
}

// FromFixed converts a fixed-point value back to float64.
func FromFixed(s int64) float64 { return float64(s) / (1 << FixedShift) }

// addFixedGo adds x in fixed point to sum:
//
//	for k := range x { sum[k] += ToFixed(x[k]) }
func addFixedGo(sum []int64, x []float32) {
	sum = sum[:len(x)]
	for k, v := range x {
		sum[k] += ToFixed(v)
	}
}
