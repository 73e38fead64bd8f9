package cuda

import (
	"fmt"
	"math"
	"os"
	"slices"
	"time"
	"unsafe"

	"hpcrun/kernels"
)

// The host side of the five ops: shapes and finiteness are checked, inputs
// packed (pack.go), base-like sets streamed through the GPU in chunks while
// the small set (queries, centroids) stays resident, kernels launched by
// name, results decoded from keys (keys.go). Every op returns exactly what
// kernels.Naive defines, within kerneltest's tolerances.

func subRows(m kernels.Matrix, r0, r1 int) kernels.Matrix {
	d := m.Dim
	if m.F16 != nil {
		return kernels.F16Matrix(m.F16[r0*d:r1*d], r1-r0, d)
	}
	if m.F32 != nil {
		return kernels.F32Matrix(m.F32[r0*d:r1*d], r1-r0, d)
	}
	return kernels.Matrix{Rows: r1 - r0, Dim: d}
}

func newArgMax(n int) kernels.ArgMax {
	r := kernels.ArgMax{Val: make([]float32, n), Idx: make([]int32, n)}
	for i := range r.Val {
		r.Val[i], r.Idx[i] = float32(math.Inf(-1)), -1
	}
	return r
}

// uploadF32 copies a small float32 array to a new device buffer.
func (e *Backend) uploadF32(v []float32) (dptr, error) {
	p, err := e.dev.alloc(4 * len(v))
	if err != nil {
		return 0, err
	}
	if err = e.dev.h2d(p, bytesOf(v), e.compute); err == nil {
		err = e.dev.sync(e.compute)
	}
	if err != nil {
		e.dev.free(p)
		return 0, err
	}
	return p, nil
}

// ---------------------------------------------------------------------------
// TopK

// TopK implements kernels.Backend. Per query block (as many queries as
// topkBytes of candidate slots allow), the queries stay on the GPU (negated
// for Smallest: exact) and the base streams through in index order. Each
// base range runs topk_kernelN, which appends every value above the query's
// threshold to its slots; then topk_select keeps the k best and raises the
// threshold to the k-th best. A range that overflowed some query's slots is
// redone in halves from the saved counts (a range of at most headroom rows
// cannot overflow), and range sizes adapt to the candidate rate. At the end
// topk_select writes the k best keys per query (sorted on the device for
// k <= 2,048), which the host decodes. A query block's state is a
// topkSession; a TopKStream keeps one between the blocks of a scan.
func (e *Backend) TopK(q, b kernels.Matrix, opt kernels.TopKOptions) (kernels.TopKResult, error) {
	if err := checkPair(q, b, "queries", "base"); err != nil {
		return kernels.TopKResult{}, err
	}
	k := opt.K
	if k < 1 {
		return kernels.TopKResult{}, fmt.Errorf("kernels: TopK: k=%d < 1", k)
	}
	res := newTopKResult(q.Rows, opt)
	if q.Rows == 0 || b.Rows == 0 {
		if err := checkFinite(q, "queries", e.threads); err != nil {
			return kernels.TopKResult{}, err
		}
		return res, checkFinite(b, "base", e.threads)
	}
	done, err := e.begin()
	if err != nil {
		return kernels.TopKResult{}, err
	}
	defer done()
	t, qb, err := e.planTopK(q, b, opt)
	if err != nil {
		return kernels.TopKResult{}, err
	}
	for q0 := 0; q0 < q.Rows; q0 += qb {
		q1 := min(q.Rows, q0+qb)
		s, err := e.newTopkSession(q, q0, q1, t)
		if err != nil {
			return kernels.TopKResult{}, err
		}
		if err = s.add(b); err == nil {
			err = s.flush(res, q0)
		}
		s.free()
		if err != nil {
			return kernels.TopKResult{}, err
		}
	}
	return res, nil
}

// newTopKResult is an nq x opt.K result of padding (index -1, value -Inf,
// +Inf when Smallest).
func newTopKResult(nq int, opt kernels.TopKOptions) kernels.TopKResult {
	res := kernels.TopKResult{NQ: nq, K: opt.K, Smallest: opt.Smallest,
		Val: make([]float32, nq*opt.K), Idx: make([]int64, nq*opt.K)}
	pad := padOf(opt)
	for i := range res.Val {
		res.Val[i], res.Idx[i] = pad, -1
	}
	return res
}

func padOf(opt kernels.TopKOptions) float32 {
	if opt.Smallest {
		return float32(math.Inf(1))
	}
	return float32(math.Inf(-1))
}

type topkPlan struct {
	k, cap, headroom int
	opt              kernels.TopKOptions
	l                layout
	version          int
	eq               []float32 // the exact filter: per query, its error bound per unit of base-row norm (nil: off)
}

// planTopK picks the layout, kernel version, candidate slots and query
// block size (qb queries) of a TopK of q over base rows like b.
func (e *Backend) planTopK(q, b kernels.Matrix, opt kernels.TopKOptions) (topkPlan, int, error) {
	k := opt.K
	l := e.layoutOf(q.Dim, q, b)
	t := topkPlan{k: k, opt: opt, l: l, version: e.version(l)}
	if e.filtering() && b.F16 != nil {
		// the exact filter (exact.go): float16 base rows are exact on the
		// device; the queries go to the tensor cores rounded
		if eq, ok := topkFactors(q, e.threads); ok {
			t.l = layoutOf(q.Dim)
			l, t.version, t.eq = t.l, e.version(t.l), eq
		}
	}
	t.headroom, t.cap = e.topkSlots(k)
	qb, err := e.topkQueries(q.Rows, topkPerQuery(k, t.cap, l, t.eq != nil))
	return t, qb, err
}

// topkPerQuery is the device bytes of one query's TopK state: slots,
// output, threshold and count, its row in layout l, and with the exact
// filter its exact copy, e, the filter's threshold and before.
func topkPerQuery(k, slots int, l layout, filter bool) int {
	n := 8*slots + 8*k + 8 + l.rowBytes()
	if filter {
		n += 4*l.ld + 12
	}
	return n
}

// topkSlots is the headroom and the candidate slots per query for k.
func (e *Backend) topkSlots(k int) (headroom, slots int) {
	headroom = max(1, e.tun.topkHeadroom, int(e.tun.topkHeadroomPerK*float64(k)))
	return headroom, k + headroom
}

// topkQueries is how many of nq queries, perQuery device bytes each, one
// query block holds.
func (e *Backend) topkQueries(nq, perQuery int) (int, error) {
	free, _, err := e.dev.memInfo()
	if err != nil {
		return 0, err
	}
	budget := min(float64(e.tun.topkBytes), e.tun.residentFrac*float64(free))
	return max(1, min(nq, int(budget)/perQuery)), nil
}

// topkSession is one query block's TopK state on the device — its
// queries, thresholds and candidate slots — and the range size, kept
// between the base sets added to it: Backend.TopK adds one, a TopKStream
// one per block of a scan. Base rows are numbered on from one add to the
// next (pos); flush writes the k best of the slots, sorted, and empties
// them, keeping every threshold: a threshold only rises, and a row at or
// below it cannot be among the k best of all rows added so far.
type topkSession struct {
	e           *Backend
	t           topkPlan
	nq          int
	qd          dptr
	thr, count  dptr
	keys, out   dptr
	fl          *topkFilter
	base        simArgs
	sel         selectArgs
	kname       string
	before, cnt []uint32 // counts after the last accepted range; scratch
	size        int      // base rows per range: never overflows at headroom
	pos         int64    // base rows added since the last flush
}

// maxTopkRows: a key holds a base row's number in 32 bits.
const maxTopkRows = 1 << 32

func (e *Backend) newTopkSession(q kernels.Matrix, q0, q1 int, t topkPlan) (*topkSession, error) {
	s, err := e.newTopkSlots(q1-q0, t.k)
	if err != nil {
		return nil, err
	}
	if err := s.bind(q, q0, t); err != nil {
		s.free()
		return nil, err
	}
	return s, nil
}

// newTopkSlots allocates a session's thresholds (-Inf), counts (0),
// candidate slots and output for nq queries and k: all but the queries.
func (e *Backend) newTopkSlots(nq, k int) (s *topkSession, err error) {
	e.stats.queryBlock++
	headroom, slots := e.topkSlots(k)
	s = &topkSession{e: e, nq: nq, size: headroom, before: make([]uint32, nq), cnt: make([]uint32, nq)}
	defer func() {
		if err != nil {
			s.free()
			s = nil
		}
	}()
	for _, a := range []struct {
		p     *dptr
		bytes int
	}{{&s.thr, 4 * nq}, {&s.count, 4 * nq}, {&s.keys, 8 * nq * slots}, {&s.out, 8 * nq * k}} {
		if *a.p, err = e.dev.alloc(a.bytes); err != nil {
			return s, err
		}
	}
	if err = e.dev.memsetD32(s.thr, math.Float32bits(float32(math.Inf(-1))), nq, e.compute); err != nil {
		return s, err
	}
	return s, e.dev.memsetD32(s.count, 0, nq, e.compute)
}

// bind uploads the session's queries, rows q0.. of q, as plan t has them
// (t.k and the slots as newTopkSlots had them).
func (s *topkSession) bind(q kernels.Matrix, q0 int, t topkPlan) (err error) {
	e, nq := s.e, s.nq
	s.t = t
	if s.qd, err = e.upload(subRows(q, q0, q0+nq), t.l.forRole(0), t.opt.Smallest, "queries"); err != nil {
		return err
	}
	s.kname = kernelName("topk", t.version, t.l)
	s.base = simArgs{A: s.qd, NA: int64(nq), LD: int64(t.l.ld), Thr: s.thr, Count: s.count, Keys: s.keys, Cap: int64(t.cap)}
	if t.eq != nil {
		if s.fl, err = e.newTopkFilter(q, q0, q0+nq, t, s.thr, s.count, s.keys, s.qd); err != nil {
			return err
		}
		s.base.Thr = s.fl.a.ThrF // the kernels append against the lowered thresholds
	}
	s.sel = selectArgs{Keys: s.keys, Count: s.count, Thr: s.thr, NQ: int64(nq), Cap: int64(t.cap), K: int64(t.k)}
	if e.tun.selectGlobalOnly {
		s.sel.Flags = selGlobalOnly
	}
	return nil
}

func (s *topkSession) free() {
	if s.fl != nil {
		s.fl.free()
		s.fl = nil
	}
	for _, p := range []*dptr{&s.qd, &s.thr, &s.count, &s.keys, &s.out} {
		if *p != 0 {
			s.e.dev.free(*p)
			*p = 0
		}
	}
}

// add streams the base rows b through the session, numbered from s.pos:
// each range runs topk_kernelN, which appends every value above its
// query's threshold, then topk_select keeps the k best and raises the
// threshold once a query holds k.
func (s *topkSession) add(b kernels.Matrix) error {
	e, t := s.e, s.t
	if s.pos+int64(b.Rows) > maxTopkRows {
		return fmt.Errorf("kernels/cuda: TopK: more than %d base rows at once (flush a stream before)", int64(maxTopkRows))
	}
	nq, k, capacity := s.nq, t.k, t.cap
	rb := t.l.rowBytes()
	_, tb := tiles(t.version)
	maxRange := e.tun.maxGridY * tb
	before, cnt, pos0 := s.before, s.cnt, s.pos
	err := e.stream(b, t.l.forRole(1), false, "base", func(buf dptr, r0, r1 int) error {
		if s.fl != nil {
			if err := s.fl.chunk(buf, pos0+int64(r0), r1-r0); err != nil {
				return err
			}
		}
		for pos := r0; pos < r1; {
			n := min(s.size, r1-pos, maxRange)
			a := s.base
			a.B, a.NB, a.BOff = buf+dptr((pos-r0)*rb), int64(n), pos0+int64(pos)
			e.stats.launches++
			t0 := time.Now()
			if s.fl != nil {
				if err := s.fl.thresholds(); err != nil {
					return err
				}
			}
			if err := e.launchSim(s.kname, t.version, &a); err != nil {
				return err
			}
			if err := e.dev.d2h(bytesOf(cnt), s.count, e.compute); err != nil {
				return err
			}
			if err := e.dev.sync(e.compute); err != nil {
				return err
			}
			e.stats.kernelSec += time.Since(t0).Seconds()
			var maxNew, maxCnt uint32
			over := false
			for i, c := range cnt {
				over = over || int(c) > capacity
				maxNew = max(maxNew, c-before[i])
				maxCnt = max(maxCnt, c)
			}
			if over {
				if n <= t.headroom {
					return fmt.Errorf("kernels/cuda: TopK: %d candidates from %d base rows (slots %d): kernel contract broken", maxNew, n, capacity)
				}
				// lost candidates: restore the counts, redo the range in halves
				if err := e.dev.h2d(s.count, bytesOf(before), e.compute); err != nil {
					return err
				}
				if err := e.dev.sync(e.compute); err != nil {
					return err
				}
				e.stats.splits++
				s.size = max(t.headroom, n/2)
				continue
			}
			if s.fl != nil {
				// the range's new candidates get their exact values
				if err := s.fl.rescore(before); err != nil {
					return err
				}
			}
			if int(maxCnt) >= k {
				e.stats.selects++
				t0 := time.Now()
				if err := e.dev.launch("topk_select", [3]int{nq, 1, 1}, [3]int{threads, 1, 1}, e.compute, words(&s.sel)); err != nil {
					return err
				}
				if e.tun.profile {
					if err := e.dev.sync(e.compute); err != nil {
						return err
					}
					e.stats.selectSec += time.Since(t0).Seconds()
				}
				for i, c := range cnt {
					before[i] = min(c, uint32(k))
				}
			} else {
				copy(before, cnt)
			}
			pos += n
			switch {
			case 4*int(maxNew) <= t.headroom:
				s.size = min(2*s.size, maxRange)
			case 2*int(maxNew) > t.headroom:
				s.size = max(t.headroom, s.size/2)
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	s.pos += int64(b.Rows)
	return nil
}

// flush writes the k best keys of every query's slots, decoded (indices
// counted from the first row added since the last flush, plus
// opt.BaseOffset), into rows r0.. of res, and empties the slots.
func (s *topkSession) flush(res kernels.TopKResult, r0 int) error {
	e, t, nq, k := s.e, s.t, s.nq, s.t.k
	t0 := time.Now()
	defer func() { e.stats.resultSec += time.Since(t0).Seconds() }()
	sel := s.sel
	sel.Out = s.out
	sorted := k <= selSortMax // the device sorts each query's k keys
	if sorted {
		sel.Flags |= selSortOut
	}
	e.stats.selects++
	if err := e.dev.launch("topk_select", [3]int{nq, 1, 1}, [3]int{threads, 1, 1}, e.compute, words(&sel)); err != nil {
		return err
	}
	// the k keys of every query come back through the page-locked staging
	// buffer (fast DMA), a batch of rows at a time, sorted and decoded there
	stg, err := e.staging(max(e.tun.chunkBytes, 8*k))
	if err != nil {
		return err
	}
	batch := max(1, min(nq, len(stg[0])/(8*k)))
	for b0 := 0; b0 < nq; b0 += batch {
		b1 := min(nq, b0+batch)
		keys := unsafe.Slice((*uint64)(unsafe.Pointer(&stg[0][0])), (b1-b0)*k)
		if err := e.dev.d2h(bytesOf(keys), s.out+dptr(8*b0*k), e.compute); err != nil {
			return err
		}
		if err := e.dev.sync(e.compute); err != nil {
			return err
		}
		if err := decodeTopK(keys, b1-b0, r0+b0, t, res, sorted, e.threads); err != nil {
			return err
		}
	}
	// empty the slots; the thresholds stay
	if err := e.dev.memsetD32(s.count, 0, nq, e.compute); err != nil {
		return err
	}
	clear(s.before)
	s.pos = 0
	return nil
}

// decodeTopK writes each of the n rows of k keys (best first: sorted on the
// device, or here when !sorted) as values and indices into rows r0.. of res
// (key 0 is padding).
func decodeTopK(keys []uint64, n, r0 int, t topkPlan, res kernels.TopKResult, sorted bool, threads int) error {
	k, pad := t.k, padOf(t.opt)
	return parallelFor(n, threads, func(lo, hi int) error {
		for i := lo; i < hi; i++ {
			row := keys[i*k : (i+1)*k]
			if !sorted {
				slices.Sort(row)
				slices.Reverse(row) // best first, key 0 (padding) last
			}
			vals, idx := res.Row(r0 + i)
			for j, key := range row {
				if key == 0 {
					vals[j], idx[j] = pad, -1
					continue
				}
				v := keyValue(key)
				if t.opt.Smallest {
					v = -v
				}
				vals[j], idx[j] = v, keyIndex(key)+t.opt.BaseOffset
			}
		}
		return nil
	})
}

// ---------------------------------------------------------------------------
// MaxArg, ShiftedMax, NearestCentroid, PrefixMax: argmax over a resident set

// argmaxJob: for every row i of a (streamed), the best key over rows j of b
// (resident) of a_i·b_j·scale[j] + bias[j] (with prefix: global j < i).
type argmaxJob struct {
	op           string // kernel family: maxarg | centroid | prefixmax
	a, b         kernels.Matrix
	aName, bName string
	scale, bias  []float32
	prefix       bool
	after        func(buf dptr, best dptr, r0, r1 int) error // per chunk, before its buffer is reused
	aDev         dptr                                        // A already on the device (a Kept set; a holds only the shape)
}

func (e *Backend) argmax(j argmaxJob, l layout) (kernels.ArgMax, error) {
	if e.bandApplies(j, l) {
		return e.argmaxBand(j) // exact.go
	}
	res := newArgMax(j.a.Rows)
	rb := l.rowBytes()
	bd, err := e.upload(j.b, l.forRole(1), false, j.bName)
	if err != nil {
		return res, err
	}
	defer e.dev.free(bd)
	scale, bias, err := e.scaleBias(j)
	if err != nil {
		return res, err
	}
	defer e.dev.free(scale)
	defer e.dev.free(bias)
	rows := e.chunkRows(l, j.a.Rows)
	best, err := e.dev.alloc(8 * rows)
	if err != nil {
		return res, err
	}
	defer e.dev.free(best)
	v := e.version(l)
	_, tb := tiles(v)
	kname := kernelName(j.op, v, l)
	slice := e.tun.maxGridY * tb
	keys := make([]uint64, rows)
	err = e.chunks(j, l, func(buf dptr, r0, r1 int) error {
		n := r1 - r0
		if err := e.dev.memsetD32(best, 0, 2*n, e.compute); err != nil {
			return err
		}
		nb := j.b.Rows
		if j.prefix {
			nb = min(nb, r1) // rows i < r1 only see j < r1
		}
		for j0 := 0; j0 < nb; j0 += slice {
			j1 := min(nb, j0+slice)
			a := simArgs{A: buf, B: bd + dptr(j0*rb), NA: int64(n), NB: int64(j1 - j0), LD: int64(l.ld),
				AOff: int64(r0), BOff: int64(j0), Best: best}
			if scale != 0 {
				a.Scale = scale + dptr(4*j0)
			}
			if bias != 0 {
				a.Bias = bias + dptr(4*j0)
			}
			e.stats.launches++
			t0 := time.Now()
			if err := e.launchSim(kname, v, &a); err != nil {
				return err
			}
			if e.tun.profile {
				if err := e.dev.sync(e.compute); err != nil {
					return err
				}
				e.stats.kernelSec += time.Since(t0).Seconds()
			}
		}
		if j.after != nil {
			t0 := time.Now()
			if err := j.after(buf, best, r0, r1); err != nil {
				return err
			}
			if e.tun.profile {
				if err := e.dev.sync(e.compute); err != nil {
					return err
				}
				e.stats.selectSec += time.Since(t0).Seconds() // the sums kernel, for NearestCentroid
			}
		}
		if err := e.dev.d2h(bytesOf(keys[:n]), best, e.compute); err != nil {
			return err
		}
		if err := e.dev.sync(e.compute); err != nil {
			return err
		}
		for i, key := range keys[:n] {
			if key != 0 {
				res.Val[r0+i], res.Idx[r0+i] = keyValue(key), int32(keyIndex(key))
			}
		}
		return nil
	})
	return res, err
}

// scaleBias uploads a job's scale and bias (0 when it has none).
func (e *Backend) scaleBias(j argmaxJob) (scale, bias dptr, err error) {
	if j.scale != nil {
		if scale, err = e.uploadF32(j.scale); err != nil {
			return 0, 0, err
		}
	}
	if j.bias != nil {
		if bias, err = e.uploadF32(j.bias); err != nil {
			e.dev.free(scale)
			return 0, 0, err
		}
	}
	return scale, bias, nil
}

// chunks runs fn over the chunks of a job's A rows in layout l: streamed
// from the host, or a Kept set's device chunks.
func (e *Backend) chunks(j argmaxJob, l layout, fn func(buf dptr, r0, r1 int) error) error {
	if j.aDev != 0 {
		return e.resident(j.aDev, j.a.Rows, l.forRole(0), fn)
	}
	return e.stream(j.a, l.forRole(0), false, j.aName, fn)
}

// MaxArg implements kernels.Backend: per base row, the best query.
func (e *Backend) MaxArg(q, b kernels.Matrix) (kernels.ArgMax, error) {
	if err := checkPair(q, b, "queries", "base"); err != nil {
		return kernels.ArgMax{}, err
	}
	return e.runArgmax(argmaxJob{op: "maxarg", a: b, b: q, aName: "base", bName: "queries"})
}

// ShiftedMax implements kernels.Backend: per base row, the best query by
// q·b - thr[q] (bias = -thr, added after the dot product as on the CPU).
func (e *Backend) ShiftedMax(q, b kernels.Matrix, thr []float32) (kernels.ArgMax, error) {
	if err := checkPair(q, b, "queries", "base"); err != nil {
		return kernels.ArgMax{}, err
	}
	if len(thr) != q.Rows {
		return kernels.ArgMax{}, fmt.Errorf("kernels: ShiftedMax: %d thresholds for %d queries", len(thr), q.Rows)
	}
	if err := checkFiniteF32("thresholds", thr); err != nil {
		return kernels.ArgMax{}, err
	}
	bias := make([]float32, len(thr))
	for i, t := range thr {
		bias[i] = -t
	}
	return e.runArgmax(argmaxJob{op: "maxarg", a: b, b: q, aName: "base", bName: "queries", bias: bias})
}

// PrefixMax implements kernels.Backend: per row i, the best j < i.
func (e *Backend) PrefixMax(x kernels.Matrix) (kernels.ArgMax, error) {
	if err := checkMatrix(x, "x"); err != nil {
		return kernels.ArgMax{}, err
	}
	return e.runArgmax(argmaxJob{op: "prefixmax", a: x, b: x, aName: "x", bName: "x", prefix: true})
}

func (e *Backend) runArgmax(j argmaxJob) (kernels.ArgMax, error) {
	if j.a.Rows == 0 || j.b.Rows == 0 {
		if err := checkFinite(j.a, j.aName, e.threads); err != nil {
			return kernels.ArgMax{}, err
		}
		if err := checkFinite(j.b, j.bName, e.threads); err != nil {
			return kernels.ArgMax{}, err
		}
		return newArgMax(j.a.Rows), nil
	}
	done, err := e.begin()
	if err != nil {
		return kernels.ArgMax{}, err
	}
	defer done()
	res, err := e.argmax(j, e.layoutOf(j.a.Dim, j.a, j.b))
	if err != nil {
		return kernels.ArgMax{}, err
	}
	return res, nil
}

// pointsLayout is NearestCentroid's layout: the op's, except that with
// sums float32 points keep float32 (the sums kernel reads the points,
// which must be exact; Float16x2 would split them).
func (e *Backend) pointsLayout(d int, x, c kernels.Matrix, sums bool) layout {
	if e.filtering() && x.F16 != nil {
		return layoutOf(d, x) // float16 points, exact filter (exact.go)
	}
	l := e.layoutOf(d, x, c)
	if l.parts > 1 && x.F16 == nil && sums {
		l = layoutOf(d, x, c)
	}
	return l
}

// KeepEnv = 0 turns Keep off (every Keep answers kernels.ErrNoRoom): k-means
// then streams its points every iteration, leaving the device memory free.
const KeepEnv = "HPCRUN_CUDA_KEEP"

// kept is a set of points on the device (kernels.Kept), packed as
// NearestCentroid packs them against float32 centroids with sums.
type kept struct {
	e         *Backend
	buf       dptr
	rows, dim int
	l         layout
}

// Keep implements kernels.Keeper: the points go to the device once, in the
// layout NearestCentroid gives them against float32 centroids, if they fit
// in residentFrac of the free device memory (else kernels.ErrNoRoom).
func (e *Backend) Keep(x kernels.Matrix) (kernels.Kept, error) {
	if err := checkMatrix(x, "points"); err != nil {
		return nil, err
	}
	done, err := e.begin()
	if err != nil {
		return nil, err
	}
	defer done()
	if os.Getenv(KeepEnv) == "0" {
		return nil, fmt.Errorf("%w: %s=0", kernels.ErrNoRoom, KeepEnv)
	}
	l := e.pointsLayout(x.Dim, x, kernels.Matrix{Dim: x.Dim, F32: []float32{}}, true)
	if err := e.fits(x.Rows*l.rowBytes(), "points"); err != nil {
		return nil, fmt.Errorf("%w: %v", kernels.ErrNoRoom, err)
	}
	k := &kept{e: e, rows: x.Rows, dim: x.Dim, l: l}
	if x.Rows > 0 && x.Dim > 0 {
		if k.buf, err = e.upload(x, l.forRole(0), false, "points"); err != nil {
			return nil, err
		}
	}
	return k, nil
}

func (k *kept) Rows() int { return k.rows }

func (k *kept) NearestCentroid(c kernels.Matrix, metric kernels.Metric, acc *kernels.Accum) (kernels.ArgMax, error) {
	if k.buf == 0 && k.rows > 0 && k.dim > 0 {
		return kernels.ArgMax{}, fmt.Errorf("kernels/cuda: Kept used after Release")
	}
	if k.rows > 0 && k.dim == 0 {
		// no values to keep: the op on the empty-dimension points
		return k.e.NearestCentroid(kernels.Matrix{Rows: k.rows, F32: []float32{}}, c, metric, acc)
	}
	return k.e.nearestCentroid(kernels.Matrix{}, k, c, metric, acc)
}

func (k *kept) Release() {
	if k.buf != 0 {
		if done, err := k.e.begin(); err == nil {
			k.e.dev.free(k.buf)
			done()
		}
		k.buf = 0
	}
}

// NearestCentroid implements kernels.Backend. L2 uses bias[j] =
// float32(-‖c_j‖²/2), Cosine scale[j] = float32(1/‖c_j‖) (norms in
// float64, as the CPU backend). With acc, each chunk's points are added to
// device fixed-point sums right after its assignment (centroid_sums); the
// sums are copied back once at the end and the counts are a histogram of
// the returned assignment.
func (e *Backend) NearestCentroid(x, c kernels.Matrix, metric kernels.Metric, acc *kernels.Accum) (kernels.ArgMax, error) {
	return e.nearestCentroid(x, nil, c, metric, acc)
}

// nearestCentroid is NearestCentroid on x, or on the kept points kx (x
// then holds only their shape).
func (e *Backend) nearestCentroid(x kernels.Matrix, kx *kept, c kernels.Matrix, metric kernels.Metric, acc *kernels.Accum) (kernels.ArgMax, error) {
	if kx != nil {
		x = kernels.Matrix{Rows: kx.rows, Dim: kx.dim}
		if c.Dim != kx.dim {
			return kernels.ArgMax{}, fmt.Errorf("kernels: points has dim %d, centroids has dim %d", kx.dim, c.Dim)
		}
		if err := checkMatrix(c, "centroids"); err != nil {
			return kernels.ArgMax{}, err
		}
	} else if err := checkPair(x, c, "points", "centroids"); err != nil {
		return kernels.ArgMax{}, err
	}
	if acc != nil && (acc.K != c.Rows || acc.Dim != c.Dim || len(acc.Sums) < c.Rows*c.Dim || len(acc.Counts) < c.Rows) {
		return kernels.ArgMax{}, fmt.Errorf("kernels: NearestCentroid: accumulator is %dx%d, centroids %dx%d", acc.K, acc.Dim, c.Rows, c.Dim)
	}
	if metric != kernels.L2 && metric != kernels.Cosine {
		return kernels.ArgMax{}, fmt.Errorf("kernels: unknown metric %d", metric)
	}
	j := argmaxJob{op: "centroid", a: x, b: c, aName: "points", bName: "centroids"}
	if x.Rows == 0 || c.Rows == 0 {
		if kx != nil {
			return newArgMax(x.Rows), checkFinite(c, "centroids", e.threads)
		}
		return e.runArgmax(j)
	}
	if err := checkFinite(c, "centroids", e.threads); err != nil {
		return kernels.ArgMax{}, err
	}
	if e.Precision == Float16 && c.F16 == nil {
		// the bias / scale come from the centroids the kernel sees
		h, err := roundF16(c, "centroids")
		if err != nil {
			return kernels.ArgMax{}, err
		}
		c, j.b = h, h
	}
	d := c.Dim
	row := make([]float32, d)
	norm2 := make([]float64, c.Rows)
	for i := range norm2 {
		if c.F16 != nil {
			kernels.F16ToF32(row, c.F16[i*d:(i+1)*d])
		} else {
			copy(row, c.F32[i*d:(i+1)*d])
		}
		for _, v := range row {
			norm2[i] += float64(v) * float64(v)
		}
	}
	if metric == kernels.L2 {
		j.bias = make([]float32, c.Rows)
		for i, s := range norm2 {
			j.bias[i] = float32(-0.5 * s)
		}
	} else {
		j.scale = make([]float32, c.Rows)
		for i, s := range norm2 {
			j.scale[i] = 1
			if s > 0 {
				j.scale[i] = float32(1 / math.Sqrt(s))
			}
		}
	}
	band := argmaxJob{a: x, b: c}
	var bl layout
	if kx != nil {
		band.aDev, bl = kx.buf, kx.l
	}
	if metric == kernels.Cosine && e.bandApplies(band, bl) {
		// the exact filter gives the CPU backend's bits: it normalises the
		// centroids (float64 norms, rounded rows) instead of scaling
		j.b, j.scale = unitRows(c, norm2), nil
	}
	done, err := e.begin()
	if err != nil {
		return kernels.ArgMax{}, err
	}
	defer done()
	l := e.pointsLayout(d, x, c, acc != nil)
	if kx != nil {
		l, j.aDev = kx.l, kx.buf
	}
	var sums dptr
	if acc != nil && d > 0 {
		if sums, err = e.dev.alloc(8 * c.Rows * d); err != nil {
			return kernels.ArgMax{}, err
		}
		defer e.dev.free(sums)
		if err := e.dev.memsetD32(sums, 0, 2*c.Rows*d, e.compute); err != nil {
			return kernels.ArgMax{}, err
		}
		// sums version 1 (a thread per value) with tile version 1, else 2 (a warp per point)
		sv := min(2, e.version(l))
		sname := fmt.Sprintf("centroid_sums_kernel%d_%s", sv, l.dtypeShort)
		perBlock := threads // values per block and pass (version 1)
		if sv == 2 {
			perBlock = threads / 32 * d // points per block and pass (version 2), times dim
		}
		j.after = func(buf, best dptr, r0, r1 int) error {
			a := sumArgs{X: buf, Best: best, Sums: sums, N: int64(r1 - r0), Dim: int64(d), LD: int64(l.ld)}
			blocks := max(1, min(sumsBlocks, ceilDiv((r1-r0)*d, perBlock)))
			return e.dev.launch(sname, [3]int{blocks, 1, 1}, [3]int{threads, 1, 1}, e.compute, words(&a))
		}
	}
	res, err := e.argmax(j, l)
	if err != nil {
		return kernels.ArgMax{}, err
	}
	if acc != nil {
		if sums != 0 {
			part := make([]int64, c.Rows*d)
			if err := e.dev.d2h(bytesOf(part), sums, e.compute); err != nil {
				return kernels.ArgMax{}, err
			}
			if err := e.dev.sync(e.compute); err != nil {
				return kernels.ArgMax{}, err
			}
			for i, v := range part {
				acc.Sums[i] += v
			}
		}
		for _, a := range res.Idx {
			if a >= 0 {
				acc.Counts[a]++
			}
		}
	}
	return res, nil
}

// unitRows is c with every nonzero row scaled to unit norm as the CPU
// backend does (float32(x·(1/√norm2)), norm2 in float64).
func unitRows(c kernels.Matrix, norm2 []float64) kernels.Matrix {
	d := c.Dim
	out := make([]float32, c.Rows*d)
	for i := 0; i < c.Rows; i++ {
		row := out[i*d : (i+1)*d]
		if c.F16 != nil {
			kernels.F16ToF32(row, c.F16[i*d:(i+1)*d])
		} else {
			copy(row, c.F32[i*d:(i+1)*d])
		}
		if s := norm2[i]; s > 0 {
			inv := 1 / math.Sqrt(s)
			for k := range row {
				row[k] = float32(float64(row[k]) * inv)
			}
		}
	}
	return kernels.F32Matrix(out, c.Rows, d)
}
