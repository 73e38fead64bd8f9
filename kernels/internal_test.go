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
