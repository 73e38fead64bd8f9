//go:build !noasm

package kernels

import (
	"fmt"
	"unsafe"
)

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

// packPanelAVX512 packs one w-wide micro-panel (w = 14 or 32), see
// packRowsGo; gm0/gm1 select the present rows 0-15 / 16-31. It returns
// non-zero if a packed value is NaN or ±Inf.
//
//go:noescape
func packPanelAVX512(dst, src *float32, lda, d int, gm0, gm1 int, w int, neg int) (bad int)

func packRows(dst []float32, m Matrix, r0, r1, w int, neg bool, scratch []float32) error {
	d := m.Dim
	if !cpuFeat.avx512 || d == 0 || d*w >= 1<<31 {
		return packRowsGo(dst, m, r0, r1, w, neg, scratch)
	}
	np := (r1 - r0 + w - 1) / w
	dst = dst[:np*w*d]
	ng := 0
	if neg {
		ng = 1
	}
	bad := 0
	for p := 0; p < np; p++ {
		rs := r0 + p*w
		rows := min(w, r1-rs)
		var src []float32
		if m.F16 != nil {
			src = scratch[:rows*d]
			F16ToF32(src, m.F16[rs*d:(rs+rows)*d])
		} else {
			src = m.F32[rs*d : (rs+rows)*d]
		}
		gm0 := 1<<min(rows, 16) - 1
		gm1 := 1<<max(rows-16, 0) - 1
		bad |= packPanelAVX512(unsafe.SliceData(dst[p*w*d:]), unsafe.SliceData(src), d, d, gm0, gm1, w, ng)
	}
	if bad != 0 {
		return fmt.Errorf("%w (rows %d..%d)", ErrNonFinite, r0, r1-1)
	}
	return nil
}
