// Package kerneltest holds the conformance suites every kernels.Backend must
// pass (CPU now, CUDA later): seeded random and adversarial inputs (exact
// ties, duplicates, k > n, empty sets, odd dimensions, float16 edge values,
// NaN/Inf), checked against kernels.Naive with magnitude-scaled tolerances,
// or exactly where the data makes float32 arithmetic exact.
//
// Usage from a backend's test:
//
//	func TestConformance(t *testing.T) { kerneltest.All(t, myBackend) }
package kerneltest

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"hpcrun/kernels"
)

// All runs every suite.
func All(t *testing.T, b kernels.Backend) {
	t.Run("TopK", func(t *testing.T) { TopK(t, b) })
	t.Run("Merge", func(t *testing.T) { Merge(t, b) })
	t.Run("Stream", func(t *testing.T) { Stream(t, b) })
	t.Run("MaxArg", func(t *testing.T) { MaxArg(t, b) })
	t.Run("ShiftedMax", func(t *testing.T) { ShiftedMax(t, b) })
	t.Run("NearestCentroid", func(t *testing.T) { NearestCentroid(t, b) })
	t.Run("PrefixMax", func(t *testing.T) { PrefixMax(t, b) })
	t.Run("Errors", func(t *testing.T) { Errors(t, b) })
}

// Kind selects a data generator.
type Kind int

const (
	Gauss      Kind = iota // random unit vectors
	Integer                // small integers: float32 dot products are exact, many exact ties
	Duplicates             // unit vectors where many rows are exact copies
	F16Edge                // float16 edge values: ±65504, subnormals, ±0, mixed with normal values
)

func (k Kind) String() string {
	return [...]string{"gauss", "int", "dup", "f16edge"}[k]
}

// Data is a generated matrix together with float64 copies for checking.
type Data struct {
	M    kernels.Matrix
	Rows [][]float64
}

// Gen returns a seeded rows x dim matrix of the given kind, as float16
// when f16 is set (then Rows holds the exact float16 values).
func Gen(seed uint64, rows, dim int, kind Kind, f16 bool) Data {
	r := rand.New(rand.NewPCG(seed, 0x6b65726e))
	f := make([]float32, rows*dim)
	for i := 0; i < rows; i++ {
		row := f[i*dim : (i+1)*dim]
		switch kind {
		case Integer:
			for k := range row {
				row[k] = float32(r.IntN(5) - 2)
			}
		case Duplicates:
			if i > 0 && r.IntN(3) == 0 {
				copy(row, f[r.IntN(i)*dim:])
				continue
			}
			unit(r, row)
		case F16Edge:
			for k := range row {
				switch r.IntN(8) {
				case 0:
					row[k] = 65504
				case 1:
					row[k] = -65504
				case 2:
					row[k] = kernels.F16Value(uint16(1 + r.IntN(0x3ff))) // subnormal
				case 3:
					row[k] = float32(math.Copysign(0, -1))
				default:
					row[k] = float32(r.NormFloat64())
				}
			}
		default:
			unit(r, row)
		}
	}
	var m kernels.Matrix
	if f16 {
		h := make([]uint16, len(f))
		kernels.F32ToF16(h, f)
		kernels.F16ToF32(f, h)
		m = kernels.F16Matrix(h, rows, dim)
	} else {
		m = kernels.F32Matrix(f, rows, dim)
	}
	d := Data{M: m, Rows: make([][]float64, rows)}
	for i := range d.Rows {
		d.Rows[i] = make([]float64, dim)
		for k := range d.Rows[i] {
			d.Rows[i][k] = float64(f[i*dim+k])
		}
	}
	return d
}

func unit(r *rand.Rand, row []float32) {
	var s float64
	for k := range row {
		v := r.NormFloat64()
		row[k] = float32(v)
		s += v * v
	}
	if s == 0 {
		return
	}
	inv := 1 / math.Sqrt(s)
	for k := range row {
		row[k] = float32(float64(row[k]) * inv)
	}
}

func dot(a, b []float64) float64 {
	var s float64
	for k := range a {
		s += a[k] * b[k]
	}
	return s
}

func norm(a []float64) float64 { return math.Sqrt(dot(a, a)) }

// Tol is the magnitude-scaled tolerance of a float32 dot product of
// dimension d between vectors of norms na, nb: (d+2)·2⁻²³·na·nb. It bounds
// the rounding error of any summation order (Cauchy–Schwarz on Σ|a_k b_k|).
func Tol(d int, na, nb float64) float64 {
	return float64(d+2) * math.Ldexp(1, -23) * na * nb
}

// exact reports whether a kind makes float32 dot products exact.
func exact(k Kind) bool { return k == Integer }

type shape struct{ nq, nb, d int }

// shapes cover empty sets, single rows, odd dimensions and sizes that
// cross the CPU backend's panel (14x32) and block boundaries.
var shapes = []shape{
	{0, 5, 8}, {3, 0, 8}, {1, 1, 1}, {2, 3, 0}, {1, 7, 3}, {5, 33, 17},
	{15, 40, 31}, {29, 65, 64}, {37, 300, 33}, {130, 1100, 24}, {20, 2100, 130},
}

type variant struct {
	kind Kind
	f16  bool
}

var variants = []variant{{Gauss, false}, {Gauss, true}, {Integer, false}, {Integer, true}, {Duplicates, false}, {F16Edge, true}}

func forAll(t *testing.T, f func(t *testing.T, s shape, v variant, seed uint64)) {
	seed := uint64(1)
	for _, s := range shapes {
		for _, v := range variants {
			seed++
			name := fmt.Sprintf("nq=%d,nb=%d,d=%d,%v,f16=%v", s.nq, s.nb, s.d, v.kind, v.f16)
			sd := seed
			t.Run(name, func(t *testing.T) { f(t, s, v, sd) })
		}
	}
}

// checkArgMax checks one ArgMax against exact scores: score(i, j) gives the
// exact (float64) score and its tolerance, n(i) the number of candidates.
func checkArgMax(t *testing.T, got kernels.ArgMax, rows int, n func(i int) int, score func(i, j int) (float64, float64), exactMode bool) {
	t.Helper()
	if len(got.Val) != rows || len(got.Idx) != rows {
		t.Fatalf("result has %d/%d entries, want %d", len(got.Val), len(got.Idx), rows)
	}
	for i := 0; i < rows; i++ {
		nc := n(i)
		if nc == 0 {
			if got.Idx[i] != -1 || !math.IsInf(float64(got.Val[i]), -1) {
				t.Fatalf("row %d: no candidates, got (%v, %d) want (-Inf, -1)", i, got.Val[i], got.Idx[i])
			}
			continue
		}
		sc := make([]float64, nc)
		tl := make([]float64, nc)
		best, bestJ, bestTol := math.Inf(-1), -1, 0.0
		for j := 0; j < nc; j++ {
			sc[j], tl[j] = score(i, j)
			if sc[j] > best {
				best, bestJ, bestTol = sc[j], j, tl[j]
			}
		}
		gj := int(got.Idx[i])
		if gj < 0 || gj >= nc {
			t.Fatalf("row %d: index %d out of [0,%d)", i, gj, nc)
		}
		gs, gtol := sc[gj], tl[gj]
		if exactMode {
			if gj != bestJ || float64(got.Val[i]) != best {
				t.Fatalf("row %d: got (%v, %d) want exactly (%v, %d)", i, got.Val[i], gj, best, bestJ)
			}
			continue
		}
		if math.Abs(float64(got.Val[i])-gs) > gtol {
			t.Fatalf("row %d: value %v is not the score %v of index %d (tol %g)", i, got.Val[i], gs, gj, gtol)
		}
		if gs < best-gtol-bestTol {
			t.Fatalf("row %d: index %d scores %v, best is %v at %d", i, gj, gs, best, bestJ)
		}
		// an earlier index must not be clearly better (tie rule)
		for j := 0; j < gj; j++ {
			if sc[j] > gs+tl[j]+gtol {
				t.Fatalf("row %d: index %d (%v) beats chosen %d (%v)", i, j, sc[j], gj, gs)
			}
		}
	}
}

// MaxArg checks Backend.MaxArg.
func MaxArg(t *testing.T, b kernels.Backend) {
	forAll(t, func(t *testing.T, s shape, v variant, seed uint64) {
		q := Gen(seed, s.nq, s.d, v.kind, v.f16)
		base := Gen(seed+1000, s.nb, s.d, v.kind, v.f16)
		got, err := b.MaxArg(q.M, base.M)
		if err != nil {
			t.Fatal(err)
		}
		checkArgMax(t, got, s.nb, func(int) int { return s.nq }, func(i, j int) (float64, float64) {
			return dot(base.Rows[i], q.Rows[j]), Tol(s.d, norm(base.Rows[i]), norm(q.Rows[j]))
		}, exact(v.kind))
	})
}

// ShiftedMax checks Backend.ShiftedMax.
func ShiftedMax(t *testing.T, b kernels.Backend) {
	forAll(t, func(t *testing.T, s shape, v variant, seed uint64) {
		q := Gen(seed, s.nq, s.d, v.kind, v.f16)
		base := Gen(seed+1000, s.nb, s.d, v.kind, v.f16)
		r := rand.New(rand.NewPCG(seed, 9))
		thr := make([]float32, s.nq)
		for i := range thr {
			if exact(v.kind) {
				thr[i] = float32(r.IntN(7) - 3)
			} else {
				thr[i] = float32(r.Float64() - 0.5)
			}
		}
		got, err := b.ShiftedMax(q.M, base.M, thr)
		if err != nil {
			t.Fatal(err)
		}
		checkArgMax(t, got, s.nb, func(int) int { return s.nq }, func(i, j int) (float64, float64) {
			return dot(base.Rows[i], q.Rows[j]) - float64(thr[j]), Tol(s.d, norm(base.Rows[i]), norm(q.Rows[j])) * 2
		}, exact(v.kind))
	})
}

// PrefixMax checks Backend.PrefixMax.
func PrefixMax(t *testing.T, b kernels.Backend) {
	forAll(t, func(t *testing.T, s shape, v variant, seed uint64) {
		n := min(s.nb, 600)
		x := Gen(seed, n, s.d, v.kind, v.f16)
		got, err := b.PrefixMax(x.M)
		if err != nil {
			t.Fatal(err)
		}
		checkArgMax(t, got, n, func(i int) int { return i }, func(i, j int) (float64, float64) {
			return dot(x.Rows[i], x.Rows[j]), Tol(s.d, norm(x.Rows[i]), norm(x.Rows[j]))
		}, exact(v.kind))
	})
}

// NearestCentroid checks Backend.NearestCentroid for both metrics, the
// fixed-point sums (exactly equal to the sums of the returned assignment)
// and that splitting the points into chunks gives bit-identical sums.
func NearestCentroid(t *testing.T, b kernels.Backend) {
	forAll(t, func(t *testing.T, s shape, v variant, seed uint64) {
		x := Gen(seed, s.nb, s.d, v.kind, v.f16)
		c := Gen(seed+1000, s.nq, s.d, v.kind, v.f16)
		for _, metric := range []kernels.Metric{kernels.L2, kernels.Cosine} {
			acc := kernels.NewAccum(s.nq, s.d)
			got, err := b.NearestCentroid(x.M, c.M, metric, acc)
			if err != nil {
				t.Fatal(err)
			}
			exactMode := exact(v.kind) && metric == kernels.L2
			checkArgMax(t, got, s.nb, func(int) int { return s.nq }, func(i, j int) (float64, float64) {
				n2 := dot(c.Rows[j], c.Rows[j])
				nc := math.Sqrt(n2)
				tol := Tol(s.d, norm(x.Rows[i]), nc)
				if metric == kernels.L2 {
					return dot(x.Rows[i], c.Rows[j]) - 0.5*n2, tol + Tol(s.d, nc, nc)
				}
				if nc == 0 {
					return 0, tol
				}
				return dot(x.Rows[i], c.Rows[j]) / nc, 2 * Tol(s.d, norm(x.Rows[i]), 1)
			}, exactMode)
			want := kernels.NewAccum(s.nq, s.d)
			for i, a := range got.Idx {
				if a < 0 {
					continue
				}
				want.Counts[a]++
				for k, val := range x.Rows[i] {
					want.Sums[int(a)*s.d+k] += kernels.ToFixed(float32(val))
				}
			}
			eqAccum(t, "sums of returned assignment", acc, want)
			// chunked: three uneven parts, added in reverse order
			parts := []int{0, s.nb / 3, s.nb/3 + s.nb/2, s.nb}
			total := kernels.NewAccum(s.nq, s.d)
			for p := len(parts) - 2; p >= 0; p-- {
				part := kernels.NewAccum(s.nq, s.d)
				sub := slice(x.M, parts[p], parts[p+1])
				r, err := b.NearestCentroid(sub, c.M, metric, part)
				if err != nil {
					t.Fatal(err)
				}
				for i := range r.Idx {
					if r.Idx[i] != got.Idx[parts[p]+i] {
						t.Fatalf("chunked assignment differs at point %d", parts[p]+i)
					}
				}
				total.Add(part)
			}
			eqAccum(t, "chunked sums", total, acc)
			keptSame(t, b, x.M, c.M, metric)
		}
	})
}

// keptSame: on a kernels.Keeper, NearestCentroid on the kept points gives
// exactly what it gives on the points (with float32 centroids, as k-means
// has them), twice, and the sums too.
func keptSame(t *testing.T, b kernels.Backend, x, c kernels.Matrix, metric kernels.Metric) {
	t.Helper()
	keeper, ok := b.(kernels.Keeper)
	if !ok {
		return
	}
	if c.F32 == nil { // float32 centroids
		f := make([]float32, c.Rows*c.Dim)
		kernels.F16ToF32(f, c.F16[:len(f)])
		c = kernels.F32Matrix(f, c.Rows, c.Dim)
	}
	want := kernels.NewAccum(c.Rows, c.Dim)
	w, err := b.NearestCentroid(x, c, metric, want)
	if err != nil {
		t.Fatal(err)
	}
	kx, err := keeper.Keep(x)
	if err != nil {
		t.Fatalf("Keep: %v", err)
	}
	defer kx.Release()
	if kx.Rows() != x.Rows {
		t.Fatalf("kept %d rows of %d", kx.Rows(), x.Rows)
	}
	for round := 0; round < 2; round++ {
		acc := kernels.NewAccum(c.Rows, c.Dim)
		got, err := kx.NearestCentroid(c, metric, acc)
		if err != nil {
			t.Fatal(err)
		}
		for i := range w.Idx {
			if got.Idx[i] != w.Idx[i] || math.Float32bits(got.Val[i]) != math.Float32bits(w.Val[i]) {
				t.Fatalf("kept points, round %d: point %d gets (%d, %v), not (%d, %v)", round, i, got.Idx[i], got.Val[i], w.Idx[i], w.Val[i])
			}
		}
		eqAccum(t, "kept sums", acc, want)
	}
}

func eqAccum(t *testing.T, what string, got, want *kernels.Accum) {
	t.Helper()
	for i := range want.Counts {
		if got.Counts[i] != want.Counts[i] {
			t.Fatalf("%s: count[%d] = %d want %d", what, i, got.Counts[i], want.Counts[i])
		}
	}
	for i := range want.Sums {
		if got.Sums[i] != want.Sums[i] {
			t.Fatalf("%s: sum[%d] = %d want %d", what, i, got.Sums[i], want.Sums[i])
		}
	}
}

func slice(m kernels.Matrix, r0, r1 int) kernels.Matrix {
	d := m.Dim
	if m.F16 != nil {
		return kernels.F16Matrix(m.F16[r0*d:r1*d], r1-r0, d)
	}
	return kernels.F32Matrix(m.F32[r0*d:r1*d], r1-r0, d)
}

// TopK checks Backend.TopK for several k (1, small, > nb) and both
// directions.
func TopK(t *testing.T, b kernels.Backend) {
	forAll(t, func(t *testing.T, s shape, v variant, seed uint64) {
		q := Gen(seed, s.nq, s.d, v.kind, v.f16)
		base := Gen(seed+1000, s.nb, s.d, v.kind, v.f16)
		ck := NewTopKChecker(q.Rows, base.Rows)
		for _, k := range []int{1, 2, 10, 300, s.nb + 3} {
			for _, smallest := range []bool{false, true} {
				opt := kernels.TopKOptions{K: k, Smallest: smallest, BaseOffset: 1000}
				got, err := b.TopK(q.M, base.M, opt)
				if err != nil {
					t.Fatal(err)
				}
				ck.Check(t, got, opt, exact(v.kind))
			}
		}
	})
}

// TopKChecker verifies TopK results against exact (float64) scores.
type TopKChecker struct {
	sc, tl [][]float64 // [q][b] score and tolerance
	order  [2][][]int  // [smallest][q] base indices best first
}

// NewTopKChecker precomputes exact scores of queries Q against base B.
func NewTopKChecker(Q, B [][]float64) *TopKChecker {
	c := &TopKChecker{sc: make([][]float64, len(Q)), tl: make([][]float64, len(Q))}
	for qi := range Q {
		c.sc[qi] = make([]float64, len(B))
		c.tl[qi] = make([]float64, len(B))
		nq0 := norm(Q[qi])
		for j := range B {
			c.sc[qi][j] = dot(Q[qi], B[j])
			c.tl[qi][j] = Tol(len(Q[qi]), nq0, norm(B[j]))
		}
	}
	for dir := 0; dir < 2; dir++ {
		sign := 1 - 2*float64(dir)
		c.order[dir] = make([][]int, len(Q))
		for qi := range Q {
			sc := c.sc[qi]
			ref := make([]int, len(B))
			for j := range ref {
				ref[j] = j
			}
			sortBy(ref, func(a, b int) bool { return sign*sc[a] > sign*sc[b] || (sc[a] == sc[b] && a < b) })
			c.order[dir][qi] = ref
		}
	}
	return c
}

// Check verifies got (computed with opt) against the exact scores.
func (c *TopKChecker) Check(t *testing.T, got kernels.TopKResult, opt kernels.TopKOptions, exactMode bool) {
	t.Helper()
	k, nq := opt.K, len(c.sc)
	if got.NQ != nq || got.K != k || len(got.Val) != nq*k || len(got.Idx) != nq*k || got.Smallest != opt.Smallest {
		t.Fatalf("result shape NQ=%d K=%d len=%d/%d, want %dx%d", got.NQ, got.K, len(got.Val), len(got.Idx), nq, k)
	}
	sign, dir := 1.0, 0
	if opt.Smallest {
		sign, dir = -1, 1
	}
	for qi := 0; qi < nq; qi++ {
		vals, idx := got.Row(qi)
		nb := len(c.sc[qi])
		nvalid := min(k, nb)
		ref := c.order[dir][qi]
		sc := func(j int64) float64 { return sign * c.sc[qi][j] }
		tl := c.tl[qi]
		seen := map[int64]bool{}
		for j := 0; j < k; j++ {
			if j >= nvalid {
				if idx[j] != -1 || !math.IsInf(float64(vals[j]), int(-sign)) {
					t.Fatalf("q %d pos %d: padding (%v, %d), want (%v, -1)", qi, j, vals[j], idx[j], math.Inf(int(-sign)))
				}
				continue
			}
			g := idx[j] - opt.BaseOffset
			if g < 0 || g >= int64(nb) || seen[g] {
				t.Fatalf("q %d pos %d: bad or repeated index %d", qi, j, idx[j])
			}
			seen[g] = true
			gv := sign * float64(vals[j])
			if exactMode {
				if int(g) != ref[j] || gv != sc(int64(ref[j])) {
					t.Fatalf("q %d pos %d: got (%v, %d) want exactly (%v, %d)", qi, j, vals[j], g, sign*sc(int64(ref[j])), ref[j])
				}
				continue
			}
			if math.Abs(gv-sc(g)) > tl[g] {
				t.Fatalf("q %d pos %d: value %v is not the score %v of %d", qi, j, vals[j], sign*sc(g), g)
			}
			if j > 0 {
				pv := sign * float64(vals[j-1])
				if pv < gv || (pv == gv && idx[j-1] > idx[j]) {
					t.Fatalf("q %d: not sorted at %d: (%v,%d) then (%v,%d)", qi, j, vals[j-1], idx[j-1], vals[j], idx[j])
				}
			}
		}
		if exactMode || nvalid == 0 {
			continue
		}
		kth := sc(int64(ref[nvalid-1]))
		for j := 0; j < nvalid; j++ {
			g := idx[j] - opt.BaseOffset
			if sc(g) < kth-2*tl[g] {
				t.Fatalf("q %d: %d (score %v) returned but k-th best is %v", qi, g, sc(g), kth)
			}
		}
		for _, j := range ref[:nvalid] {
			if sc(int64(j)) > kth+2*tl[j] && !seen[int64(j)] {
				t.Fatalf("q %d: %d (score %v) missing, k-th best is %v", qi, j, sc(int64(j)), kth)
			}
		}
	}
}

func sortBy(x []int, less func(a, b int) bool) {
	slices.SortStableFunc(x, func(a, b int) int {
		if less(a, b) {
			return -1
		}
		if less(b, a) {
			return 1
		}
		return 0
	})
}

// Merge checks that TopK over base chunks (with global BaseOffset) merged
// by kernels.MergeTopK is identical to one TopK over the whole base.
func Merge(t *testing.T, b kernels.Backend) {
	for _, v := range variants {
		for _, k := range []int{1, 7, 50, 400} {
			q := Gen(77, 23, 40, v.kind, v.f16)
			base := Gen(78, 350, 40, v.kind, v.f16)
			for _, smallest := range []bool{false, true} {
				whole, err := b.TopK(q.M, base.M, kernels.TopKOptions{K: k, Smallest: smallest, BaseOffset: 5})
				if err != nil {
					t.Fatal(err)
				}
				cuts := []int{0, 100, 101, 260, 350}
				var parts []kernels.TopKResult
				for p := len(cuts) - 2; p >= 0; p-- {
					r, err := b.TopK(q.M, slice(base.M, cuts[p], cuts[p+1]), kernels.TopKOptions{K: k, Smallest: smallest, BaseOffset: 5 + int64(cuts[p])})
					if err != nil {
						t.Fatal(err)
					}
					parts = append(parts, r)
				}
				merged, err := kernels.MergeTopK(k, parts...)
				if err != nil {
					t.Fatal(err)
				}
				for i := range whole.Idx {
					if whole.Idx[i] != merged.Idx[i] || whole.Val[i] != merged.Val[i] {
						t.Fatalf("%v k=%d smallest=%v: entry %d merged (%v,%d) whole (%v,%d)", v, k, smallest, i, merged.Val[i], merged.Idx[i], whole.Val[i], whole.Idx[i])
					}
				}
			}
		}
	}
}

// Stream checks kernels.NewTopKStream (the backend's own stream when it is
// a kernels.TopKStreamer): blocks added with flushes between them, each
// flush's indices shifted by the rows before its window, merged by
// kernels.MergeTopK, are TopK over the whole base bit for bit. A backend's
// own stream must carry its thresholds over a flush (rows well below a
// query's k-th best, added after the flush, give no entry: carried), refuse
// a block of another dtype, and report a non-finite block.
func Stream(t *testing.T, b kernels.Backend) {
	_, streamer := b.(kernels.TopKStreamer)
	// blocks [cuts[i], cuts[i+1]) (one empty); flush after the blocks in flushAt
	cuts := []int{0, 100, 101, 101, 260, 300, 350}
	flushAt := map[int]bool{1: true, 4: true, 5: true}
	for _, v := range variants {
		for _, k := range []int{1, 7, 50, 400} {
			q := Gen(91, 23, 40, v.kind, v.f16)
			base := Gen(92, 350, 40, v.kind, v.f16)
			for _, smallest := range []bool{false, true} {
				name := fmt.Sprintf("%v f16=%v k=%d smallest=%v", v.kind, v.f16, k, smallest)
				opt := kernels.TopKOptions{K: k, Smallest: smallest, BaseOffset: 5}
				whole, err := b.TopK(q.M, base.M, opt)
				if err != nil {
					t.Fatal(err)
				}
				st, native, err := kernels.NewTopKStream(b, q.M, opt)
				if err != nil {
					t.Fatalf("%s: %v", name, err)
				}
				t.Cleanup(st.Release) // on a failure; Release twice is allowed
				var parts []kernels.TopKResult
				window := 0 // first row of the window
				for i := 0; i+1 < len(cuts); i++ {
					if err := st.Add(slice(base.M, cuts[i], cuts[i+1])); err != nil {
						t.Fatalf("%s: block %d: %v", name, i, err)
					}
					if !flushAt[i] && i+2 < len(cuts) {
						continue
					}
					r, err := st.Flush()
					if err != nil {
						t.Fatalf("%s: %v", name, err)
					}
					for j, x := range r.Idx {
						if x >= 0 {
							r.Idx[j] = x + int64(window)
						}
					}
					parts = append(parts, r)
					window = cuts[i+1]
				}
				merged, err := kernels.MergeTopK(k, parts...)
				if err != nil {
					t.Fatal(err)
				}
				for i := range whole.Idx {
					if whole.Idx[i] != merged.Idx[i] || whole.Val[i] != merged.Val[i] {
						t.Fatalf("%s: entry %d streamed (%v,%d) whole (%v,%d)", name, i, merged.Val[i], merged.Idx[i], whole.Val[i], whole.Idx[i])
					}
				}
				// an empty flush is padding
				if r, err := st.Flush(); err != nil || validEntries(r, 0) != 0 {
					t.Fatalf("%s: empty flush: %v, %d entries", name, err, validEntries(r, 0))
				}
				st.Release()
				if native && v.kind == Gauss && k <= base.M.Rows {
					carried(t, b, q, base, opt, name)
				}
			}
		}
	}
	q := Gen(93, 5, 16, Gauss, false)
	if st, native, err := kernels.NewTopKStream(b, q.M, kernels.TopKOptions{K: 3}); err != nil {
		t.Fatal(err)
	} else if native {
		t.Cleanup(st.Release)
		if err := st.Add(Gen(94, 20, 16, Gauss, false).M); err != nil {
			t.Fatal(err)
		}
		if err := st.Add(Gen(95, 20, 16, Gauss, true).M); err == nil {
			t.Fatal("a float16 block after float32 ones: no error")
		}
		st.Release()
	} else if streamer {
		t.Logf("no room for the backend's own stream of %d queries: kernels.NewTopKStream's fallback tested", q.M.Rows)
	}
	st, _, err := kernels.NewTopKStream(b, q.M, kernels.TopKOptions{K: 3})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Release()
	bad := Gen(96, 20, 16, Gauss, false)
	set(bad, 7*16+3, float32(math.NaN()), 0x7e00)
	if err := st.Add(bad.M); !errors.Is(err, kernels.ErrNonFinite) {
		t.Fatalf("NaN in a block: %v, want ErrNonFinite", err)
	}
	if err := st.Add(Gen(97, 20, 8, Gauss, false).M); err == nil {
		t.Fatal("a block of dim 8 for queries of dim 16: no error")
	}
	if _, _, err := kernels.NewTopKStream(b, q.M, kernels.TopKOptions{K: 0}); err == nil {
		t.Fatal("k=0: no error")
	}
}

// carried checks that a backend's own stream keeps its thresholds over a
// flush: after the base and a flush, the query's threshold is its k-th
// best, so base rows well below it (by 0.1: beyond any rounding of Gauss
// data), added after the flush, give no entry at all (a stream starting
// afresh would give min(k, rows)).
func carried(t *testing.T, b kernels.Backend, q Data, base Data, opt kernels.TopKOptions, name string) {
	t.Helper()
	q1 := Data{M: slice(q.M, 0, 1), Rows: q.Rows[:1]}
	st, err := b.(kernels.TopKStreamer).NewTopKStream(q1.M, opt)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Release()
	if err := st.Add(base.M); err != nil {
		t.Fatal(err)
	}
	r, err := st.Flush()
	if err != nil {
		t.Fatal(err)
	}
	sign := 1.0
	if opt.Smallest {
		sign = -1
	}
	kth := sign * float64(r.Val[opt.K-1])
	var low []int
	for j, row := range base.Rows {
		if sign*dot(q1.Rows[0], row) < kth-0.1 {
			low = append(low, j)
		}
	}
	if len(low) == 0 {
		return
	}
	d := base.M.Dim
	m := kernels.Matrix{Rows: len(low), Dim: d}
	for _, j := range low {
		if base.M.F16 != nil {
			m.F16 = append(m.F16, base.M.F16[j*d:(j+1)*d]...)
		} else {
			m.F32 = append(m.F32, base.M.F32[j*d:(j+1)*d]...)
		}
	}
	if err := st.Add(m); err != nil {
		t.Fatal(err)
	}
	if r, err = st.Flush(); err != nil {
		t.Fatal(err)
	}
	if n := validEntries(r, 0); n != 0 {
		t.Fatalf("%s: %d entries from %d rows below the k-th best: thresholds not carried over the flush", name, n, len(low))
	}
}

// validEntries counts query i's entries that are not padding.
func validEntries(r kernels.TopKResult, i int) int {
	if i >= r.NQ {
		return 0
	}
	_, idx := r.Row(i)
	n := 0
	for _, x := range idx {
		if x >= 0 {
			n++
		}
	}
	return n
}

// Errors checks shape errors and that NaN/Inf anywhere in any input is
// reported as kernels.ErrNonFinite.
func Errors(t *testing.T, b kernels.Backend) {
	bads := map[string]func(d Data, pos int){
		"NaN": func(d Data, pos int) { set(d, pos, float32(math.NaN()), 0x7e00) },
		"Inf": func(d Data, pos int) { set(d, pos, float32(math.Inf(1)), 0x7c00) },
	}
	for name, bad := range bads {
		for _, f16 := range []bool{false, true} {
			for _, which := range []string{"q", "b"} {
				for _, pos := range []int{0, 17, 4*19*33 - 1} {
					q := Gen(5, 4*19, 33, Gauss, f16)
					base := Gen(6, 4*19, 33, Gauss, f16)
					if which == "q" {
						bad(q, pos)
					} else {
						bad(base, pos)
					}
					thr := make([]float32, q.M.Rows)
					ops := map[string]func() error{
						"TopK": func() error {
							_, err := b.TopK(q.M, base.M, kernels.TopKOptions{K: 3})
							return err
						},
						"MaxArg":     func() error { _, err := b.MaxArg(q.M, base.M); return err },
						"ShiftedMax": func() error { _, err := b.ShiftedMax(q.M, base.M, thr); return err },
						"Centroid": func() error {
							_, err := b.NearestCentroid(base.M, q.M, kernels.L2, kernels.NewAccum(q.M.Rows, 33))
							return err
						},
						"PrefixMax": func() error {
							m := q.M
							if which == "b" {
								m = base.M
							}
							_, err := b.PrefixMax(m)
							return err
						},
					}
					for op, f := range ops {
						if err := f(); !errors.Is(err, kernels.ErrNonFinite) {
							t.Errorf("%s in %s (f16=%v, pos %d): %s returned %v, want ErrNonFinite", name, which, f16, pos, op, err)
						}
					}
				}
			}
		}
	}
	// non-finite threshold
	q := Gen(5, 3, 8, Gauss, false)
	if _, err := b.ShiftedMax(q.M, q.M, []float32{0, float32(math.NaN()), 0}); !errors.Is(err, kernels.ErrNonFinite) {
		t.Errorf("NaN threshold: got %v", err)
	}
	// shape errors
	x := Gen(5, 3, 8, Gauss, false)
	y := Gen(5, 3, 9, Gauss, false)
	if _, err := b.TopK(x.M, y.M, kernels.TopKOptions{K: 1}); err == nil {
		t.Error("TopK dim mismatch: no error")
	}
	if _, err := b.TopK(x.M, x.M, kernels.TopKOptions{K: 0}); err == nil {
		t.Error("TopK k=0: no error")
	}
	if _, err := b.MaxArg(x.M, y.M); err == nil {
		t.Error("MaxArg dim mismatch: no error")
	}
	if _, err := b.ShiftedMax(x.M, x.M, []float32{1}); err == nil {
		t.Error("ShiftedMax threshold count: no error")
	}
	short := kernels.F32Matrix(make([]float32, 5), 3, 2)
	if _, err := b.MaxArg(short, x.M); err == nil {
		t.Error("short data: no error")
	}
}

func set(d Data, pos int, f float32, h uint16) {
	if d.M.F16 != nil {
		d.M.F16[pos] = h
	} else {
		d.M.F32[pos] = f
	}
}
