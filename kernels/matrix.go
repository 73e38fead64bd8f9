package kernels

import (
	"errors"
	"fmt"
)

// Matrix is a row-major set of vectors: row i is Data[i*Dim : (i+1)*Dim].
// Exactly one of F32 and F16 holds the data (either may be nil when
// Rows*Dim == 0). F16 holds IEEE 754 binary16 bit patterns; they are
// converted to float32 per tile, and all arithmetic is float32.
type Matrix struct {
	Rows, Dim int
	F32       []float32
	F16       []uint16
}

// F32Matrix wraps float32 row-major data of shape rows x dim.
func F32Matrix(data []float32, rows, dim int) Matrix {
	return Matrix{Rows: rows, Dim: dim, F32: data}
}

// F16Matrix wraps IEEE half-precision row-major data of shape rows x dim.
func F16Matrix(data []uint16, rows, dim int) Matrix {
	return Matrix{Rows: rows, Dim: dim, F16: data}
}

// IsF16 reports whether m holds float16 data.
func (m Matrix) IsF16() bool { return m.F16 != nil }

// ErrNonFinite is returned (wrapped) when an input holds NaN or ±Inf.
var ErrNonFinite = errors.New("kernels: non-finite value (NaN or Inf) in input")

// Check validates m's shape against its data (the rules every backend
// applies; name says which operand in the error).
func (m Matrix) Check(name string) error { return m.check(name) }

func (m Matrix) check(name string) error {
	if m.Rows < 0 || m.Dim < 0 {
		return fmt.Errorf("kernels: %s: negative shape %dx%d", name, m.Rows, m.Dim)
	}
	if m.F32 != nil && m.F16 != nil {
		return fmt.Errorf("kernels: %s: both F32 and F16 set", name)
	}
	n := m.Rows * m.Dim
	if m.Dim != 0 && n/m.Dim != m.Rows {
		return fmt.Errorf("kernels: %s: shape %dx%d overflows", name, m.Rows, m.Dim)
	}
	have := len(m.F32)
	if m.F16 != nil {
		have = len(m.F16)
	}
	if have < n {
		return fmt.Errorf("kernels: %s: %d values for shape %dx%d", name, have, m.Rows, m.Dim)
	}
	if m.Rows >= 1<<31-1 {
		return fmt.Errorf("kernels: %s: %d rows exceeds int32 indices", name, m.Rows)
	}
	return nil
}

// row returns row i as float32: either a view of F32 or a conversion into
// scratch (len >= Dim).
func (m Matrix) row(i int, scratch []float32) []float32 {
	d := m.Dim
	if m.F16 == nil {
		return m.F32[i*d : i*d+d : i*d+d]
	}
	F16ToF32(scratch[:d], m.F16[i*d:i*d+d])
	return scratch[:d]
}

// checkFinite returns ErrNonFinite if any value of m is NaN or ±Inf.
// The fast paths check while packing; this is for small side inputs.
func checkFiniteF32(name string, x []float32) error {
	var z float32
	for _, v := range x {
		z += v * 0
	}
	if z != 0 {
		return fmt.Errorf("%w: %s", ErrNonFinite, name)
	}
	return nil
}

func checkDims(a, b Matrix, an, bn string) error {
	if err := a.check(an); err != nil {
		return err
	}
	if err := b.check(bn); err != nil {
		return err
	}
	if a.Dim != b.Dim {
		return fmt.Errorf("kernels: %s has dim %d, %s has dim %d", an, a.Dim, bn, b.Dim)
	}
	return nil
}
