//go:build !noasm

package kernels

import "unsafe"

// argmax32AVX512 keeps per lane (32 lanes, j%32) the first maximum of
// row[j]+bias[j] (bias may be nil) for j < n, n a positive multiple of 32:
//
//	for l := 0; l < 32; l++ {
//		vals[l], idxs[l] = row[l]+bias[l], l
//		for j := l + 32; j < n; j += 32 { if v := row[j]+bias[j]; v > vals[l] { vals[l], idxs[l] = v, j } }
//	}
//
//go:noescape
func argmax32AVX512(row, bias *float32, n int, vals *[32]float32, idxs *[32]int32)

// filterGTAVX512 is filterGTGo for n a positive multiple of 16.
//
//go:noescape
func filterGTAVX512(row *float32, n int, thr float32, out *int32) int

// addFixedAVX512 is addFixedGo for n a positive multiple of 8.
//
//go:noescape
func addFixedAVX512(sum *int64, x *float32, n int)

func rowArgmax(row, bias []float32) (float32, int) {
	n := len(row) &^ 31
	if !cpuFeat.avx512 || n == 0 {
		return rowArgmaxGo(row, bias)
	}
	var vals [32]float32
	var idxs [32]int32
	var bp *float32
	if bias != nil {
		bias = bias[:len(row)]
		bp = unsafe.SliceData(bias)
	}
	argmax32AVX512(unsafe.SliceData(row), bp, n, &vals, &idxs)
	best, arg := vals[0], int(idxs[0])
	for l := 1; l < 32; l++ {
		if v, j := vals[l], int(idxs[l]); v > best || (v == best && j < arg) {
			best, arg = v, j
		}
	}
	for j := n; j < len(row); j++ {
		v := row[j]
		if bias != nil {
			v += bias[j]
		}
		if v > best {
			best, arg = v, j
		}
	}
	return best, arg
}

func filterGT(row []float32, thr float32, out []int32) int {
	n := len(row) &^ 15
	if !cpuFeat.avx512 || n == 0 {
		return filterGTGo(row, thr, out)
	}
	out = out[:len(row)]
	m := filterGTAVX512(unsafe.SliceData(row), n, thr, unsafe.SliceData(out))
	for j := n; j < len(row); j++ {
		if row[j] > thr {
			out[m] = int32(j)
			m++
		}
	}
	return m
}

func addFixed(sum []int64, x []float32) {
	n := len(x) &^ 7
	if !cpuFeat.avx512 || n == 0 {
		addFixedGo(sum, x)
		return
	}
	sum = sum[:len(x)]
	addFixedAVX512(unsafe.SliceData(sum), unsafe.SliceData(x), n)
	addFixedGo(sum[n:], x[n:])
}
