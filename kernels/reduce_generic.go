//go:build noasm || !amd64

package kernels

func rowArgmax(row, bias []float32) (float32, int)         { return rowArgmaxGo(row, bias) }
func filterGT(row []float32, thr float32, out []int32) int { return filterGTGo(row, thr, out) }
func addFixed(sum []int64, x []float32)                    { addFixedGo(sum, x) }

func packRows(dst []float32, m Matrix, r0, r1, w int, neg bool, scratch []float32) error {
	return packRowsGo(dst, m, r0, r1, w, neg, scratch)
}
