//go:build noasm || !amd64

package kernels

// Without assembly the AMX filter never runs (cpuFeat.amx stays false);
// the wrappers forward to the plain-Go twins in amx.go.

func amxTileS(a []uint16, b []uint16, c []float32, ldc int, mb, np, ks int) {
	amxTileGo(a, b, c, ldc, mb, np, ks)
}

func bf16RowS(dst []uint16, src []float32, npad, cstride int, neg bool, sums *[48]float32) {
	bf16RowGo(dst, src, npad, cstride, neg, sums)
}

func vnniPackS(dst, src []uint16, ld, np, ks int) { vnniPackGo(dst, src, ld, np, ks) }

func dotGatherS(a []float32, offa []int32, sa int, b []float32, offb []int32, sb int, d int, out []float32) {
	dotGatherGo(a, offa, sa, b, offb, sb, d, out)
}

func dotGather1S(a []float32, sa int, b []float32, offb []int32, sb int, d int, out []float32, pf []int32) {
	dotGather1Go(a, sa, b, offb, sb, d, out)
}

func dotTS(a []float32, offa []int32, b []float32, offb []int32, d int, out, scratch []float32) {
	dotGatherGo(a, offa, 1, b, offb, 1, d, out)
}

func dotT1S(a []float32, b []float32, offb []int32, d int, out []float32, pf []int32, scratch []float32) {
	dotGather1Go(a, 1, b, offb, 1, d, out)
}

func filterTileS(c []float32, ldc, rows, n int, bias, thr []float32, out []int32, max int) int {
	return filterTileGo(c, ldc, rows, n, bias, thr, out, max)
}

func maxTileS(c []float32, ldc, rows, n int, bias []float32, out []float32) {
	maxTileGo(c, ldc, rows, n, bias, out)
}

func requestAMX() bool { return false }
