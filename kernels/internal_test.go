package kernels

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

func TestSelectTop(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	for trial := 0; trial < 300; trial++ {
		n := r.IntN(200) + 1
		s := make([]cand, n)
		for i := range s {
			s[i] = cand{float32(r.IntN(1 + trial%10)), int32(i)}
		}
		r.Shuffle(n, func(i, j int) { s[i], s[j] = s[j], s[i] })
		want := slices.Clone(s)
		slices.SortFunc(want, candCmp)
		k := r.IntN(n) + 1
		selectTop(s, k)
		got := slices.Clone(s[:k])
		slices.SortFunc(got, candCmp)
		if !slices.Equal(got, want[:k]) {
			t.Fatalf("n=%d k=%d: selectTop wrong", n, k)
		}
	}
}

func TestReductions(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	for n := 1; n < 200; n++ {
		row := make([]float32, n)
		bias := make([]float32, n)
		for i := range row {
			row[i] = float32(r.IntN(4)) // many ties
			bias[i] = float32(r.IntN(3))
		}
		for _, b := range [][]float32{nil, bias} {
			v, j := rowArgmax(row, b)
			wv, wj := rowArgmaxGo(row, b)
			if v != wv || j != wj {
				t.Fatalf("n=%d bias=%v: rowArgmax (%v,%d) want (%v,%d)", n, b != nil, v, j, wv, wj)
			}
		}
		out := make([]int32, n)
		want := make([]int32, n)
		for _, thr := range []float32{-1, 0, 1, 2, 3, float32(math.Inf(-1))} {
			m := filterGT(row, thr, out)
			wm := filterGTGo(row, thr, want)
			if !slices.Equal(out[:m], want[:wm]) {
				t.Fatalf("n=%d thr=%v: filterGT %v want %v", n, thr, out[:m], want[:wm])
			}
		}
		x := make([]float32, n)
		for i := range x {
			x[i] = float32(r.NormFloat64()) * float32(math.Ldexp(1, r.IntN(60)-40))
		}
		s1 := make([]int64, n+1)
		s2 := make([]int64, n+1)
		s1[n], s2[n] = 42, 42
		addFixed(s1[:n], x)
		addFixedGo(s2[:n], x)
		if !slices.Equal(s1, s2) {
			t.Fatalf("n=%d: addFixed differs", n)
		}
	}
}

func TestPackRows(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 9))
	for _, d := range []int{1, 3, 16, 33} {
		for _, w := range []int{mr, nr} {
			for _, n := range []int{1, 5, 14, 15, 31, 32, 33, 70} {
				for _, f16 := range []bool{false, true} {
					for _, neg := range []bool{false, true} {
						x := make([]float32, n*d)
						for i := range x {
							x[i] = float32(r.NormFloat64())
						}
						m := F32Matrix(x, n, d)
						if f16 {
							h := make([]uint16, len(x))
							F32ToF16(h, x)
							m = F16Matrix(h, n, d)
						}
						np := (n - 1 + w) / w
						const guard = 8
						buf := make([]float32, np*w*d+2*guard)
						want := make([]float32, np*w*d)
						for i := range buf {
							buf[i] = nan32()
						}
						scratch := make([]float32, nr*d+16)
						if err := packRows(buf[guard:guard+np*w*d], m, 1, n, w, neg, scratch); err != nil && n > 1 {
							t.Fatal(err)
						}
						if err := packRowsGo(want, m, 1, n, w, neg, scratch); err != nil && n > 1 {
							t.Fatal(err)
						}
						np = (n - 1 + w - 1) / w
						for i := 0; i < np*w*d; i++ {
							g, wv := buf[guard+i], want[i]
							if g != wv && !(g == 0 && wv == 0) {
								t.Fatalf("d=%d w=%d n=%d f16=%v neg=%v: [%d] = %v want %v", d, w, n, f16, neg, i, g, wv)
							}
						}
						for i := 0; i < guard; i++ {
							if buf[i] == buf[i] || buf[len(buf)-1-i] == buf[len(buf)-1-i] && np*w*d+guard+i >= len(buf)-guard {
								t.Fatalf("guard overwritten")
							}
						}
						if n > 2 {
							if f16 {
								m.F16[d+1] = 0x7e00
							} else {
								m.F32[d+1] = float32(math.Inf(-1))
							}
							if err := packRows(buf[guard:guard+np*w*d], m, 1, n, w, neg, scratch); err == nil {
								t.Fatalf("non-finite not detected")
							}
						}
					}
				}
			}
		}
	}
}
