package kernels

// Engine 2: an AMX-BF16 filter in front of the exact float32 kernels.
//
// Every op reduces C = A·Bᵀ to a few entries per row (the k best, the
// maximum). Engine 2 computes each mcAMX x ncBlock tile of C approximately
// on the AMX unit (kern4 amxTile: operands rounded to bf16, products summed
// in float32; ~1.4-2 TFLOP/s per core here against 0.236 for float32 FMA),
// bounds the error of every entry rigorously, and recomputes exactly, with
// the very FMA chain of the micro-kernels (refine1-4), only the entries
// whose bound says they could still matter. Results are therefore
// bit-identical to engine 1 (drive, driver.go): the epilogues see the
// same float32 values for every candidate that can affect the result, and
// the final selection uses exact values only. A tile where too many
// entries survive (TopK while its thresholds are still low) is recomputed
// by the exact micro-kernels instead, and that A block stays exact until
// few candidates pass again (fepilogue.divs).
//
// Error bound. For rows a (of A) and b (of B) with bf16 roundings ã, b̃
// (subnormal results flushed to zero, as AMX reads them), s = the float32
// FMA chain Σ a_k b_k and ŝ = the AMX value:
//
//	|s - a·b|  <= γ(d)·‖a‖‖b‖                 (one rounding per FMA)
//	|a·b - ã·b̃| <= ‖a‖‖b-b̃‖ + ‖a-ã‖‖b̃‖          (Cauchy–Schwarz)
//	|ã·b̃ - ŝ|  <= γ(2·dpad)·‖ã‖‖b̃‖ + flushes   (float32 accumulation, FTZ)
//
// with γ(n) = n·2⁻²⁴/(1-n·2⁻²⁴). Norms are per-row upper bounds from the
// conversion (bf16Row); the B terms use the maximum over the B block, and
// 2⁻⁹⁰ covers flushed subnormal products. Every float32 comparison made on
// approximate values gets a further relative slack of 2⁻²⁰ of the
// magnitudes involved, far above its rounding error. Rows whose norm
// exceeds amxMaxNorm (or is not finite) are never filtered.
//
// How the epilogues use it (topk.go, ops.go):
//
//	TopK    epilogue 2 (topkEp2): interval reservoirs; approximate entries
//	        enter as [x-e, x+e], are pruned against the k-th largest lower
//	        bound, and only the ~k·1.8 left at the end are rescored
//	argmax  (MaxArg, ShiftedMax, NearestCentroid, PrefixMax) a running
//	        per-row lower bound of the maximum; entries whose upper bound
//	        reaches it are rescored once per A block (streaming mode) or
//	        per tile
//
// Versions of the pieces (numbered with the rest of the package; older
// versions stay as baselines, each checked against its plain-Go twin):
//
//	kern4   amxTile     AMX 2x2 tiles of 16x16, K step 32, B pair outer; A tiled (1 KiB per tile load)
//	pack3   bf16Row     float32 -> bf16 rows (RNE, FTZ) with lane sums of squares; vnniPack (gathers)
//	refine1 dotGather   exact FMA chains of 16 pairs per zmm, both operands gathered (baseline)
//	refine2 dotGather1  one A row broadcast, B gathered, next batch prefetched (baseline)
//	refine3 dotT        16 A and 16 B row pieces transposed in registers (argmax epilogues)
//	refine4 dotT1       one A row broadcast, 16 B row pieces transposed (TopK epilogue 2)
//	filter1 filterTile  per-row threshold over a whole tile (VCMPPS + VPCOMPRESSD); maxTile
//
// The plain-Go twins below (amxTileGo, bf16RowGo, vnniPackGo, dotGatherGo,
// dotGather1Go, filterTileGo, maxTileGo, fma32) define each piece; tests
// hold the assembly to them (fma32 itself to big.Float), and engine 2 to
// engine 1, bit for bit, on every op. Benchmarks: BenchmarkAMXTile,
// BenchmarkRescore (amxbench_test.go).

import (
	"fmt"
	"math"
	"os"
	"sync"
	"sync/atomic"
)

// amxCount counts engine 2's tiles by outcome: approximate tiles that
// were filtered, approximate tiles that turned out dense (recomputed), and
// exact tiles; entries rescored; and early resolutions of near-ties (a
// TopK reservoir or an argmax pending list past its bound). For tests and
// benchmarks.
var amxCount struct{ filtered, dense, exact, rescored, resolved atomic.Int64 }

// amxCfg is the tile configuration (palette 1): tmm0-7 all 16 rows of 64
// bytes (C: 16x16 float32; A: 16x32 bf16; B: 16x16 bf16 pairs).
var amxCfg = func() (c [64]byte) {
	c[0] = 1
	for t := 0; t < 8; t++ {
		c[16+2*t] = 64
		c[48+t] = 16
	}
	return
}()

// amxAllowedByEnv: HPCRUN_NO_AMX=1 turns the filter off for the whole
// process (results are the same; for benchmarks and debugging).
// noAVX512ByEnv: HPCRUN_NO_AVX512=1 runs the AVX2 paths (kern5) on an
// AVX-512 CPU, to test and measure them; AMX needs AVX-512, so it goes too.
func noAVX512ByEnv() bool {
	v := os.Getenv("HPCRUN_NO_AVX512")
	return v != "" && v != "0"
}

func amxAllowedByEnv() bool {
	v := os.Getenv("HPCRUN_NO_AMX")
	return v == "" || v == "0"
}

// ---------------------------------------------------------------- plain-Go twins

// fma32 returns a·b + c rounded once to float32 (nearest even), as
// VFMADD231PS computes it. a·b is exact in float64, so r = p + c is the
// exact sum rounded once to float64; rounding r on to float32 gives the
// single rounding unless r sits exactly on a float32 midpoint (the low 29
// mantissa bits 1<<28: the first rounding may have moved the sum there) or
// below float32's normal range (more bits drop there). Only those rare
// sums take the slow path: TwoSum makes the float64 sum exact and rounds
// it to odd before the final rounding.
func fma32(a, b, c float32) float32 {
	p := float64(a) * float64(b) // exact
	cc := float64(c)
	r := p + cc
	if u := math.Float64bits(r); u&(1<<29-1) != 1<<28 && u<<1 >= (1023-126)<<53 {
		return float32(r)
	}
	return fma32Slow(p, cc, r)
}

func fma32Slow(p, cc, r float64) float32 {
	bb := r - p
	e := (p - (r - bb)) + (cc - bb)
	if e != 0 && math.Float64bits(r)&1 == 0 {
		r = math.Nextafter(r, math.Copysign(math.Inf(1), e))
	}
	return float32(r)
}

// bf16Bits rounds x to bf16 (nearest even) and flushes bf16 subnormals to
// zero; it returns the rounded value's float32 bits. x must be finite.
func bf16Bits(x float32) uint32 {
	u := math.Float32bits(x)
	r := (u + 0x7fff + (u>>16)&1) & 0xffff0000
	if r&0x7f800000 == 0 {
		r = 0
	}
	return r
}

// bf16RowGo: value j of the row, bf16(±src[j]) for j < len(src) and 0 up
// to npad (a multiple of 32), goes to dst[(j/32)·cstride + j%32]; per lane
// l = j%16 float32 FMA sums of x², x̃², (x-x̃)² in sums[l], sums[16+l],
// sums[32+l].
func bf16RowGo(dst []uint16, src []float32, npad, cstride int, neg bool, sums *[48]float32) {
	*sums = [48]float32{}
	for j := 0; j < npad; j++ {
		var x float32
		if j < len(src) {
			x = src[j]
			if neg {
				x = -x
			}
		}
		r := bf16Bits(x)
		xt := math.Float32frombits(r)
		dl := x - xt
		l := j % 16
		sums[l] = fma32(x, x, sums[l])
		sums[16+l] = fma32(xt, xt, sums[16+l])
		sums[32+l] = fma32(dl, dl, sums[32+l])
		dst[j/32*cstride+j%32] = uint16(r >> 16)
	}
}

// vnniPackGo packs 32·np rows of row-major bf16 (ld values per row, 32·ks
// columns) into the AMX B-tile layout: for 32-row pair p, k step s, half h,
// tile row r and column n, the bf16 pair (src[row][s·32+2r], src[row][s·32+2r+1])
// of row = p·32+h·16+n goes to dword ((p·ks+s)·2+h)·256 + r·16 + n.
func vnniPackGo(dst, src []uint16, ld, np, ks int) {
	for p := 0; p < np; p++ {
		for s := 0; s < ks; s++ {
			for h := 0; h < 2; h++ {
				for r := 0; r < 16; r++ {
					for n := 0; n < 16; n++ {
						row := p*32 + h*16 + n
						o := 2 * ((((p*ks+s)*2+h)*256 + r*16) + n)
						dst[o] = src[row*ld+s*32+2*r]
						dst[o+1] = src[row*ld+s*32+2*r+1]
					}
				}
			}
		}
	}
}

func bf16Value(h uint16) float64 { return float64(math.Float32frombits(uint32(h) << 16)) }

// tiledIndex is the position of value k of row i in the tiled bf16 layout
// of amxTile's A operand (ks k steps of 32 per row): per 32-row block and
// k step a 16x32 tile of rows 0-15 then one of rows 16-31.
func tiledIndex(i, k, ks int) int {
	return ((i/32*ks+k/32)*2+(i/16)%2)*512 + (i%16)*32 + k%32
}

// amxTileGo: c[i·ldc+j] ≈ Σ_k A[i][k]·B[j][k] for i < 32·mb, j < 32·np,
// k < 32·ks, A tiled (tiledIndex), B as packed by vnniPackGo (bf16
// values; the sum here is float64, the AMX unit's is float32 in its own
// order).
func amxTileGo(a []uint16, b []uint16, c []float32, ldc int, mb, np, ks int) {
	for i := 0; i < 32*mb; i++ {
		for j := 0; j < 32*np; j++ {
			p, h, n := j/32, (j%32)/16, j%16
			var s float64
			for k := 0; k < 32*ks; k++ {
				st, r, e := k/32, (k%32)/2, k%2
				bv := b[2*((((p*ks+st)*2+h)*256+r*16)+n)+e]
				s += bf16Value(a[tiledIndex(i, k, ks)]) * bf16Value(bv)
			}
			c[i*ldc+j] = float32(s)
		}
	}
}

// dotGatherGo: out[l] = the float32 FMA chain over k < d of
// a[offa[l]+k·sa]·b[offb[l]+k·sb], starting from 0.
func dotGatherGo(a []float32, offa []int32, sa int, b []float32, offb []int32, sb int, d int, out []float32) {
	for l := range offa {
		var s float32
		pa, pb := int(offa[l]), int(offb[l])
		for k := 0; k < d; k++ {
			s = fma32(a[pa+k*sa], b[pb+k*sb], s)
		}
		out[l] = s
	}
}

// dotGather1Go: out[l] = the float32 FMA chain over k < d of
// a[k·sa]·b[offb[l]+k·sb], starting from 0.
func dotGather1Go(a []float32, sa int, b []float32, offb []int32, sb int, d int, out []float32) {
	for l := range offb {
		var s float32
		pb := int(offb[l])
		for k := 0; k < d; k++ {
			s = fma32(a[k*sa], b[pb+k*sb], s)
		}
		out[l] = s
	}
}

// filterTileGo appends i<<16 | j for every i < rows, j < n with
// c[i·ldc+j] + bias[j] > thr[i] (bias may be nil), row-major; it returns
// max+1 as soon as more than max pairs pass, else their count.
func filterTileGo(c []float32, ldc, rows, n int, bias, thr []float32, out []int32, max int) int {
	cnt := 0
	for i := 0; i < rows; i++ {
		for j := 0; j < n; j++ {
			x := c[i*ldc+j]
			if bias != nil {
				x += bias[j]
			}
			if x > thr[i] {
				if cnt == max {
					return max + 1
				}
				out[cnt] = int32(i<<16 | j)
				cnt++
			}
		}
	}
	return cnt
}

// maxTileGo: out[i] = max over j < n of c[i·ldc+j] + bias[j].
func maxTileGo(c []float32, ldc, rows, n int, bias []float32, out []float32) {
	for i := 0; i < rows; i++ {
		m := float32(math.Inf(-1))
		for j := 0; j < n; j++ {
			x := c[i*ldc+j]
			if bias != nil {
				x += bias[j]
			}
			m = max(m, x)
		}
		out[i] = m
	}
}

// ---------------------------------------------------------------- bounds

// gamma is γ(n) = n·u/(1-n·u), u = 2⁻²⁴.
func gamma(n int) float64 {
	nu := float64(n) * 0x1p-24
	return nu / (1 - nu)
}

// normBound turns the float32 lane sums of squares of one row (total s)
// into an upper bound of the norm: each lane summed ⌈dpad/16⌉ terms with
// one rounding each, and squares below 2⁻¹²⁶ may have underflowed.
func normBound(s float64, dpad int) float64 {
	return math.Sqrt(s*(1+gamma(dpad/16+2))+float64(dpad)*0x1p-126) * (1 + 0x1p-40)
}

// roundDown32 returns the largest float32 <= v.
func roundDown32(v float64) float32 {
	f := float32(v)
	if float64(f) > v {
		f = math.Nextafter32(f, float32(math.Inf(-1)))
	}
	return f
}

// bfRows is a bf16 copy of some rows with per-row norm bounds, row-major
// (ld values per row) or tiled (tiledIndex: amxTile's A operand; rows a
// multiple of 32).
type bfRows struct {
	ld             int // values per row: the dimension padded to a multiple of 32
	tiled          bool
	data           []uint16
	nrm, tnrm, dlt []float64 // ‖x‖, ‖x̃‖, ‖x-x̃‖ (upper bounds)
}

func newBFRows(rows, d int, tiled bool) *bfRows {
	ld := (d + 31) &^ 31
	rows = (rows + 31) &^ 31
	return &bfRows{ld: ld, tiled: tiled, data: make([]uint16, rows*ld),
		nrm: make([]float64, rows), tnrm: make([]float64, rows), dlt: make([]float64, rows)}
}

// at returns row o's first value and the distance between its 32-value
// chunks.
func (b *bfRows) at(o int) (dst []uint16, cstride int) {
	if b.tiled {
		return b.data[tiledIndex(o, 0, b.ld/32):], 1024
	}
	return b.data[o*b.ld:], 32
}

// block returns the data from row o on (o a multiple of 32 when tiled:
// tiled 32-row blocks are contiguous too).
func (b *bfRows) block(o int) []uint16 { return b.data[o*b.ld:] }

// convert writes rows [r0, r1) of m (negated when neg) as rows o0.. of b;
// it reports whether every row is finite and small enough to filter.
// scratch must hold m.Dim floats.
// When fl is not nil, the float32 rows (not negated) are also copied to
// fl[(r-r0)·d:].
func (b *bfRows) convert(o0 int, m Matrix, r0, r1 int, neg bool, scratch []float32, fl []float32) bool {
	ok := true
	var sums [48]float32
	d := m.Dim
	for r := r0; r < r1; r++ {
		o := o0 + r - r0
		row := m.row(r, scratch)
		if fl != nil {
			copy(fl[(r-r0)*d:(r-r0+1)*d], row)
		}
		dst, cs := b.at(o)
		bf16RowS(dst, row, b.ld, cs, neg, &sums)
		var sx, st, sd float64
		for l := 0; l < 16; l++ {
			sx += float64(sums[l])
			st += float64(sums[16+l])
			sd += float64(sums[32+l])
		}
		b.nrm[o], b.tnrm[o], b.dlt[o] = normBound(sx, b.ld), normBound(st, b.ld), normBound(sd, b.ld)
		if !(b.nrm[o] < amxMaxNorm && b.tnrm[o] < amxMaxNorm) {
			ok = false
		}
	}
	return ok
}

// zeroRows clears rows [o0, o1) (padding of a partial block).
func (b *bfRows) zeroRows(o0, o1 int) {
	var sums [48]float32
	for o := o0; o < o1; o++ {
		dst, cs := b.at(o)
		bf16RowS(dst, nil, b.ld, cs, false, &sums)
	}
}

// bfRows returns p's bfRows scratch called name for rows x d (reused
// between calls; contents undefined).
func (p *parallel) bfRows(name string, rows, d int, tiled bool) *bfRows {
	ld := (d + 31) &^ 31
	rows = (rows + 31) &^ 31
	return &bfRows{ld: ld, tiled: tiled, data: p.buf16(name, rows*ld),
		nrm: p.buf64(name+".nrm", rows), tnrm: p.buf64(name+".tnrm", rows), dlt: p.buf64(name+".dlt", rows)}
}

// buf64 is buf for float64 scratch.
func (p *parallel) buf64(name string, n int) []float64 {
	if p.f64 == nil {
		p.f64 = map[string][]float64{}
	}
	b := p.f64[name]
	if len(b) < n {
		b = make([]float64, n)
		p.f64[name] = b
	}
	return b[:n]
}

// bStats are the B-side maxima of one ncBlock block.
type bStats struct {
	nrm, tnrm, dlt float64
	ok             bool
}

func (b *bfRows) stats(o0, o1 int, ok bool) bStats {
	s := bStats{ok: ok}
	for o := o0; o < o1; o++ {
		s.nrm = max(s.nrm, b.nrm[o])
		s.tnrm = max(s.tnrm, b.tnrm[o])
		s.dlt = max(s.dlt, b.dlt[o])
	}
	return s
}

// ---------------------------------------------------------------- epilogue contract

// fepilogue is an epilogue that can also consume approximate tiles.
type fepilogue interface {
	epilogue
	// prepare runs once before the first tile (single-threaded).
	prepare()
	// startApprox: whether a fresh A block starts with approximate tiles.
	startApprox() bool
	// divs: an approximate tile with more than rows·cols/dense survivors
	// is recomputed exactly; after an exact tile whose tile() accepted
	// fewer than rows·cols/sparse entries the A block filters again.
	divs() (dense, sparse int)
	// approx consumes an approximate tile (see atile). It returns false,
	// having changed nothing, when more than t.maxPairs entries survive;
	// the driver then recomputes the tile exactly and calls tile.
	approx(w *worker, t *atile) bool
}

// atile is one approximate tile handed to fepilogue.approx: c[(i-i0)·ldc +
// (j-j0)] differs from the exact value of entry (i, j) by at most
// e[i-i0]; |exact| <= mag[i-i0].
type atile struct {
	c              []float32
	ldc            int
	i0, i1, j0, j1 int
	e, mag         []float64
	maxPairs       int
	d              int
	as, bs         rside // exact operands for rescoring
	negB           bool  // bs holds B, the plan uses -B
	// streaming: this worker sees every tile of the A block, first to
	// last, and calls rowsDone right after the last (epilogues may defer
	// work across the block's tiles); bs0 locates B from global row 0.
	streaming bool
	bs0       rside
}

// rside locates the float32 operand rows for rescoring: packed panels of
// width w (k-major), or row-major rows of ld floats when w == 0. Row
// indices are relative to the tile's i0 (A) or j0 (B).
type rside struct {
	data  []float32
	w, ld int
}

func (s rside) off(i, d int) int32 {
	if s.w == 0 {
		return int32(i * s.ld)
	}
	return int32(i/s.w*s.w*d + i%s.w)
}

func (s rside) stride() int {
	if s.w == 0 {
		return 1
	}
	return s.w
}

// pendCand is an argmax candidate awaiting rescoring: row r of the A
// block, global column j, upper bound hi of its exact score.
type pendCand struct {
	r, j int32
	hi   float64
}

// rescore returns the exact values (the micro-kernels' FMA chains) of the
// tile entries pairs[l] = (i-i0)<<16 | (j-j0), in w.f.vals.
func (t *atile) rescore(w *worker, pairs []int32) []float32 {
	f := w.f
	rs, js := f.prs[:0], f.pjs[:0]
	for _, pr := range pairs {
		rs = append(rs, pr>>16)
		js = append(js, pr&0xffff)
	}
	f.prs, f.pjs = rs, js
	return rescorePairs(w, t.as, t.bs, t.d, t.negB, rs, js)
}

// rescorePairs returns the exact values of A row rs[l] · B row js[l] (rows
// relative to as and bs; B negated when neg), in w.f.vals.
func rescorePairs(w *worker, as, bs rside, d int, neg bool, rs, js []int32) []float32 {
	f := w.f
	n := len(rs)
	if n == 0 {
		return nil
	}
	n16 := (n + 15) &^ 15
	if len(f.offa) < n16 {
		f.offa = make([]int32, 2*n16)
		f.offb = make([]int32, 2*n16)
	}
	if len(f.vals) < n16 {
		f.vals = make([]float32, 2*n16)
	}
	offa, offb := f.offa[:n16], f.offb[:n16]
	for l := range rs {
		offa[l] = as.off(int(rs[l]), d)
		offb[l] = bs.off(int(js[l]), d)
	}
	for l := n; l < n16; l++ {
		offa[l], offb[l] = offa[0], offb[0]
	}
	amxCount.rescored.Add(int64(n))
	vals := f.vals[:n16]
	if as.w == 0 && bs.w == 0 {
		dotTS(as.data, offa, bs.data, offb, d, vals, f.tscr[:])
	} else {
		dotGatherS(as.data, offa, as.stride(), bs.data, offb, bs.stride(), d, vals)
	}
	if neg {
		for l := range vals[:n] {
			vals[l] = -vals[l]
		}
	}
	return vals[:n]
}

// ---------------------------------------------------------------- driver

// ablk is the state of one A block in engine 2.
type ablk struct {
	ok     bool // every row may be filtered
	approx bool // next tile approximate
	packed bool // float32 panels present (streaming mode packs them lazily)
}

// fbuf is per-worker scratch of engine 2.
type fbuf struct {
	as            rside // A operand of the block in rowsDone (rows from ai0)
	ai0           int
	bscr          []float32 // 16 converted B rows (rescoreRow)
	js            []int32
	idx           []int
	rv            []float32
	tscr          [272]float32 // dotT/dotT1 scratch
	pend          []pendCand   // argmax candidates awaiting rescoring
	pendI0        int          // their A block (-1: none)
	pas, pbs      rside        // their operands: A from row pendI0, B from row pj0
	pj0, pendD    int
	pendNeg       bool
	prs, pjs      []int32
	lb            []float64 // running lower bound of each row's maximum
	abf           *bfRows   // streaming mode: bf16 of the current A block
	afl           []float32 // streaming mode: float32 rows of a float16 A block
	pairs         []int32
	offa, offb    []int32
	vals, thr, mx []float32
	e, mag        []float64
}

func (w *worker) fb(d, maxPairs int) *fbuf {
	if w.f == nil {
		w.f = &fbuf{pendI0: -1}
	}
	f := w.f
	if len(f.pairs) < maxPairs+16 {
		f.pairs = make([]int32, maxPairs+16)
		f.offa = make([]int32, maxPairs+16)
		f.offb = make([]int32, maxPairs+16)
		f.vals = make([]float32, maxPairs+16)
	}
	if len(f.lb) < mcAMX {
		f.lb = make([]float64, mcAMX)
	}
	if len(f.thr) < mcAMX {
		f.thr = make([]float32, mcAMX)
		f.mx = make([]float32, mcAMX)
		f.e = make([]float64, mcAMX)
		f.mag = make([]float64, mcAMX)
	}
	if f.abf == nil || f.abf.ld != (d+31)&^31 || len(f.abf.nrm) < mcAMX {
		f.abf = newBFRows(mcAMX, d, true)
	}
	return f
}

// driveAMX is engine 2 (see the top of this file). Same contract as drive.
func driveAMX(p *parallel, pl plan, ep fepilogue) error {
	a, b := pl.a, pl.b
	m, n, d := a.Rows, b.Rows, a.Dim
	if m == 0 {
		_, err := toF32Checked(b)
		return err
	}
	mc := mcAMX
	nc := ncBlock
	ks := (d + 31) / 32
	super := pl.superRows
	if super <= 0 {
		super = aPackBytes / max(1, 4*d)
	}
	super = max(mc, super/mc*mc)
	super = min(super, (m+mc-1)/mc*mc)
	nPad := (n + nr - 1) / nr * nr
	bOnce := nPad*d*4 <= bPackBytes
	nb := min(n, nc)
	if bOnce {
		nb = n
	}
	nbPad := (nb + 31) &^ 31
	ep.prepare()
	dense, sparse := ep.divs()
	maxPairs := mc * nc / dense
	ldc := nc
	for _, w := range p.workers {
		if len(w.c) < mc*ldc {
			w.c = make([]float32, mc*ldc)
		}
		if len(w.cand) < nc {
			w.cand = make([]int32, nc)
		}
		f := w.fb(d, maxPairs)
		f.pend, f.pendI0 = f.pend[:0], -1 // workers are recycled between calls
	}

	// B side: bf16 rows, their VNNI copy for amxTile and per-block
	// bounds; float32 rows for rescoring (b itself, or converted from
	// float16); float32 panels for exact tiles, packed only when a tile
	// needs them.
	bbf := p.bfRows("b", nbPad, d, false)
	bvnni := p.buf16("bvnni", nbPad/32*ks*1024)
	bst := make([]bStats, (nb+nc-1)/nc)
	bok := make([]bool, (nbPad+127)/128)
	var bfl []float32
	if b.F16 != nil {
		bfl = p.buf("bfl", nbPad*d)
	}
	var bpack []float32     // allocated on first use
	var bj0, bj1 int        // B rows in the buffers
	var bpMu sync.Mutex     // guards bpReady
	var bpReady atomic.Bool // bpack holds rows [bj0, bj1)
	const rowsPerTask = 128
	bpackFor := func() {
		if bpack == nil {
			bpack = p.buf("bpack", nbPad*d)
		}
	}
	packPanels := func(w *worker, t int) error {
		r0 := bj0 + t*rowsPerTask
		r1 := min(bj1, r0+rowsPerTask)
		return packRows(bpack[(r0-bj0)*d:], b, r0, r1, nr, pl.negB, w.scratch)
	}
	// bPanels makes sure the panels exist (a tile turned exact).
	bPanels := func(w *worker) error {
		if bpReady.Load() {
			return nil
		}
		bpMu.Lock()
		defer bpMu.Unlock()
		if bpReady.Load() {
			return nil
		}
		bpackFor()
		for t := 0; t < (bj1-bj0+rowsPerTask-1)/rowsPerTask; t++ {
			if err := packPanels(w, t); err != nil {
				return err
			}
		}
		bpReady.Store(true)
		return nil
	}
	packB := func(j0, j1 int, panels bool) error {
		bj0, bj1 = j0, j1
		bpReady.Store(false)
		if panels {
			bpackFor()
		}
		nt := (j1 - j0 + rowsPerTask - 1) / rowsPerTask
		err := p.run(nt, func(w *worker, t int) error {
			r0 := j0 + t*rowsPerTask
			r1 := min(j1, r0+rowsPerTask)
			o0 := r0 - j0
			var fl []float32
			if bfl != nil {
				fl = bfl[o0*d:]
			}
			bok[t] = bbf.convert(o0, b, r0, r1, pl.negB, w.scratch, fl)
			if !bok[t] {
				if _, err := toF32Checked(slice(b, r0, r1)); err != nil {
					return wrapRows(err, r0, r1)
				}
			}
			o1 := (r1 - j0 + 31) &^ 31
			bbf.zeroRows(r1-j0, o1)
			vnniPackS(bvnni[o0/32*ks*1024:], bbf.block(o0), bbf.ld, (o1-o0)/32, ks)
			if panels {
				return packPanels(w, t)
			}
			return nil
		})
		if err != nil {
			return err
		}
		if panels {
			bpReady.Store(true)
		}
		for s := range bst[:(j1-j0+nc-1)/nc] {
			o0, o1 := s*nc, min(j1-j0, (s+1)*nc)
			ok := true
			for t := o0 / rowsPerTask; t <= (o1-1)/rowsPerTask; t++ {
				ok = ok && bok[t]
			}
			bst[s] = bbf.stats(o0, o1, ok)
		}
		return nil
	}
	// bRows locates B's float32 rows from global row j0 for rescoring.
	bRows := func(j0 int) rside {
		if bfl != nil {
			return rside{data: bfl[(j0-bj0)*d:], ld: d}
		}
		return rside{data: b.F32[j0*d:], ld: d}
	}

	// tile runs one A block x B block tile. The A block is rows [i0, i1);
	// its bf16 copy starts at row ao of abf, as locates its float32 rows
	// for rescoring and ap its float32 panels for the micro-kernels
	// (packed by packA on first use unless st.packed). The B block starts
	// at global row j0 and at row bo of the packed B; bs are its bounds.
	gd, g2 := gamma(d), gamma(2*bbf.ld)
	tile := func(w *worker, st *ablk, abf *bfRows, ao int, as rside, ap []float32, packA func() error,
		i0, i1, j0, j1, bo int, bs bStats) error {
		f := w.f
		f.as, f.ai0 = as, i0 // for epilogues that rescore (topkEp2.resolve, rowsDone)
		rows, cols := i1-i0, j1-j0
		if st.approx && st.ok && bs.ok {
			mb, np := (rows+31)/32, (cols+31)/32
			amxTileS(abf.block(ao), bvnni[bo/32*ks*1024:], w.c, ldc, mb, np, ks)
			for r := 0; r < rows; r++ {
				na, ta, da := abf.nrm[ao+r], abf.tnrm[ao+r], abf.dlt[ao+r]
				e := gd*na*bs.nrm + na*bs.dlt + da*bs.tnrm + g2*ta*bs.tnrm + 0x1p-90
				f.e[r] = e * (1 + 0x1p-30)
				f.mag[r] = na * bs.nrm
			}
			t := atile{c: w.c, ldc: ldc, i0: i0, i1: i1, j0: j0, j1: j1, e: f.e[:rows], mag: f.mag[:rows],
				maxPairs: rows * cols / dense, d: d, as: as, bs: bRows(j0), negB: pl.negB, streaming: bOnce}
			if bOnce {
				t.bs0 = bRows(0)
			}
			if ep.approx(w, &t) {
				amxCount.filtered.Add(1)
				return nil
			}
			amxCount.dense.Add(1)
			st.approx = false
		}
		if !st.packed {
			if err := packA(); err != nil {
				return err
			}
			st.packed = true
		}
		if err := bPanels(w); err != nil {
			return err
		}
		nPanels := (cols + nr - 1) / nr
		mp := (rows + mr - 1) / mr
		bblk := bpack[bo*d:]
		for q := 0; q < nPanels; q++ {
			bp := bblk[q*nr*d : (q+1)*nr*d]
			for r := 0; r < mp; r++ {
				if pl.prefix && j0+q*nr >= i0+r*mr+mr-1 {
					continue
				}
				microKernel(d, ap[r*mr*d:(r+1)*mr*d], bp, w.c[r*mr*ldc+q*nr:], ldc, false)
			}
		}
		amxCount.exact.Add(1)
		acc := ep.tile(w, w.c, ldc, i0, i1, j0, j1)
		if st.ok && bs.ok && acc*sparse < rows*cols {
			st.approx = true
		}
		return nil
	}

	if bOnce {
		if err := packB(0, n, !ep.startApprox()); err != nil {
			return err
		}
		return p.run((m+mc-1)/mc, func(w *worker, blk int) error {
			f := w.f
			i0 := blk * mc
			i1 := min(m, i0+mc)
			rows := i1 - i0
			st := ablk{approx: ep.startApprox()}
			var as rside
			if a.F16 != nil {
				if len(f.afl) < mc*d {
					f.afl = make([]float32, mc*d)
				}
				F16ToF32(f.afl[:rows*d], a.F16[i0*d:i1*d])
				as = rside{data: f.afl, ld: d}
			} else {
				as = rside{data: a.F32[i0*d : i1*d], ld: d}
			}
			am := F32Matrix(as.data, rows, d)
			st.ok = f.abf.convert(0, am, 0, rows, false, w.scratch, nil)
			f.abf.zeroRows(rows, (rows+31)&^31)
			if !st.ok {
				if err := checkFiniteF32("A", as.data[:rows*d]); err != nil {
					return wrapRows(err, i0, i1)
				}
			}
			if len(w.apack) < mc*d {
				w.apack = make([]float32, mc*d)
			}
			packA := func() error { return packRows(w.apack, a, i0, i1, mr, false, w.scratch) }
			jEnd := n
			if pl.prefix {
				jEnd = min(n, i1-1)
			}
			for j0 := 0; j0 < jEnd; j0 += nc {
				j1 := min(jEnd, j0+nc)
				if err := tile(w, &st, f.abf, 0, as, w.apack, packA, i0, i1, j0, j1, j0, bst[j0/nc]); err != nil {
					return err
				}
			}
			f.as, f.ai0 = as, i0
			return ep.rowsDone(w, i0, i1)
		})
	}

	// A side per super-block: bf16 rows, float32 rows (a itself, or
	// converted from float16) and float32 panels, packed per A block on
	// its first exact tile.
	apack := p.buf("apack", super*d)
	abf := p.bfRows("a", super, d, true)
	var afl []float32
	if a.F16 != nil {
		afl = p.buf("afl", super*d)
	}
	aRows := func(s0, blk int) rside {
		if afl != nil {
			return rside{data: afl[blk*mc*d:], ld: d}
		}
		return rside{data: a.F32[(s0+blk*mc)*d:], ld: d}
	}
	blocks := make([]ablk, super/mc)
	for s0 := 0; s0 < m; s0 += super {
		s1 := min(m, s0+super)
		nA := (s1 - s0 + mc - 1) / mc
		err := p.run(nA, func(w *worker, blk int) error {
			i0 := s0 + blk*mc
			i1 := min(s1, i0+mc)
			var fl []float32
			if afl != nil {
				fl = afl[blk*mc*d:]
			}
			ok := abf.convert(blk*mc, a, i0, i1, false, w.scratch, fl)
			if !ok {
				if _, err := toF32Checked(slice(a, i0, i1)); err != nil {
					return wrapRows(err, i0, i1)
				}
			}
			abf.zeroRows(blk*mc+i1-i0, blk*mc+(i1-i0+31)&^31)
			blocks[blk] = ablk{ok: ok, approx: ep.startApprox()}
			return nil
		})
		if err != nil {
			return err
		}
		jEnd := n
		if pl.prefix {
			jEnd = min(n, s1-1)
		}
		for j0 := 0; j0 < jEnd; j0 += nc {
			j1 := min(jEnd, j0+nc)
			exact := 0
			for _, st := range blocks[:nA] {
				if !st.approx || !st.ok {
					exact++
				}
			}
			if err := packB(j0, j1, exact > 0); err != nil {
				return err
			}
			err := p.run(nA, func(w *worker, blk int) error {
				i0 := s0 + blk*mc
				i1 := min(s1, i0+mc)
				if pl.prefix && i1-1 <= j0 {
					return nil
				}
				ap := apack[blk*mc*d:]
				packA := func() error { return packRows(ap, a, i0, i1, mr, false, w.scratch) }
				return tile(w, &blocks[blk], abf, blk*mc, aRows(s0, blk), ap, packA, i0, i1, j0, j1, 0, bst[0])
			})
			if err != nil {
				return err
			}
		}
		err = p.run(nA, func(w *worker, blk int) error {
			i0 := s0 + blk*mc
			w.f.as, w.f.ai0 = aRows(s0, blk), i0
			return ep.rowsDone(w, i0, min(s1, i0+mc))
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// roundUp32 returns the smallest float32 >= v.
func roundUp32(v float64) float32 {
	f := float32(v)
	if float64(f) < v {
		f = math.Nextafter32(f, float32(math.Inf(1)))
	}
	return f
}

// rescoreRow stores in out[l] the exact value (the micro-kernels' FMA
// chain) of A row i · B row js[l], B negated when neg. A row i comes from
// w.f.as (set by the driver for rowsDone), B rows from b itself.
func rescoreRow(w *worker, i int, b Matrix, neg bool, js []int32, out []float32) {
	f := w.f
	d := b.Dim
	n := len(js)
	if n == 0 {
		return
	}
	arow := f.as.data[f.as.off(i-f.ai0, d):]
	sa := f.as.stride()
	amxCount.rescored.Add(int64(n))
	direct := b.F16 == nil && int64(b.Rows)*int64(d) < 1<<31
	if direct {
		// gather straight from b, prefetching the next batch's rows
		n16 := (n + 15) &^ 15
		if len(f.offb) < n16 {
			f.offb = make([]int32, 2*n16)
		}
		offb := f.offb[:n16]
		for l, j := range js {
			offb[l] = int32(int(j) * d)
		}
		for l := n; l < n16; l++ {
			offb[l] = offb[0]
		}
		for l0 := 0; l0 < n; l0 += 16 {
			var pf []int32
			if l0+16 < n16 {
				pf = offb[l0+16 : l0+32]
			}
			if sa == 1 {
				dotT1S(arow, b.F32, offb[l0:l0+16], d, f.vals[:16], pf, f.tscr[:])
			} else {
				dotGather1S(arow, sa, b.F32, offb[l0:l0+16], 1, d, f.vals[:16], pf)
			}
			for l := l0; l < min(n, l0+16); l++ {
				out[l] = f.vals[l-l0]
			}
		}
	} else {
		// convert (or copy) 16 rows at a time
		if len(f.bscr) < 16*d {
			f.bscr = make([]float32, 16*d)
		}
		offb := f.offb[:16]
		for l := range offb {
			offb[l] = int32(l * d)
		}
		for l0 := 0; l0 < n; l0 += 16 {
			l1 := min(n, l0+16)
			for l := l0; l < 16+l0; l++ {
				dst := f.bscr[(l-l0)*d : (l-l0+1)*d]
				copy(dst, b.row(int(js[min(l, l1-1)]), dst))
			}
			if sa == 1 {
				dotT1S(arow, f.bscr, offb, d, f.vals[:16], nil, f.tscr[:])
			} else {
				dotGather1S(arow, sa, f.bscr, offb, 1, d, f.vals[:16], nil)
			}
			copy(out[l0:l1], f.vals[:l1-l0])
		}
	}
	if neg {
		for l := range out[:n] {
			out[l] = -out[l]
		}
	}
}

func wrapRows(err error, i0, i1 int) error { return fmt.Errorf("%w (rows %d..%d)", err, i0, i1-1) }

// slice returns rows [r0, r1) of m.
func slice(m Matrix, r0, r1 int) Matrix {
	d := m.Dim
	if m.F16 != nil {
		return F16Matrix(m.F16[r0*d:r1*d], r1-r0, d)
	}
	return F32Matrix(m.F32[r0*d:r1*d], r1-r0, d)
}
