package kernels

import (
	"cmp"
	"fmt"
	"math"
	"slices"
)

// cand is a (similarity, base index) candidate. better is the total order
// used everywhere: larger value first, then smaller index.
type cand struct {
	v float32
	i int32
}

func better(a, b cand) bool { return a.v > b.v || (a.v == b.v && a.i < b.i) }

func candCmp(a, b cand) int {
	if a.v != b.v {
		return cmp.Compare(b.v, a.v)
	}
	return cmp.Compare(a.i, b.i)
}

// reservoir keeps, for one query, every candidate that can still be in the
// top k: it accepts values > thr (thr = current k-th best, -Inf until k
// candidates are known) and, when full, selects the k best and raises thr.
// Candidates of one query arrive in increasing index order, so a value equal
// to thr loses the tie and strict > is exact.
type reservoir struct {
	thr float32
	c   []cand
}

// selectTop reorders s so that s[:k] are the k best (in any order).
func selectTop(s []cand, k int) {
	lo, hi := 0, len(s)
	for hi-lo > 16 {
		// median of three pivot
		mid := lo + (hi-lo)/2
		a, b, c := s[lo], s[mid], s[hi-1]
		p := b
		if better(a, b) != better(a, c) {
			p = a
		} else if better(b, a) != better(b, c) {
			p = b
		} else {
			p = c
		}
		// partition: better than p to the left
		i, j := lo, hi-1
		for i <= j {
			for better(s[i], p) {
				i++
			}
			for better(p, s[j]) {
				j--
			}
			if i <= j {
				s[i], s[j] = s[j], s[i]
				i++
				j--
			}
		}
		// [lo, j] better-or-equal p, [i, hi) worse-or-equal
		switch {
		case k <= j:
			hi = j + 1
		case k >= i:
			lo = i
		default:
			return
		}
	}
	slices.SortFunc(s[lo:hi], candCmp)
}

func (r *reservoir) shrink(k int) {
	selectTop(r.c, k)
	r.c = r.c[:k]
	w := r.c[0]
	for _, c := range r.c[1:] {
		if better(w, c) {
			w = c
		}
	}
	r.thr = w.v
}

type topkEp struct {
	k, cap  int
	nb      int
	res     TopKResult
	resv    []reservoir // per query row; buffers exist only while in flight
	offset  int64
	negated bool
}

func (e *topkEp) tile(w *worker, c []float32, ldc, i0, i1, j0, j1 int) {
	n := j1 - j0
	for i := i0; i < i1; i++ {
		r := &e.resv[i]
		if r.c == nil {
			r.c = make([]cand, 0, e.cap)
			r.thr = float32(math.Inf(-1))
		}
		row := c[(i-i0)*ldc : (i-i0)*ldc+n]
		m := filterGT(row, r.thr, w.cand)
		for _, j := range w.cand[:m] {
			v := row[j]
			if v <= r.thr {
				continue
			}
			r.c = append(r.c, cand{v, int32(j0) + j})
			if len(r.c) == e.cap && e.cap > e.k {
				r.shrink(e.k)
			}
		}
	}
}

func (e *topkEp) rowsDone(w *worker, i0, i1 int) error {
	K := e.res.K
	for i := i0; i < i1; i++ {
		r := &e.resv[i]
		c := r.c
		if len(c) > e.k {
			selectTop(c, e.k)
			c = c[:e.k]
		}
		slices.SortFunc(c, candCmp)
		val, idx := e.res.Row(i)
		pad := float32(math.Inf(-1))
		if e.negated {
			pad = float32(math.Inf(1))
		}
		for j := 0; j < K; j++ {
			if j < len(c) {
				v := c[j].v
				if e.negated {
					v = -v
				}
				val[j], idx[j] = v, int64(c[j].i)+e.offset
			} else {
				val[j], idx[j] = pad, -1
			}
		}
		*r = reservoir{}
	}
	return nil
}

// TopK implements Backend.
func (e *CPU) TopK(q, b Matrix, opt TopKOptions) (TopKResult, error) {
	if err := checkDims(q, b, "queries", "base"); err != nil {
		return TopKResult{}, err
	}
	k := opt.K
	if k < 1 {
		return TopKResult{}, fmt.Errorf("kernels: TopK: k=%d < 1", k)
	}
	res := TopKResult{NQ: q.Rows, K: k, Smallest: opt.Smallest,
		Val: make([]float32, q.Rows*k), Idx: make([]int64, q.Rows*k)}
	capacity := min(b.Rows, k+max(k, topkSlack))
	ep := &topkEp{k: k, cap: max(capacity, 1), nb: b.Rows, res: res, offset: opt.BaseOffset, negated: opt.Smallest}
	super := max(mcBlock, topkStateBytes/(8*max(capacity, 1)))
	super = min(super, max(mcBlock, aPackBytes/max(1, 4*q.Dim)))
	super = super / mcBlock * mcBlock
	ep.resv = make([]reservoir, q.Rows)
	if err := drive(newParallel(e.threads(), q.Dim), plan{a: q, b: b, negB: opt.Smallest, superRows: super}, ep); err != nil {
		return TopKResult{}, err
	}
	return res, nil
}

// MergeTopK merges partial results of the same queries over disjoint base
// chunks (indices already global) into the best k per query, with the same
// order and tie rule as TopK, so merging chunk results equals one TopK over
// the concatenated base.
func MergeTopK(k int, parts ...TopKResult) (TopKResult, error) {
	if k < 1 {
		return TopKResult{}, fmt.Errorf("kernels: MergeTopK: k=%d < 1", k)
	}
	if len(parts) == 0 {
		return TopKResult{}, fmt.Errorf("kernels: MergeTopK: no parts")
	}
	nq, small := parts[0].NQ, parts[0].Smallest
	for _, p := range parts {
		if p.NQ != nq || p.Smallest != small {
			return TopKResult{}, fmt.Errorf("kernels: MergeTopK: mismatched parts")
		}
	}
	out := TopKResult{NQ: nq, K: k, Smallest: small, Val: make([]float32, nq*k), Idx: make([]int64, nq*k)}
	type gc struct {
		v float32
		i int64
	}
	var buf []gc
	for q := 0; q < nq; q++ {
		buf = buf[:0]
		for _, p := range parts {
			vals, idx := p.Row(q)
			for j := range vals {
				if idx[j] >= 0 {
					buf = append(buf, gc{vals[j], idx[j]})
				}
			}
		}
		slices.SortFunc(buf, func(a, b gc) int {
			if a.v != b.v {
				if small {
					return cmp.Compare(a.v, b.v)
				}
				return cmp.Compare(b.v, a.v)
			}
			return cmp.Compare(a.i, b.i)
		})
		vals, idx := out.Row(q)
		pad := float32(math.Inf(-1))
		if small {
			pad = float32(math.Inf(1))
		}
		for j := 0; j < k; j++ {
			if j < len(buf) {
				vals[j], idx[j] = buf[j].v, buf[j].i
			} else {
				vals[j], idx[j] = pad, -1
			}
		}
	}
	return out, nil
}
