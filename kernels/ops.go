package kernels

import (
	"fmt"
	"math"
	"runtime"
	"sync"
)

// CPU is the CPU backend: AVX-512 assembly micro-kernels where available,
// plain Go otherwise. Threads <= 0 means GOMAXPROCS.
type CPU struct {
	Threads int
	// NoAMX turns off the AMX-BF16 filter (engine 2, amx.go) and runs the
	// float32 micro-kernels on every entry. Results are identical either
	// way; HPCRUN_NO_AMX=1 does the same for every CPU backend.
	NoAMX bool
}

// NewCPU returns a CPU backend using the given number of threads
// (<= 0: GOMAXPROCS).
func NewCPU(threads int) *CPU { return &CPU{Threads: threads} }

// Name reports the backend and the active instruction-set path.
func (e *CPU) Name() string {
	f := CPUFeatures()
	if cpuFeat.amx && !e.useAMX() {
		f += " noamx"
	}
	return "cpu(" + f + ")"
}

func (e *CPU) threads() int {
	if e == nil || e.Threads <= 0 {
		return runtime.GOMAXPROCS(0)
	}
	return e.Threads
}

var _ Backend = (*CPU)(nil)

// drive runs a plan on engine 2 (the AMX filter, amx.go) where the CPU
// has it and it pays, else on engine 1 (driver.go). Both give the same
// bits.
func (e *CPU) drive(p *parallel, pl plan, ep fepilogue) error {
	if e.useAMX() && pl.a.Dim >= amxMinDim {
		return driveAMX(p, pl, ep)
	}
	return drive(p, pl, ep)
}

// useAMX reports whether this backend uses the AMX filter.
func (e *CPU) useAMX() bool {
	if e != nil && e.NoAMX {
		return false
	}
	return amxForce || cpuFeat.amx && amxGranted()
}

// amxGranted asks the OS, once, for the AMX tile state (Linux:
// arch_prctl, amxperm_linux.go); without it engine 1 runs. It is asked on
// first use, not at start-up, so programs that never reach engine 2 keep
// the smaller signal frames.
var amxGranted = sync.OnceValue(requestAMX)

// amxForce (tests) runs engine 2 without AMX, on the plain-Go twin of
// kern4, to test its logic anywhere the assembly micro-kernels exist.
var amxForce bool

func newArgMax(n int) ArgMax {
	r := ArgMax{Val: make([]float32, n), Idx: make([]int32, n)}
	ninf := float32(math.Inf(-1))
	for i := range r.Val {
		r.Val[i] = ninf
		r.Idx[i] = -1
	}
	return r
}

// argmaxEp keeps per A row the best (value, B index) over B, with an
// optional per-B-row bias and the prefix restriction j < i.
type argmaxEp struct {
	res     ArgMax
	bias    []float32
	prefix  bool
	after   func(w *worker, i0, i1 int) error
	biasPad []float32 // engine 2: bias padded for whole-vector reads
	biasMax float64   // engine 2: max |bias|
}

func (e *argmaxEp) tile(w *worker, c []float32, ldc, i0, i1, j0, j1 int) int {
	for i := i0; i < i1; i++ {
		n := j1 - j0
		if e.prefix {
			n = min(n, i-j0)
			if n <= 0 {
				continue
			}
		}
		row := c[(i-i0)*ldc : (i-i0)*ldc+n]
		var bias []float32
		if e.bias != nil {
			bias = e.bias[j0 : j0+n]
		}
		v, j := rowArgmax(row, bias)
		e.offer(i, v, j+j0)
	}
	return 0
}

// offer merges candidate (v, j) into row i's maximum (ties: smaller j).
func (e *argmaxEp) offer(i int, v float32, j int) {
	if old := e.res.Val[i]; v > old || e.res.Idx[i] < 0 || (v == old && int32(j) < e.res.Idx[i]) {
		e.res.Val[i] = v
		e.res.Idx[i] = int32(j)
	}
}

func (e *argmaxEp) startApprox() bool { return true }

// prepare (engine 2, before any tile) pads the bias for whole-vector reads.
func (e *argmaxEp) prepare() {
	if e.bias == nil {
		return
	}
	e.biasPad = make([]float32, len(e.bias)+32)
	copy(e.biasPad, e.bias)
	e.biasMax = 0
	for _, b := range e.bias {
		e.biasMax = max(e.biasMax, math.Abs(float64(b)))
	}
}

// divs: rescoring an entry costs about 20 exact ones.
func (e *argmaxEp) divs() (dense, sparse int) { return 24, 32 }

// approx (engine 2): per row, L = max(current maximum, max_j x_j - S,
// earlier tiles' bounds) is a lower bound of the row's exact maximum (x_j
// = approximate entry + bias, S its error bound); only entries with
// x_j >= L - S can reach it. They are kept with their upper bound x_j + S;
// in streaming mode until rowsDone (later tiles raise L and drop more of
// them), else until the end of this tile. The rest are rescored exactly
// and merged as tile would.
func (e *argmaxEp) approx(w *worker, t *atile) bool {
	f := w.f
	rows, cols := t.i1-t.i0, t.j1-t.j0
	var bias []float32
	if e.bias != nil {
		bias = e.biasPad[t.j0:]
	}
	if e.prefix {
		ninf := float32(math.Inf(-1))
		for r := 0; r < rows; r++ {
			if n := t.i0 + r - t.j0; n < cols {
				row := t.c[r*t.ldc : r*t.ldc+cols]
				for j := max(n, 0); j < cols; j++ {
					row[j] = ninf
				}
			}
		}
	}
	if !t.streaming || f.pendI0 != t.i0 {
		// a new A block
		f.pend = f.pend[:0]
		for r := range f.lb[:rows] {
			f.lb[r] = math.Inf(-1)
		}
		f.pas, f.pbs, f.pj0, f.pendI0, f.pendD, f.pendNeg = t.as, t.bs0, 0, t.i0, t.d, t.negB
		if !t.streaming {
			f.pbs, f.pj0 = t.bs, t.j0
		}
	}
	maxTileS(t.c, t.ldc, rows, cols, bias, f.mx[:rows])
	s := f.e[:rows] // reused below as the per-row slack
	for r := 0; r < rows; r++ {
		i := t.i0 + r
		s[r] = t.e[r] + 0x1p-20*(t.mag[r]+t.e[r]+e.biasMax)
		l := max(f.lb[r], float64(f.mx[r])-s[r])
		if e.res.Idx[i] >= 0 {
			l = max(l, float64(e.res.Val[i]))
		}
		f.lb[r] = l
		f.thr[r] = math.Nextafter32(roundDown32(l-s[r]), float32(math.Inf(-1)))
	}
	cnt := filterTileS(t.c, t.ldc, rows, cols, bias, f.thr[:rows], f.pairs, t.maxPairs)
	if cnt > t.maxPairs {
		return false
	}
	for _, pr := range f.pairs[:cnt] {
		r, j := int(pr>>16), int(pr&0xffff)
		x := t.c[r*t.ldc+j]
		if bias != nil {
			x += bias[j]
		}
		f.pend = append(f.pend, pendCand{int32(r), int32(t.j0 + j), float64(x) + s[r]})
	}
	if !t.streaming {
		e.flush(w)
		f.pendI0 = -1
	} else if len(f.pend) > 4*rows {
		e.prune(f)
		if len(f.pend) > 16*rows {
			amxCount.resolved.Add(1)
			e.flush(w) // near-ties: bound the pending list
		}
	}
	return true
}

// prune drops the pending candidates whose upper bound is below their
// row's lower bound.
func (e *argmaxEp) prune(f *fbuf) {
	n := 0
	for _, c := range f.pend {
		if c.hi >= f.lb[c.r] {
			f.pend[n] = c
			n++
		}
	}
	f.pend = f.pend[:n]
}

// flush rescores the pending candidates of the current A block and
// merges them.
func (e *argmaxEp) flush(w *worker) {
	f := w.f
	e.prune(f)
	n := len(f.pend)
	if n == 0 {
		return
	}
	rs, js := f.prs[:0], f.pjs[:0]
	for _, c := range f.pend {
		rs = append(rs, c.r)
		js = append(js, c.j-int32(f.pj0))
	}
	f.prs, f.pjs = rs, js
	vals := rescorePairs(w, f.pas, f.pbs, f.pendD, f.pendNeg, rs, js)
	for l, c := range f.pend {
		j := int(c.j)
		v := vals[l]
		if e.bias != nil {
			v += e.bias[j]
		}
		e.offer(f.pendI0+int(c.r), v, j)
	}
	f.pend = f.pend[:0]
}

func (e *argmaxEp) rowsDone(w *worker, i0, i1 int) error {
	if w.f != nil && w.f.pendI0 == i0 {
		e.flush(w) // engine 2, streaming mode
		w.f.pendI0 = -1
	}
	if e.after != nil {
		return e.after(w, i0, i1)
	}
	return nil
}

// MaxArg implements Backend.
func (e *CPU) MaxArg(q, b Matrix) (ArgMax, error) {
	if err := checkDims(q, b, "queries", "base"); err != nil {
		return ArgMax{}, err
	}
	ep := &argmaxEp{res: newArgMax(b.Rows)}
	par := getParallel(e.threads(), q.Dim)
	defer putParallel(par)
	if err := e.drive(par, plan{a: b, b: q}, ep); err != nil {
		return ArgMax{}, err
	}
	return ep.res, nil
}

// ShiftedMax implements Backend.
func (e *CPU) ShiftedMax(q, b Matrix, thr []float32) (ArgMax, error) {
	if err := checkDims(q, b, "queries", "base"); err != nil {
		return ArgMax{}, err
	}
	if len(thr) != q.Rows {
		return ArgMax{}, fmt.Errorf("kernels: ShiftedMax: %d thresholds for %d queries", len(thr), q.Rows)
	}
	if err := checkFiniteF32("thresholds", thr); err != nil {
		return ArgMax{}, err
	}
	bias := make([]float32, len(thr))
	for i, t := range thr {
		bias[i] = -t
	}
	ep := &argmaxEp{res: newArgMax(b.Rows), bias: bias}
	par := getParallel(e.threads(), q.Dim)
	defer putParallel(par)
	if err := e.drive(par, plan{a: b, b: q}, ep); err != nil {
		return ArgMax{}, err
	}
	return ep.res, nil
}

// PrefixMax implements Backend.
func (e *CPU) PrefixMax(x Matrix) (ArgMax, error) {
	if err := x.check("x"); err != nil {
		return ArgMax{}, err
	}
	ep := &argmaxEp{res: newArgMax(x.Rows), prefix: true}
	par := getParallel(e.threads(), x.Dim)
	defer putParallel(par)
	if err := e.drive(par, plan{a: x, b: x, prefix: true}, ep); err != nil {
		return ArgMax{}, err
	}
	return ep.res, nil
}

// toF32Checked returns x as one float32 slice, checking finiteness.
func toF32Checked(x Matrix) ([]float32, error) {
	out := make([]float32, x.Rows*x.Dim)
	if x.F16 != nil {
		F16ToF32(out, x.F16[:len(out)])
	} else {
		copy(out, x.F32)
	}
	if err := checkFiniteF32("input", out); err != nil {
		return nil, err
	}
	return out, nil
}

// NearestCentroid implements Backend.
func (e *CPU) NearestCentroid(x, c Matrix, metric Metric, acc *Accum) (ArgMax, error) {
	if err := checkDims(x, c, "points", "centroids"); err != nil {
		return ArgMax{}, err
	}
	if acc != nil && (acc.K != c.Rows || acc.Dim != c.Dim || len(acc.Sums) < c.Rows*c.Dim || len(acc.Counts) < c.Rows) {
		return ArgMax{}, fmt.Errorf("kernels: NearestCentroid: accumulator is %dx%d, centroids %dx%d", acc.K, acc.Dim, c.Rows, c.Dim)
	}
	par := getParallel(e.threads(), x.Dim)
	defer putParallel(par)
	cf := par.buf("centroids", c.Rows*c.Dim)
	if c.F16 != nil {
		F16ToF32(cf, c.F16[:len(cf)])
	} else {
		copy(cf, c.F32)
	}
	if err := checkFiniteF32("input", cf); err != nil {
		return ArgMax{}, fmt.Errorf("centroids: %w", err)
	}
	d := c.Dim
	var bias []float32
	switch metric {
	case L2:
		bias = make([]float32, c.Rows)
		for i := range bias {
			var s float64
			for _, v := range cf[i*d : i*d+d] {
				s += float64(v) * float64(v)
			}
			bias[i] = float32(-0.5 * s)
		}
	case Cosine:
		for i := 0; i < c.Rows; i++ {
			row := cf[i*d : i*d+d]
			var s float64
			for _, v := range row {
				s += float64(v) * float64(v)
			}
			if s > 0 {
				inv := 1 / math.Sqrt(s)
				for k := range row {
					row[k] = float32(float64(row[k]) * inv)
				}
			}
		}
	default:
		return ArgMax{}, fmt.Errorf("kernels: unknown metric %d", metric)
	}
	ep := &argmaxEp{res: newArgMax(x.Rows), bias: bias}
	if acc != nil {
		locks := make([]sync.Mutex, c.Rows)
		ep.after = func(w *worker, i0, i1 int) error {
			for i := i0; i < i1; i++ {
				c := ep.res.Idx[i]
				if c < 0 {
					continue
				}
				row := x.row(i, w.scratch)
				locks[c].Lock()
				acc.Counts[c]++
				addFixed(acc.Sums[int(c)*d:int(c)*d+d], row)
				locks[c].Unlock()
			}
			return nil
		}
	}
	if err := e.drive(par, plan{a: x, b: F32Matrix(cf, c.Rows, d)}, ep); err != nil {
		return ArgMax{}, err
	}
	return ep.res, nil
}
