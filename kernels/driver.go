package kernels

import (
	"runtime"
	"sync"
	"sync/atomic"
)

// epilogue consumes one C tile: c[(i-i0)*ldc + (j-j0)] = A_i · B_j (B
// negated when the plan says so) for i in [i0,i1), j in [j0,j1). Calls for
// one A row arrive in increasing j0 order and never concurrently. tile
// returns how many entries passed its first filter (engine 2 uses it to
// decide when to filter again).
// rowsDone(w, i0, i1) follows once rows [i0,i1) have seen all of B (it may
// run concurrently with tiles or rowsDone of other rows).
type epilogue interface {
	tile(w *worker, c []float32, ldc, i0, i1, j0, j1 int) (accepted int)
	rowsDone(w *worker, i0, i1 int) error
}

// plan describes one blocked pass C = A·Bᵀ reduced by an epilogue.
type plan struct {
	a, b      Matrix
	negB      bool // pack -B (turns max into min)
	prefix    bool // only j < i is needed (PrefixMax)
	superRows int  // A rows per super-block (0 = from aPackBytes)
}

// worker is per-goroutine scratch.
type worker struct {
	apack   []float32 // one packed A block (streaming mode)
	c       []float32 // C tile mcBlock x ncBlock
	scratch []float32 // one converted row
	cand    []int32   // epilogue candidate indices (ncBlock)
	f       *fbuf     // engine 2 scratch
}

type parallel struct {
	threads int
	workers []*worker
	d       int
	bufs    map[string][]float32 // engine-wide scratch, reused between calls (buf)
	u16     map[string][]uint16
	f64     map[string][]float64
}

// parPool recycles parallel (workers and their buffers) between calls: the
// k-means stage calls NearestCentroid once per block of points, and each
// call would otherwise allocate and clear megabytes of scratch.
var parPool sync.Pool

// getParallel returns a parallel for threads and d, recycled when possible;
// give it back with putParallel once no result refers to its buffers.
func getParallel(threads, d int) *parallel {
	if threads <= 0 {
		threads = runtime.GOMAXPROCS(0)
	}
	if v, ok := parPool.Get().(*parallel); ok && v.threads == threads && v.d == d {
		return v
	}
	return newParallel(threads, d)
}

func putParallel(p *parallel) { parPool.Put(p) }

// buf returns p's float32 scratch called name with at least n elements
// (contents undefined).
func (p *parallel) buf(name string, n int) []float32 {
	if p.bufs == nil {
		p.bufs = map[string][]float32{}
	}
	b := p.bufs[name]
	if len(b) < n {
		b = make([]float32, n)
		p.bufs[name] = b
	}
	return b[:n]
}

// buf16 is buf for uint16 scratch.
func (p *parallel) buf16(name string, n int) []uint16 {
	if p.u16 == nil {
		p.u16 = map[string][]uint16{}
	}
	b := p.u16[name]
	if len(b) < n {
		b = make([]uint16, n)
		p.u16[name] = b
	}
	return b[:n]
}

func newParallel(threads, d int) *parallel {
	if threads <= 0 {
		threads = runtime.GOMAXPROCS(0)
	}
	p := &parallel{threads: threads, d: d}
	for t := 0; t < threads; t++ {
		p.workers = append(p.workers, &worker{scratch: make([]float32, nr*d+16)})
	}
	return p
}

// run calls f(w, task) for task in [0, n) on up to p.threads goroutines and
// returns the first error.
func (p *parallel) run(n int, f func(w *worker, task int) error) error {
	if n <= 0 {
		return nil
	}
	t := min(p.threads, n)
	if t == 1 {
		for i := 0; i < n; i++ {
			if err := f(p.workers[0], i); err != nil {
				return err
			}
		}
		return nil
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make([]error, t)
	for g := 0; g < t; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				if err := f(p.workers[g], i); err != nil {
					errs[g] = err
					next.Store(int64(n))
					return
				}
			}
		}(g)
	}
	wg.Wait()
	for _, e := range errs {
		if e != nil {
			return e
		}
	}
	return nil
}

// drive is the one blocked driver every op uses:
//
//	if all of B packs into bPackBytes (streaming mode):
//	    pack B once; parallel over A blocks of mcBlock rows:
//	        pack the A block; for each B block of ncBlock rows:
//	            C tile = A block · B blockᵀ via mr x nr micro-kernels
//	            epilogue.tile(C tile)
//	        epilogue.rowsDone(A block)
//	else, for each A super-block S (packed once):
//	    for each B block of ncBlock rows (packed once per S, shared):
//	        parallel over A blocks of S: C tile, epilogue.tile
//	    parallel over A blocks of S: epilogue.rowsDone
func drive(p *parallel, pl plan, ep epilogue) error {
	a, b := pl.a, pl.b
	m, n, d := a.Rows, b.Rows, a.Dim
	if m == 0 {
		// no tiles: still reject non-finite B
		_, err := toF32Checked(b)
		return err
	}
	super := pl.superRows
	if super <= 0 {
		super = aPackBytes / max(1, 4*d)
	}
	super = max(mcBlock, super/mcBlock*mcBlock)
	super = min(super, (m+mcBlock-1)/mcBlock*mcBlock)
	// B is packed once for all super-blocks when it is small (k-means
	// centroids), else one ncBlock block at a time per super-block.
	nPad := (n + nr - 1) / nr * nr
	bOnce := nPad*d*4 <= bPackBytes
	nb := min(n, ncBlock)
	nb = (nb + nr - 1) / nr * nr
	if bOnce {
		nb = nPad
	}
	bpack := make([]float32, nb*d)
	packB := func(j0, j1 int, dst []float32) error {
		nPanels := (j1 - j0 + nr - 1) / nr
		const panelsPerTask = 4
		return p.run((nPanels+panelsPerTask-1)/panelsPerTask, func(w *worker, t int) error {
			r0 := j0 + t*panelsPerTask*nr
			r1 := min(j1, r0+panelsPerTask*nr)
			return packRows(dst[t*panelsPerTask*nr*d:], b, r0, r1, nr, pl.negB, w.scratch)
		})
	}
	for _, w := range p.workers {
		if len(w.c) < mcBlock*ncBlock {
			w.c = make([]float32, mcBlock*ncBlock)
			w.cand = make([]int32, ncBlock)
		}
	}
	ldc := ncBlock
	// macro runs the micro-kernels of one A block against one B block and
	// hands the tile to the epilogue.
	macro := func(w *worker, ap, bblk []float32, i0, i1, j0, j1 int) {
		nPanels := (j1 - j0 + nr - 1) / nr
		mp := (i1 - i0 + mr - 1) / mr
		for q := 0; q < nPanels; q++ {
			bp := bblk[q*nr*d : (q+1)*nr*d]
			for r := 0; r < mp; r++ {
				if pl.prefix && j0+q*nr >= i0+r*mr+mr-1 {
					continue // all j >= all i of this panel
				}
				microKernel(d, ap[r*mr*d:(r+1)*mr*d], bp, w.c[r*mr*ldc+q*nr:], ldc, false)
			}
		}
		ep.tile(w, w.c, ldc, i0, i1, j0, j1)
	}
	if bOnce {
		// Streaming: B is packed once; every A block is packed, run
		// against all of B and finished by one worker, no barriers.
		if err := packB(0, n, bpack); err != nil {
			return err
		}
		return p.run((m+mcBlock-1)/mcBlock, func(w *worker, blk int) error {
			i0 := blk * mcBlock
			i1 := min(m, i0+mcBlock)
			if len(w.apack) < mcBlock*d {
				w.apack = make([]float32, mcBlock*d)
			}
			if err := packRows(w.apack, a, i0, i1, mr, false, w.scratch); err != nil {
				return err
			}
			jEnd := n
			if pl.prefix {
				jEnd = min(n, i1-1)
			}
			for j0 := 0; j0 < jEnd; j0 += ncBlock {
				j1 := min(jEnd, j0+ncBlock)
				macro(w, w.apack, bpack[j0*d:], i0, i1, j0, j1)
			}
			return ep.rowsDone(w, i0, i1)
		})
	}
	apack := make([]float32, super*d)
	for s0 := 0; s0 < m; s0 += super {
		s1 := min(m, s0+super)
		nA := (s1 - s0 + mcBlock - 1) / mcBlock
		err := p.run(nA, func(w *worker, blk int) error {
			i0 := s0 + blk*mcBlock
			i1 := min(s1, i0+mcBlock)
			return packRows(apack[blk*mcBlock*d:], a, i0, i1, mr, false, w.scratch)
		})
		if err != nil {
			return err
		}
		jEnd := n
		if pl.prefix {
			jEnd = min(n, s1-1)
		}
		for j0 := 0; j0 < jEnd; j0 += ncBlock {
			j1 := min(jEnd, j0+ncBlock)
			if err := packB(j0, j1, bpack); err != nil {
				return err
			}
			err := p.run(nA, func(w *worker, blk int) error {
				i0 := s0 + blk*mcBlock
				i1 := min(s1, i0+mcBlock)
				if pl.prefix && i1-1 <= j0 {
					return nil
				}
				macro(w, apack[blk*mcBlock*d:], bpack, i0, i1, j0, j1)
				return nil
			})
			if err != nil {
				return err
			}
		}
		err = p.run(nA, func(w *worker, blk int) error {
			i0 := s0 + blk*mcBlock
			return ep.rowsDone(w, i0, min(s1, i0+mcBlock))
		})
		if err != nil {
			return err
		}
	}
	return nil
}
