package kernels

import (
	"cmp"
	"fmt"
	"math"
	"slices"
)

// Naive is the plain-Go reference backend: every op as the obvious loop,
// dot products accumulated in float64 (then rounded to float32). It is the
// oracle of the conformance suites in kernels/kerneltest; it is slow
// (single-threaded, O(nq·nb) memory for nothing but results).
type Naive struct{}

var _ Backend = Naive{}

// Name implements Backend.
func (Naive) Name() string { return "naive" }

func refRows(m Matrix) ([][]float32, error) {
	out := make([][]float32, m.Rows)
	for i := range out {
		out[i] = make([]float32, m.Dim)
		copy(out[i], m.row(i, out[i]))
		if err := checkFiniteF32("input", out[i]); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func dotRef(a, b []float32) float32 {
	var s float64
	for k := range a {
		s += float64(a[k]) * float64(b[k])
	}
	return float32(s)
}

func refBoth(a, b Matrix, an, bn string) (A, B [][]float32, err error) {
	if err = checkDims(a, b, an, bn); err != nil {
		return
	}
	if A, err = refRows(a); err != nil {
		return
	}
	B, err = refRows(b)
	return
}

// TopK implements Backend (topkRef: full sort of every query row).
func (Naive) TopK(q, b Matrix, opt TopKOptions) (TopKResult, error) {
	Q, B, err := refBoth(q, b, "queries", "base")
	if err != nil {
		return TopKResult{}, err
	}
	k := opt.K
	if k < 1 {
		return TopKResult{}, fmt.Errorf("kernels: TopK: k=%d < 1", k)
	}
	res := TopKResult{NQ: q.Rows, K: k, Smallest: opt.Smallest,
		Val: make([]float32, q.Rows*k), Idx: make([]int64, q.Rows*k)}
	type vi struct {
		v float32
		i int
	}
	for qi, qv := range Q {
		all := make([]vi, len(B))
		for j, bv := range B {
			all[j] = vi{dotRef(qv, bv), j}
		}
		slices.SortFunc(all, func(x, y vi) int {
			if x.v != y.v {
				if opt.Smallest {
					return cmp.Compare(x.v, y.v)
				}
				return cmp.Compare(y.v, x.v)
			}
			return cmp.Compare(x.i, y.i)
		})
		vals, idx := res.Row(qi)
		for j := 0; j < k; j++ {
			if j < len(all) {
				vals[j], idx[j] = all[j].v, int64(all[j].i)+opt.BaseOffset
			} else if opt.Smallest {
				vals[j], idx[j] = float32(math.Inf(1)), -1
			} else {
				vals[j], idx[j] = float32(math.Inf(-1)), -1
			}
		}
	}
	return res, nil
}

// argmaxRef: for each row a of A, max_j score(a, j) with the smallest j.
func argmaxRef(A [][]float32, nB int, score func(i, j int) float32) ArgMax {
	res := newArgMax(len(A))
	for i := range A {
		for j := 0; j < nB; j++ {
			v := score(i, j)
			if res.Idx[i] < 0 || v > res.Val[i] {
				res.Val[i], res.Idx[i] = v, int32(j)
			}
		}
	}
	return res
}

// MaxArg implements Backend (maxArgRef).
func (Naive) MaxArg(q, b Matrix) (ArgMax, error) {
	Q, B, err := refBoth(q, b, "queries", "base")
	if err != nil {
		return ArgMax{}, err
	}
	return argmaxRef(B, len(Q), func(i, j int) float32 { return dotRef(B[i], Q[j]) }), nil
}

// ShiftedMax implements Backend (shiftedMaxRef).
func (Naive) ShiftedMax(q, b Matrix, thr []float32) (ArgMax, error) {
	Q, B, err := refBoth(q, b, "queries", "base")
	if err != nil {
		return ArgMax{}, err
	}
	if len(thr) != len(Q) {
		return ArgMax{}, fmt.Errorf("kernels: ShiftedMax: %d thresholds for %d queries", len(thr), len(Q))
	}
	if err := checkFiniteF32("thresholds", thr); err != nil {
		return ArgMax{}, err
	}
	return argmaxRef(B, len(Q), func(i, j int) float32 { return dotRef(B[i], Q[j]) - thr[j] }), nil
}

// NearestCentroid implements Backend (nearestCentroidRef).
func (Naive) NearestCentroid(x, c Matrix, metric Metric, acc *Accum) (ArgMax, error) {
	X, C, err := refBoth(x, c, "points", "centroids")
	if err != nil {
		return ArgMax{}, err
	}
	if acc != nil && (acc.K != c.Rows || acc.Dim != c.Dim) {
		return ArgMax{}, fmt.Errorf("kernels: NearestCentroid: accumulator shape mismatch")
	}
	norm2 := make([]float64, len(C))
	for j, cv := range C {
		for _, v := range cv {
			norm2[j] += float64(v) * float64(v)
		}
	}
	var res ArgMax
	switch metric {
	case L2:
		res = argmaxRef(X, len(C), func(i, j int) float32 {
			var s float64
			for k := range X[i] {
				s += float64(X[i][k]) * float64(C[j][k])
			}
			return float32(s - 0.5*norm2[j])
		})
	case Cosine:
		res = argmaxRef(X, len(C), func(i, j int) float32 {
			var s float64
			for k := range X[i] {
				s += float64(X[i][k]) * float64(C[j][k])
			}
			if norm2[j] > 0 {
				s /= math.Sqrt(norm2[j])
			}
			return float32(s)
		})
	default:
		return ArgMax{}, fmt.Errorf("kernels: unknown metric %d", metric)
	}
	if acc != nil {
		for i, a := range res.Idx {
			if a < 0 {
				continue
			}
			acc.Counts[a]++
			for k, v := range X[i] {
				acc.Sums[int(a)*c.Dim+k] += ToFixed(v)
			}
		}
	}
	return res, nil
}

// PrefixMax implements Backend (prefixMaxRef).
func (Naive) PrefixMax(x Matrix) (ArgMax, error) {
	if err := x.check("x"); err != nil {
		return ArgMax{}, err
	}
	X, err := refRows(x)
	if err != nil {
		return ArgMax{}, err
	}
	res := newArgMax(len(X))
	for i := range X {
		for j := 0; j < i; j++ {
			v := dotRef(X[i], X[j])
			if res.Idx[i] < 0 || v > res.Val[i] {
				res.Val[i], res.Idx[i] = v, int32(j)
			}
		}
	}
	return res, nil
}
