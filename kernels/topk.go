package kernels

// TopK epilogues (one per engine, see driver.go and amx.go):
//
//	epilogue 1  topkEp   reservoir of exact candidates per query, threshold =
//	                     k-th best at the last shrink (engine 1)
//	epilogue 2  topkEp2  interval reservoir: approximate candidates as
//	                     [x-e, x+e], pruned by the k-th largest lower bound,
//	                     rescored exactly at the end (engine 2)
//
// Both return the exact top k with the same tie rule (larger value, then
// smaller index), so their results are identical.

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

func (e *topkEp) tile(w *worker, c []float32, ldc, i0, i1, j0, j1 int) (accepted int) {
	n := j1 - j0
	for i := i0; i < i1; i++ {
		r := &e.resv[i]
		if r.c == nil {
			r.c = make([]cand, 0, e.cap)
			r.thr = float32(math.Inf(-1))
		}
		row := c[(i-i0)*ldc : (i-i0)*ldc+n]
		m := filterGT(row, r.thr, w.cand)
		accepted += m
		for _, j := range w.cand[:m] {
			e.add(r, row[j], int32(j0)+j)
		}
	}
	return accepted
}

// add offers candidate (v, j) to reservoir r (candidates of one query
// arrive in increasing j).
func (e *topkEp) add(r *reservoir, v float32, j int32) {
	if v <= r.thr {
		return
	}
	r.c = append(r.c, cand{v, j})
	if len(r.c) == e.cap && e.cap > e.k {
		r.shrink(e.k)
	}
}

func (e *topkEp) rowsDone(w *worker, i0, i1 int) error {
	for i := i0; i < i1; i++ {
		r := &e.resv[i]
		finishTopRow(e.res, i, r.c, e.k, e.negated, e.offset)
		*r = reservoir{}
	}
	return nil
}

// ---------------------------------------------------------------- epilogue v2 (engine 2)

// icand is a candidate of engine 2's TopK: its exact value lies in
// [lo, hi]; exact marks lo == hi == the exact value.
type icand struct {
	lo, hi float32
	i      int32
	exact  bool
}

// ireservoir keeps, for one query, every candidate that may still be in
// the top k: thr is the k-th largest lower bound at the last shrink, so a
// later candidate (larger index: it loses ties) with hi <= thr is beaten by
// k others and is dropped. A shrink keeps the k largest lower bounds and
// every candidate whose upper bound reaches the new thr; only what is left
// at the end is rescored exactly.
type ireservoir struct {
	thr float32
	cap int
	c   []icand
}

// topkEp2 is TopK's epilogue for engine 2 (amx.go): approximate tiles add
// intervals [x-e, x+e] without rescoring, exact tiles add exact values;
// rowsDone rescores the survivors that are still approximate and selects
// the k best exactly, so the result equals topkEp's bit for bit.
type topkEp2 struct {
	k, slack int
	res      TopKResult
	resv     []ireservoir
	offset   int64
	negated  bool
	b        Matrix
}

func (e *topkEp2) startApprox() bool { return false }

func (e *topkEp2) prepare() {}

// divs: an approximate survivor costs about two exact entries.
func (e *topkEp2) divs() (dense, sparse int) { return 6, 4 }

func (e *topkEp2) reservoir(i int) *ireservoir {
	r := &e.resv[i]
	if r.c == nil {
		r.cap = e.k + e.slack
		r.c = make([]icand, 0, r.cap)
		r.thr = float32(math.Inf(-1))
	}
	return r
}

func (e *topkEp2) add(w *worker, i int, r *ireservoir, c icand) {
	if c.hi <= r.thr {
		return
	}
	r.c = append(r.c, c)
	if len(r.c) >= r.cap {
		e.shrink(w, i, r)
	}
}

// shrink keeps the k largest lower bounds and every candidate whose upper
// bound reaches the k-th of them. When that leaves the reservoir nearly
// full (intervals that overlap the k-th value: many near-equal scores), it
// grows up to 4·(k+slack), then resolves the row instead: its approximate
// candidates are rescored exactly, so memory stays bounded whatever the
// data.
func (e *topkEp2) shrink(w *worker, i int, r *ireservoir) {
	e.prune(r)
	if len(r.c) <= r.cap-e.slack/2 {
		return
	}
	if 2*r.cap <= 4*(e.k+e.slack) {
		r.cap *= 2
		return
	}
	e.resolve(w, i, r)
}

// prune is shrink's selection.
func (e *topkEp2) prune(r *ireservoir) {
	k := e.k
	if len(r.c) <= k {
		return
	}
	selectTopLo(r.c, k)
	t := r.c[0].lo
	for _, c := range r.c[1:k] {
		t = min(t, c.lo)
	}
	n := k
	for _, c := range r.c[k:] {
		if c.hi >= t {
			r.c[n] = c
			n++
		}
	}
	r.c = r.c[:n]
	r.thr = max(r.thr, t)
}

// resolve rescores the approximate candidates of row i exactly and keeps
// the k best by (value, index), as epilogue 1's shrink would. The driver
// keeps w.f.as / w.f.ai0 on the current A block.
func (e *topkEp2) resolve(w *worker, i int, r *ireservoir) {
	f := w.f
	js, idx := f.js[:0], f.idx[:0]
	for l, c := range r.c {
		if !c.exact {
			js = append(js, c.i)
			idx = append(idx, l)
		}
	}
	f.js, f.idx = js, idx
	if len(f.rv) < len(js) {
		f.rv = make([]float32, 2*len(js))
	}
	vals := f.rv[:len(js)]
	rescoreRow(w, i, e.b, e.negated, js, vals)
	cs := make([]cand, len(r.c))
	for l, c := range r.c {
		cs[l] = cand{c.lo, c.i}
	}
	for l, x := range idx {
		cs[x].v = vals[l]
	}
	amxCount.resolved.Add(1)
	if len(cs) > e.k {
		selectTop(cs, e.k)
		cs = cs[:e.k]
	}
	r.c = r.c[:0]
	t := float32(math.Inf(1))
	for _, c := range cs {
		r.c = append(r.c, icand{c.v, c.v, c.i, true})
		t = min(t, c.v)
	}
	if len(r.c) == e.k {
		r.thr = max(r.thr, t)
	}
}

// selectTopLo reorders s so that s[:k] hold k largest lower bounds.
func selectTopLo(s []icand, k int) {
	lo, hi := 0, len(s)
	for hi-lo > 16 {
		mid := lo + (hi-lo)/2
		a, b, c := s[lo].lo, s[mid].lo, s[hi-1].lo
		p := max(min(a, b), min(max(a, b), c))
		i, j := lo, hi-1
		for i <= j {
			for s[i].lo > p {
				i++
			}
			for p > s[j].lo {
				j--
			}
			if i <= j {
				s[i], s[j] = s[j], s[i]
				i++
				j--
			}
		}
		switch {
		case k <= j:
			hi = j + 1
		case k >= i:
			lo = i
		default:
			return
		}
	}
	slices.SortFunc(s[lo:hi], func(a, b icand) int { return cmp.Compare(b.lo, a.lo) })
}

func (e *topkEp2) tile(w *worker, c []float32, ldc, i0, i1, j0, j1 int) (accepted int) {
	n := j1 - j0
	for i := i0; i < i1; i++ {
		r := e.reservoir(i)
		row := c[(i-i0)*ldc : (i-i0)*ldc+n]
		m := filterGT(row, r.thr, w.cand)
		accepted += m
		for _, j := range w.cand[:m] {
			v := row[j]
			e.add(w, i, r, icand{v, v, int32(j0) + j, true})
		}
	}
	return accepted
}

func (e *topkEp2) approx(w *worker, t *atile) bool {
	f := w.f
	rows, cols := t.i1-t.i0, t.j1-t.j0
	thr, ef := f.thr[:rows], f.mx[:rows]
	for r := range thr {
		res := e.reservoir(t.i0 + r)
		// x ± ef bounds the exact value, float32 rounding included
		ef[r] = roundUp32(t.e[r] + 0x1p-20*(t.mag[r]+t.e[r]))
		th := float64(res.thr)
		thr[r] = roundDown32(th - 2*float64(ef[r]) - 0x1p-20*(math.Abs(th)+t.mag[r]+t.e[r]))
	}
	cnt := filterTileS(t.c, t.ldc, rows, cols, nil, thr, f.pairs, t.maxPairs)
	if cnt > t.maxPairs {
		return false
	}
	for _, pr := range f.pairs[:cnt] {
		r, j := int(pr>>16), int(pr&0xffff)
		x, er := t.c[r*t.ldc+j], ef[r]
		e.add(w, t.i0+r, &e.resv[t.i0+r], icand{x - er, x + er, int32(t.j0 + j), false})
	}
	return true
}

func (e *topkEp2) rowsDone(w *worker, i0, i1 int) error {
	f := w.f
	var cs []cand
	for i := i0; i < i1; i++ {
		r := &e.resv[i]
		e.prune(r)
		js, idx := f.js[:0], f.idx[:0]
		for l, c := range r.c {
			if !c.exact {
				js = append(js, c.i)
				idx = append(idx, l)
			}
		}
		f.js, f.idx = js, idx
		if len(f.rv) < len(js) {
			f.rv = make([]float32, 2*len(js))
		}
		vals := f.rv[:len(js)]
		rescoreRow(w, i, e.b, e.negated, js, vals)
		cs = cs[:0]
		for _, c := range r.c {
			cs = append(cs, cand{c.lo, c.i})
		}
		for l, x := range idx {
			cs[x].v = vals[l]
		}
		finishTopRow(e.res, i, cs, e.k, e.negated, e.offset)
		*r = ireservoir{}
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
	par := getParallel(e.threads(), q.Dim)
	defer putParallel(par)
	if e.useAMX() && q.Dim >= amxMinDim {
		// engine 2: interval reservoirs (16-byte candidates)
		ep := &topkEp2{k: k, slack: max(k, topkSlack), res: res, resv: make([]ireservoir, q.Rows),
			offset: opt.BaseOffset, negated: opt.Smallest, b: b}
		super := max(mcAMX, topkStateBytes/(16*max(capacity, 1)))
		super = min(super, max(mcAMX, aPackBytes/max(1, 4*q.Dim)))
		if err := driveAMX(par, plan{a: q, b: b, negB: opt.Smallest, superRows: super}, ep); err != nil {
			return TopKResult{}, err
		}
		return res, nil
	}
	ep := &topkEp{k: k, cap: max(capacity, 1), nb: b.Rows, res: res, offset: opt.BaseOffset, negated: opt.Smallest}
	super := max(mcBlock, topkStateBytes/(8*max(capacity, 1)))
	super = min(super, max(mcBlock, aPackBytes/max(1, 4*q.Dim)))
	super = super / mcBlock * mcBlock
	ep.resv = make([]reservoir, q.Rows)
	if err := drive(par, plan{a: q, b: b, negB: opt.Smallest, superRows: super}, ep); err != nil {
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

// finishTopRow keeps the k best candidates of query row i, sorts them
// best first and writes them into res (values un-negated for Smallest,
// indices offset, the rest padded with ∓Inf and -1). It reorders c.
func finishTopRow(res TopKResult, i int, c []cand, k int, negated bool, offset int64) {
	if len(c) > k {
		selectTop(c, k)
		c = c[:k]
	}
	slices.SortFunc(c, candCmp)
	val, idx := res.Row(i)
	pad := float32(math.Inf(-1))
	if negated {
		pad = float32(math.Inf(1))
	}
	for j := range val {
		if j < len(c) {
			v := c[j].v
			if negated {
				v = -v
			}
			val[j], idx[j] = v, int64(c[j].i)+offset
		} else {
			val[j], idx[j] = pad, -1
		}
	}
}
