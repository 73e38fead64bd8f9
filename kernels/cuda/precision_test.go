package cuda

import (
	"errors"
	"fmt"
	"math"
	"reflect"
	"strings"
	"testing"
	"unsafe"

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
	for _, v := range []int{2, 4, 5, 7} {
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

// TestPrecisionFloat16x2: with Precision Float16x2 every conformance suite
// passes (float32 tolerances, exact on integer data) on the tensor-core
// versions, float32 operands taking the split layout (2 pieces against a
// float16 operand, 3 against a float32 one), with the small tunables
// crossing every chunk and split; a value beyond float16's range is an
// error naming its row.
func TestPrecisionFloat16x2(t *testing.T) {
	for _, v := range []int{2, 4, 5, 7} {
		for _, small := range []bool{false, true} {
			t.Run(fmt.Sprintf("v%d,small=%v", v, small), func(t *testing.T) {
				tun := defaultTunables
				if small {
					tun = smallTunables()
				}
				b := newEmulated(t, v, tun)
				b.Precision = Float16x2
				kerneltest.All(t, b)
			})
		}
	}
	b := newEmulated(t, 0, defaultTunables)
	b.Precision = Float16x2
	f32 := kerneltest.Gen(21, 3, 40, kerneltest.Gauss, false).M
	f16 := kerneltest.Gen(22, 3, 40, kerneltest.Gauss, true).M
	for _, c := range []struct {
		a, b  kernels.Matrix
		parts int
		pat   [2]string
	}{{f16, f16, 0, [2]string{}}, {f32, f16, 2, [2]string{"hl", "hh"}}, {f16, f32, 2, [2]string{"hh", "hl"}}, {f32, f32, 3, [2]string{"hhl", "hlh"}}} {
		l := b.layoutOf(40, c.a, c.b)
		if !l.f16 || l.parts != c.parts || l.pat != c.pat || (c.parts > 0 && l.ld != c.parts*64) {
			t.Errorf("layout of %v x %v: %+v", c.a.IsF16(), c.b.IsF16(), l)
		}
	}
	// hi + lo: within 2^-22 relative of every value (2^-25 absolute below float16's normal range)
	x := kerneltest.Gen(23, 1, 40, kerneltest.Gauss, false).M
	l := b.layoutOf(40, x, f16).forRole(0)
	buf := make([]byte, l.rowBytes())
	if err := pack(buf, x, 0, 1, l, false, "x", 1); err != nil {
		t.Fatal(err)
	}
	h := unsafe.Slice((*uint16)(unsafe.Pointer(&buf[0])), l.ld)
	for k, v := range x.F32 {
		got := kernels.F16Value(h[k]) + kernels.F16Value(h[l.ld1+k])
		if d := math.Abs(float64(got - v)); d > math.Max(math.Abs(float64(v))*0x1p-22, 0x1p-25) {
			t.Errorf("x[%d] = %g: hi + lo = %g", k, v, got)
		}
	}
	big := kerneltest.Gen(24, 4, 8, kerneltest.Gauss, false)
	big.M.F32[8+5] = -7e4
	_, err := b.MaxArg(kerneltest.Gen(25, 3, 8, kerneltest.Gauss, true).M, big.M)
	if err == nil || !strings.Contains(err.Error(), "row 1") || !strings.Contains(err.Error(), "float16x2") {
		t.Errorf("overflow: %v", err)
	}
}
