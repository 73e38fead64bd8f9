//go:build !noasm

package kernels

import "unsafe"

// Assembly of the AMX filter (amx_amd64.s). The slice wrappers below are
// what amx.go calls; their plain-Go twins (amxTileGo, bf16RowGo, ...) in
// amx.go define what each computes.

//go:noescape
func amxTile(cfg *[64]byte, a *uint16, b *uint16, c *float32, ldc int, mb, np, ks int)

//go:noescape
func bf16Row(dst *uint16, src *float32, n, npad int, neg int, sums *[48]float32, cstride int)

//go:noescape
func vnniPack(dst, src *uint16, ld int, np, ks int)

//go:noescape
func dotGather(a *float32, offa *int32, sa int, b *float32, offb *int32, sb int, n, d int, out *float32)

//go:noescape
func dotGather1(a *float32, sa int, b *float32, offb *int32, sb int, n, d int, out *float32, pf *int32)

//go:noescape
func dotT(a *float32, offa *int32, b *float32, offb *int32, n, d int, out *float32, scratch *float32)

//go:noescape
func dotT1(a *float32, b *float32, offb *int32, n, d int, out *float32, pf *int32, scratch *float32)

//go:noescape
func filterTile(c *float32, ldc, rows, n int, bias, thr *float32, out *int32, max int) int

//go:noescape
func maxTile(c *float32, ldc, rows, n int, bias *float32, out *float32)

// amxTileS is amxTileGo on the AMX unit (a: mb·ks tiled 2 KiB blocks, b:
// np·ks 2 KiB blocks, c: 32·mb rows of ldc floats).
func amxTileS(a []uint16, b []uint16, c []float32, ldc int, mb, np, ks int) {
	if !cpuFeat.amx || !amxGranted() {
		amxTileGo(a, b, c, ldc, mb, np, ks)
		return
	}
	_ = a[mb*ks*1024-1]
	_ = b[np*ks*1024-1]
	_ = c[(32*mb-1)*ldc+32*np-1]
	amxTile(&amxCfg, unsafe.SliceData(a), unsafe.SliceData(b), unsafe.SliceData(c), 4*ldc, mb, np, ks)
}

// bf16RowS: npad values (a multiple of 32) in 32-value chunks cstride
// values apart, starting at dst[0].
func bf16RowS(dst []uint16, src []float32, npad, cstride int, neg bool, sums *[48]float32) {
	if !cpuFeat.avx512 || npad%32 != 0 || npad < len(src) {
		bf16RowGo(dst, src, npad, cstride, neg, sums)
		return
	}
	if npad > 0 {
		_ = dst[(npad/32-1)*cstride+31]
	}
	ng := 0
	if neg {
		ng = 1
	}
	bf16Row(unsafe.SliceData(dst), unsafe.SliceData(src), len(src), npad, ng, sums, 2*cstride)
}

func vnniPackS(dst, src []uint16, ld, np, ks int) {
	if !cpuFeat.avx512 {
		vnniPackGo(dst, src, ld, np, ks)
		return
	}
	_ = dst[np*ks*1024-1]
	_ = src[(32*np-1)*ld+32*ks-1]
	vnniPack(unsafe.SliceData(dst), unsafe.SliceData(src), 2*ld, np, ks)
}

// dotGatherS: offa/offb hold n entries, n a multiple of 16 (callers pad).
func dotGatherS(a []float32, offa []int32, sa int, b []float32, offb []int32, sb int, d int, out []float32) {
	n := len(offa)
	if !cpuFeat.avx512 || n%16 != 0 {
		dotGatherGo(a, offa, sa, b, offb, sb, d, out)
		return
	}
	if n == 0 {
		return
	}
	_ = out[n-1]
	_ = offb[n-1]
	dotGather(unsafe.SliceData(a), unsafe.SliceData(offa), sa, unsafe.SliceData(b), unsafe.SliceData(offb), sb, n, d, unsafe.SliceData(out))
}

// dotGather1S: offb holds n entries, n a multiple of 16 (callers pad);
// pf (nil or 16 offsets into b, sb = 1) names rows to prefetch.
func dotGather1S(a []float32, sa int, b []float32, offb []int32, sb int, d int, out []float32, pf []int32) {
	n := len(offb)
	if !cpuFeat.avx512 || n%16 != 0 {
		dotGather1Go(a, sa, b, offb, sb, d, out)
		return
	}
	if n == 0 {
		return
	}
	_ = out[n-1]
	if d > 0 {
		_ = a[(d-1)*sa]
	}
	var pp *int32
	if pf != nil && sb == 1 {
		_ = pf[15]
		pp = unsafe.SliceData(pf)
	}
	dotGather1(unsafe.SliceData(a), sa, unsafe.SliceData(b), unsafe.SliceData(offb), sb, n, d, unsafe.SliceData(out), pp)
}

// dotTS is dotGatherS for row-major operands (sa = sb = 1) by in-register
// transposes (refine3). offa/offb hold a multiple of 16 entries; scratch
// holds 272 floats.
func dotTS(a []float32, offa []int32, b []float32, offb []int32, d int, out, scratch []float32) {
	n := len(offa)
	if !cpuFeat.avx512 || n%16 != 0 {
		dotGatherGo(a, offa, 1, b, offb, 1, d, out)
		return
	}
	if n == 0 {
		return
	}
	_ = out[n-1]
	_ = offb[n-1]
	_ = scratch[271]
	dotT(unsafe.SliceData(a), unsafe.SliceData(offa), unsafe.SliceData(b), unsafe.SliceData(offb), n, d, unsafe.SliceData(out), unsafe.SliceData(scratch))
}

// dotT1S is dotGather1S for a row-major A row and row-major B rows
// (refine4); scratch holds 16 floats.
func dotT1S(a []float32, b []float32, offb []int32, d int, out []float32, pf []int32, scratch []float32) {
	n := len(offb)
	if !cpuFeat.avx512 || n%16 != 0 {
		dotGather1Go(a, 1, b, offb, 1, d, out)
		return
	}
	if n == 0 {
		return
	}
	_ = out[n-1]
	_ = scratch[15]
	if d > 0 {
		_ = a[d-1]
	}
	var pp *int32
	if pf != nil {
		_ = pf[15]
		pp = unsafe.SliceData(pf)
	}
	dotT1(unsafe.SliceData(a), unsafe.SliceData(b), unsafe.SliceData(offb), n, d, unsafe.SliceData(out), pp, unsafe.SliceData(scratch))
}

// filterTileS: c rows and bias are read up to the next multiple of 16
// columns; out must hold max+16 entries.
func filterTileS(c []float32, ldc, rows, n int, bias, thr []float32, out []int32, max int) int {
	if !cpuFeat.avx512 || rows == 0 || n == 0 {
		return filterTileGo(c, ldc, rows, n, bias, thr, out, max)
	}
	n16 := (n + 15) &^ 15
	_ = c[(rows-1)*ldc+n16-1]
	_ = thr[rows-1]
	_ = out[max+15]
	var bp *float32
	if bias != nil {
		_ = bias[n16-1]
		bp = unsafe.SliceData(bias)
	}
	return filterTile(unsafe.SliceData(c), ldc, rows, n, bp, unsafe.SliceData(thr), unsafe.SliceData(out), max)
}

func maxTileS(c []float32, ldc, rows, n int, bias []float32, out []float32) {
	if !cpuFeat.avx512 || rows == 0 || n == 0 {
		maxTileGo(c, ldc, rows, n, bias, out)
		return
	}
	n16 := (n + 15) &^ 15
	_ = c[(rows-1)*ldc+n16-1]
	_ = out[rows-1]
	var bp *float32
	if bias != nil {
		_ = bias[n16-1]
		bp = unsafe.SliceData(bias)
	}
	maxTile(unsafe.SliceData(c), ldc, rows, n, bp, unsafe.SliceData(out))
}
