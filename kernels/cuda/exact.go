package cuda

import (
	"math"
	"os"

	"hpcrun/kernels"
)

// The exact filter (exact.cu): the argmax ops on the tensor cores with
// exactly the results of version 1 and of the CPU backend. It applies when
// Backend.Filter is set (or FilterEnv=1), Precision is Exact, and the
// streamed rows (base rows for MaxArg/ShiftedMax, points, PrefixMax's x) are
// float16 — the pipeline's case: clip-retrieval embeddings are float16,
// centroids and eval sets float32. Per chunk the tensor cores compute every
// pair approximately on float16 rows (B rounded) and append, per row, the
// entries within the band width w of the running best; rescore_argmax
// recomputes those exactly (version 1's FMA chain, then scale and bias) and
// keeps the largest exact key. Rows with more candidates than slots, and
// every row when B cannot be rounded to float16 or no tensor-core version
// is available, are recomputed exactly against every B row (rescore_rows).
//
// The band width bounds twice the difference between an exact value v and
// its approximation v̂, for every pair of the chunk: with a an A row
// (float16, exact), b a B row, b̃ its float16 rounding, σ its scale (1 when
// none), β its bias, u = 2⁻²⁴, γ(n) = n·u/(1-n·u), s the float32 FMA chain
// and ŝ the tensor-core value of a·b̃:
//
//	|s - a·b|  <= γ(ld)·‖a‖‖b‖              (one rounding per FMA)
//	|a·b - a·b̃| <= ‖a‖·‖b - b̃‖               (Cauchy–Schwarz)
//	|a·b̃ - ŝ|  <= (ld+8)·2⁻²²·‖a‖‖b̃‖         (tensor-core sums: 8 times doc.go's
//	                                          (ld/8+1)·2⁻²² after Fasi et al.)
//
// so |s - ŝ|·σ <= ‖a‖·k1' with k1' = max_j σ_j·(γ‖b_j‖ + ‖b_j - b̃_j‖ +
// (ld+8)2⁻²²‖b̃_j‖), and the float32 roundings of ·σ and +β in both values
// add at most 2⁻²²‖a‖N + 2⁻²³max|β| (N = max σ_j(‖b_j‖ + its bound)); the
// host doubles those: E = ‖a‖·k1 + k2, k1 = k1' + 2⁻²¹N, k2 = 2⁻²¹max|β|
// (+ 2⁻¹⁰⁰ for underflow), computed in float64 and rounded up, and
// band_width takes w = 2·max E over the chunk's rows (their norms on the
// device), rounded up.

// FilterEnv names the environment variable that, set to 1, turns the exact
// filter on for a new Backend (Backend.Filter); runtime.gpu_filter in a
// config does the same.
const FilterEnv = "HPCRUN_CUDA_FILTER"

func filterFromEnv() bool {
	v := os.Getenv(FilterEnv)
	return v != "" && v != "0"
}

// filtering reports whether float16 rows against float32 (or float16) ones
// take the exact filter: Filter, Precision Exact, and a tensor-core
// version (Version 1 or 6 asks for the FFMA kernels everywhere).
func (e *Backend) filtering() bool {
	v := e.version(layout{f16: true})
	return e.Filter && e.Precision == Exact && tensorCores(v)
}

// bandApplies: argmax job j in layout l takes the filter when it is on and
// its A rows are float16, or when they are a Kept set in float16 (kept
// while the filter was on) against float32 B rows, which only the filter's
// kernels can pair exactly.
func (e *Backend) bandApplies(j argmaxJob, l layout) bool {
	if j.aDev != 0 {
		return l.f16 && l.parts <= 1 && (e.filtering() || j.b.F16 == nil)
	}
	return e.filtering() && j.a.F16 != nil
}

// bandBound returns k1, k2 of the band width for B rows b (exact values)
// with their scale and bias, and ok = false when b cannot be rounded to
// float16 or the bound is not finite (then every row is rescored exactly).
func bandBound(b kernels.Matrix, scale, bias []float32, ld int) (k1, k2 float64, ok bool) {
	d := b.Dim
	const u = 0x1p-24
	gamma := float64(ld) * u / (1 - float64(ld)*u)
	ctc := float64(ld+8) * 0x1p-22
	row := make([]float32, d)
	h := make([]uint16, d)
	rt := make([]float32, d)
	var maxBS, maxN, maxBias, maxS float64
	for r := 0; r < b.Rows; r++ {
		if b.F16 != nil {
			kernels.F16ToF32(row, b.F16[r*d:(r+1)*d])
			copy(rt, row)
		} else {
			copy(row, b.F32[r*d:(r+1)*d])
			if roundRow(h, row, "B", r, Float16) != nil {
				return 0, 0, false
			}
			kernels.F16ToF32(rt, h)
		}
		var nb, db, nt float64
		for k, x := range row {
			y := float64(rt[k])
			nb += float64(x) * float64(x)
			nt += y * y
			db += (float64(x) - y) * (float64(x) - y)
		}
		nb, db, nt = math.Sqrt(nb), math.Sqrt(db), math.Sqrt(nt)
		s := 1.0
		if scale != nil {
			s = math.Abs(float64(scale[r]))
		}
		beta := gamma*nb + db + ctc*nt
		maxBS = max(maxBS, beta*s)
		maxN = max(maxN, (nb+beta)*s)
		maxS = max(maxS, s)
		if bias != nil {
			maxBias = max(maxBias, math.Abs(float64(bias[r])))
		}
	}
	k1 = (maxBS + 0x1p-21*maxN) * (1 + 0x1p-10)
	k2 = (0x1p-21*maxBias + 0x1p-100*max(1, maxS)) * (1 + 0x1p-10)
	ok = !math.IsInf(k1, 0) && !math.IsInf(k2, 0) && !math.IsNaN(k1+k2)
	return k1, k2, ok
}

// argmaxBand is argmax (ops.go) through the exact filter.
func (e *Backend) argmaxBand(j argmaxJob) (kernels.ArgMax, error) {
	res := newArgMax(j.a.Rows)
	d := j.b.Dim
	l := layoutOf(d) // float16 A and (rounded) B: the band kernels' layout
	rb := l.rowBytes()
	k1, k2, ok := bandBound(j.b, j.scale, j.bias, l.ld)
	v := e.bandVersion(l)
	approx := ok && tensorCores(v)

	// B twice when float32: exact (float32) for the rescoring, rounded for
	// the tensor cores; a float16 B serves both
	flags := int64(0)
	if j.prefix {
		flags |= rsPrefix
	}
	var bd, bx dptr
	var err error
	if j.b.F16 == nil {
		flags |= rsBF32
		if bx, err = e.upload(j.b, layoutOf(d, j.b), false, j.bName); err != nil {
			return res, err
		}
		defer e.dev.free(bx)
		if approx {
			if bd, err = e.upload(j.b, l.forRole(1), false, j.bName); err != nil {
				return res, err
			}
			defer e.dev.free(bd)
		}
	} else {
		if bd, err = e.upload(j.b, l.forRole(1), false, j.bName); err != nil {
			return res, err
		}
		defer e.dev.free(bd)
		bx = bd
	}
	scale, bias, err := e.scaleBias(j)
	if err != nil {
		return res, err
	}
	defer e.dev.free(scale)
	defer e.dev.free(bias)
	rows := e.chunkRows(l, j.a.Rows)
	capacity := max(1, e.tun.bandCap)
	var best, count, keys, w, over dptr
	for _, a := range []struct {
		p     *dptr
		bytes int
	}{{&best, 8 * rows}, {&count, 4 * rows}, {&keys, 8 * rows * capacity}, {&w, 4}, {&over, 4 * (1 + rows)}} {
		if *a.p, err = e.dev.alloc(a.bytes); err != nil {
			return res, err
		}
		defer e.dev.free(*a.p)
	}
	_, tb := tiles(v)
	slice := e.tun.maxGridY * tb
	kname := kernelName("band", v, l)
	if j.prefix {
		kname = kernelName("bandprefix", v, l)
	}
	keysOut := make([]uint64, rows)
	var nOver [1]uint32
	err = e.chunks(j, l, func(buf dptr, r0, r1 int) error {
		n := r1 - r0
		nb := j.b.Rows
		if j.prefix {
			nb = min(nb, r1) // rows i < r1 only see j < r1
		}
		rs := rescoreArgs{A: buf, B: bx, NA: int64(n), NB: int64(nb), LD: int64(l.ld), AOff: int64(r0),
			Scale: scale, Bias: bias, Best: best, Count: count, Keys: keys, Cap: int64(capacity),
			W: w, Over: over, Flags: flags, K1: k1, K2: k2}
		for _, m := range []struct {
			p dptr
			n int
		}{{best, 2 * n}, {count, n}, {w, 1}, {over, 1}} {
			if err := e.dev.memsetD32(m.p, 0, m.n, e.compute); err != nil {
				return err
			}
		}
		launch := func(name string, grid int, a []uint64) error {
			e.stats.launches++
			return e.dev.launch(name, [3]int{grid, 1, 1}, [3]int{threads, 1, 1}, e.compute, a)
		}
		if !approx {
			// every row exactly against every B row
			all := rs
			all.Flags |= rsAll
			e.stats.bandExactRows += n
			if err := launch("rescore_rows", max(1, min(n, e.tun.bandRowBlocks)), words(&all)); err != nil {
				return err
			}
		} else {
			if err := launch("band_width", ceilDiv(n, threads), words(&rs)); err != nil {
				return err
			}
			for j0 := 0; j0 < nb; j0 += slice {
				j1 := min(nb, j0+slice)
				a := simArgs{A: buf, B: bd + dptr(j0*rb), NA: int64(n), NB: int64(j1 - j0), LD: int64(l.ld),
					AOff: int64(r0), BOff: int64(j0), Best: best, Thr: w, Count: count, Keys: keys, Cap: int64(capacity)}
				if scale != 0 {
					a.Scale = scale + dptr(4*j0)
				}
				if bias != 0 {
					a.Bias = bias + dptr(4*j0)
				}
				e.stats.launches++
				if err := e.launchSim(kname, v, &a); err != nil {
					return err
				}
			}
			if err := launch("rescore_argmax", ceilDiv(n, threads), words(&rs)); err != nil {
				return err
			}
			if err := launch("rescore_rows", max(1, min(n, e.tun.bandRowBlocks)), words(&rs)); err != nil {
				return err
			}
		}
		if e.tun.profile && approx {
			cnt := make([]uint32, n)
			if err := e.dev.d2h(bytesOf(cnt), count, e.compute); err != nil {
				return err
			}
			if err := e.dev.sync(e.compute); err != nil {
				return err
			}
			for _, c := range cnt {
				e.stats.bandCandidates += int(c)
			}
			e.stats.bandRows += n
		}
		if j.after != nil {
			if err := j.after(buf, best, r0, r1); err != nil {
				return err
			}
		}
		if err := e.dev.d2h(bytesOf(keysOut[:n]), best, e.compute); err != nil {
			return err
		}
		if err := e.dev.d2h(bytesOf(nOver[:]), over, e.compute); err != nil {
			return err
		}
		if err := e.dev.sync(e.compute); err != nil {
			return err
		}
		e.stats.bandExactRows += int(nOver[0])
		for i, key := range keysOut[:n] {
			if key != 0 {
				res.Val[r0+i], res.Idx[r0+i] = keyValue(key), int32(keyIndex(key))
			}
		}
		return nil
	})
	return res, err
}

// topkFactors returns, per query row of q, e_i with |s - ŝ| <= e_i·‖b‖ for
// every float16 base row b (s: the FMA chain on the exact query, ŝ: the
// tensor cores on its float16 rounding q̃): γ(ld)‖q‖ + ‖q - q̃‖ + (ld+8)·2⁻²²‖q̃‖,
// rounded up; ok = false when a query cannot be rounded to float16.
func topkFactors(q kernels.Matrix, threads int) ([]float32, bool) {
	d := q.Dim
	ld := (d + 31) / 32 * 32
	const u = 0x1p-24
	gamma := float64(ld) * u / (1 - float64(ld)*u)
	ctc := float64(ld+8) * 0x1p-22
	eq := make([]float32, q.Rows)
	err := parallelFor(q.Rows, threads, func(lo, hi int) error {
		row := make([]float32, d)
		h := make([]uint16, d)
		rt := make([]float32, d)
		for r := lo; r < hi; r++ {
			if q.F16 != nil {
				kernels.F16ToF32(row, q.F16[r*d:(r+1)*d])
				copy(rt, row)
			} else {
				copy(row, q.F32[r*d:(r+1)*d])
				if err := roundRow(h, row, "queries", r, Float16); err != nil {
					return err
				}
				kernels.F16ToF32(rt, h)
			}
			var nx, dx, nt float64
			for k, x := range row {
				y := float64(rt[k])
				nx += float64(x) * float64(x)
				nt += y * y
				dx += (float64(x) - y) * (float64(x) - y)
			}
			e := (gamma*math.Sqrt(nx) + math.Sqrt(dx) + ctc*math.Sqrt(nt)) * (1 + 0x1p-10)
			eq[r] = float32(e+0x1p-100) * (1 + 0x1p-20)
		}
		return nil
	})
	return eq, err == nil
}

// topkFilter is one TopK query block's exact filter state: the exact query
// rows, the per-query factors and thresholds, and the device arguments of
// topk_filter_thr / topk_rescore.
type topkFilter struct {
	e    *Backend
	a    topkFilterArgs
	nq   int
	bufs []dptr
}

func (e *Backend) newTopkFilter(q kernels.Matrix, q0, q1 int, t topkPlan, thr, count, keys, qd dptr) (*topkFilter, error) {
	f := &topkFilter{e: e, nq: q1 - q0}
	f.a = topkFilterArgs{Q: qd, NQ: int64(q1 - q0), LD: int64(t.l.ld), Thr: thr, Count: count, Keys: keys, Cap: int64(t.cap)}
	ok := false
	defer func() {
		if !ok {
			f.free()
		}
	}()
	if q.F16 == nil {
		// the exact rows: float32 (the float16 upload holds the rounded ones)
		x, err := e.upload(subRows(q, q0, q1), layoutOf(q.Dim, q), t.opt.Smallest, "queries")
		if err != nil {
			return nil, err
		}
		f.bufs = append(f.bufs, x)
		f.a.Q, f.a.Flags = x, tfQF32
	}
	for _, p := range []struct {
		p     *dptr
		bytes int
	}{{&f.a.ThrF, 4 * f.nq}, {&f.a.Before, 4 * f.nq}, {&f.a.BNorm, 4}} {
		b, err := e.dev.alloc(p.bytes)
		if err != nil {
			return nil, err
		}
		f.bufs = append(f.bufs, b)
		*p.p = b
	}
	ed, err := e.uploadF32(t.eq[q0:q1])
	if err != nil {
		return nil, err
	}
	f.bufs = append(f.bufs, ed)
	f.a.E = ed
	ok = true
	return f, nil
}

func (f *topkFilter) free() {
	for _, b := range f.bufs {
		f.e.dev.free(b)
	}
	f.bufs = nil
}

// chunk bounds the norms of a base chunk's n rows, numbered from off
// (band_width with k1 = 1/2), and points the rescoring at its buffer.
func (f *topkFilter) chunk(buf dptr, off int64, n int) error {
	e := f.e
	if err := e.dev.memsetD32(f.a.BNorm, 0, 1, e.compute); err != nil {
		return err
	}
	f.a.B, f.a.BOff = buf, off
	r := rescoreArgs{A: buf, NA: int64(n), LD: f.a.LD, W: f.a.BNorm, K1: 0.5}
	e.stats.launches++
	return e.dev.launch("band_width", [3]int{ceilDiv(n, threads), 1, 1}, [3]int{threads, 1, 1}, e.compute, words(&r))
}

// thresholds lowers every query's exact threshold by its error bound.
func (f *topkFilter) thresholds() error {
	e := f.e
	e.stats.launches++
	return e.dev.launch("topk_filter_thr", [3]int{ceilDiv(f.nq, threads), 1, 1}, [3]int{threads, 1, 1}, e.compute, words(&f.a))
}

// rescore gives the slots from before[i] on (this range's) exact values.
func (f *topkFilter) rescore(before []uint32) error {
	e := f.e
	if err := e.dev.h2d(f.a.Before, bytesOf(before), e.compute); err != nil {
		return err
	}
	if err := e.dev.sync(e.compute); err != nil { // before changes after the next select
		return err
	}
	e.stats.launches++
	return e.dev.launch("topk_rescore", [3]int{f.nq, 1, 1}, [3]int{threads, 1, 1}, e.compute, words(&f.a))
}
