package cuda

import (
	"errors"
	"fmt"
	"math"
	"reflect"
	"strings"
	"testing"

	"hpcrun/kernels"
	"hpcrun/kernels/kerneltest"
)

// rounded returns m with float32 data rounded to float16 (as the host
// would before calling the backend).
func rounded(m kernels.Matrix) kernels.Matrix {
	if m.F16 != nil {
		return m
	}
	h := make([]uint16, len(m.F32))
	kernels.F32ToF16(h, m.F32)
	return kernels.F16Matrix(h, m.Rows, m.Dim)
}

// TestPrecisionFloat16: with Precision Float16 every op on float32 (or
// mixed) inputs gives exactly what it gives on those inputs rounded to
// float16 beforehand (the tensor-core kernels, same packed bytes), on
// every tensor-core version; with Exact, float32 inputs still take the
// FFMA kernels.
func TestPrecisionFloat16(t *testing.T) {
	q := kerneltest.Gen(11, 70, 40, kerneltest.Gauss, false)
	base := kerneltest.Gen(12, 300, 40, kerneltest.Gauss, false)
	base16 := kerneltest.Gen(12, 300, 40, kerneltest.Gauss, true)
	thr := make([]float32, q.M.Rows)
	for i := range thr {
		thr[i] = 0.05 * float32(i%5)
	}
	type op struct {
		name string
		f    func(b *Backend, q, base kernels.Matrix) (any, error)
	}
	ops := []op{
		{"TopK", func(b *Backend, q, base kernels.Matrix) (any, error) {
			return b.TopK(q, base, kernels.TopKOptions{K: 17})
		}},
		{"TopK smallest", func(b *Backend, q, base kernels.Matrix) (any, error) {
			return b.TopK(q, base, kernels.TopKOptions{K: 5, Smallest: true})
		}},
		{"MaxArg", func(b *Backend, q, base kernels.Matrix) (any, error) { return b.MaxArg(q, base) }},
		{"ShiftedMax", func(b *Backend, q, base kernels.Matrix) (any, error) { return b.ShiftedMax(q, base, thr) }},
		{"NearestCentroid L2", func(b *Backend, q, base kernels.Matrix) (any, error) {
			acc := kernels.NewAccum(q.Rows, q.Dim)
			res, err := b.NearestCentroid(base, q, kernels.L2, acc)
			return []any{res, acc}, err
		}},
		{"NearestCentroid cosine", func(b *Backend, q, base kernels.Matrix) (any, error) {
			return b.NearestCentroid(base, q, kernels.Cosine, nil)
		}},
		{"PrefixMax", func(b *Backend, _, base kernels.Matrix) (any, error) { return b.PrefixMax(base) }},
	}
	for _, v := range []int{2, 4, 5} {
		for _, in := range []struct {
			name    string
			q, base kernels.Matrix
		}{{"f32xf32", q.M, base.M}, {"f32xf16", q.M, base16.M}} {
			t.Run(fmt.Sprintf("v%d/%s", v, in.name), func(t *testing.T) {
				half := newEmulated(t, v, smallTunables())
				half.Precision = Float16
				exact := newEmulated(t, v, smallTunables())
				for _, o := range ops {
					got, err := o.f(half, in.q, in.base)
					if err != nil {
						t.Fatalf("%s: %v", o.name, err)
					}
					want, err := o.f(exact, rounded(in.q), rounded(in.base))
					if err != nil {
						t.Fatalf("%s (pre-rounded): %v", o.name, err)
					}
					if !reflect.DeepEqual(got, want) {
						t.Errorf("%s: precision float16 differs from pre-rounded inputs", o.name)
					}
				}
				if half.stats.launches == 0 || exact.stats.launches == 0 {
					t.Fatal("no kernel launched")
				}
			})
		}
	}

	// Exact: float32 operands take the FFMA kernels (and so do the counts)
	b := newEmulated(t, 0, defaultTunables)
	if l := b.layoutOf(40, q.M, base16.M); l.f16 {
		t.Error("Exact: a float32 operand got the float16 layout")
	}
	b.Precision = Float16
	if l := b.layoutOf(40, q.M, base16.M); !l.f16 {
		t.Error("Float16: a float32 operand kept the float32 layout")
	}

	// a float32 value beyond float16's range is an error naming it; NaN is still ErrNonFinite
	big := kerneltest.Gen(13, 4, 8, kerneltest.Gauss, false)
	big.M.F32[8+3] = 1e5
	_, err := b.MaxArg(big.M, kerneltest.Gen(14, 3, 8, kerneltest.Gauss, false).M)
	if err == nil || !strings.Contains(err.Error(), "row 1") || !strings.Contains(err.Error(), "beyond float16") {
		t.Errorf("overflow: %v", err)
	}
	_, err = b.NearestCentroid(kerneltest.Gen(15, 3, 8, kerneltest.Gauss, true).M, big.M, kernels.L2, nil)
	if err == nil || !strings.Contains(err.Error(), "centroids row 1") {
		t.Errorf("centroid overflow: %v", err)
	}
	big.M.F32[8+3] = float32(math.NaN())
	if _, err := b.MaxArg(big.M, kerneltest.Gen(14, 3, 8, kerneltest.Gauss, false).M); !errors.Is(err, kernels.ErrNonFinite) {
		t.Errorf("NaN: %v", err)
	}
}
