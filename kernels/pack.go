package kernels

import "fmt"

// packRowsGo packs rows [r0, r1) of m into micro-panels of width w (mr for the
// A side, nr for the B side): panel p holds rows r0+p*w .. r0+p*w+w-1 stored
// k-major, dst[p*w*d + k*w + i] = sign * m[r0+p*w+i][k]; rows past r1 are
// zero. It returns ErrNonFinite if a packed value is NaN or ±Inf.
// scratch must hold d floats (used for float16 conversion).
func packRowsGo(dst []float32, m Matrix, r0, r1, w int, neg bool, scratch []float32) error {
	d := m.Dim
	np := (r1 - r0 + w - 1) / w
	dst = dst[:np*w*d]
	var z float32
	for p := 0; p < np; p++ {
		panel := dst[p*w*d : (p+1)*w*d]
		for i := 0; i < w; i++ {
			r := r0 + p*w + i
			if r >= r1 {
				for k := 0; k < d; k++ {
					panel[k*w+i] = 0
				}
				continue
			}
			row := m.row(r, scratch)
			if neg {
				for k, v := range row {
					z += v * 0
					panel[k*w+i] = -v
				}
			} else {
				for k, v := range row {
					z += v * 0
					panel[k*w+i] = v
				}
			}
		}
	}
	if z != 0 {
		return fmt.Errorf("%w (rows %d..%d)", ErrNonFinite, r0, r1-1)
	}
	return nil
}
