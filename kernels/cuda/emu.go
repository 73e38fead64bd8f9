package cuda

import (
	"fmt"
	"math"
	"slices"
	"sort"
	"strings"
	"sync"
	"unsafe"

	"hpcrun/kernels"
)

// emuDevice is a device whose kernels are their contracts in plain Go
// (the "reference beside the fast path" of every .cu file), so the whole
// host side — packing, streaming, query blocks, candidate overflow and
// splits, selection, decoding, fixed-point sums — runs and is tested on a
// machine without a GPU. It is strict where a GPU would be silently wrong:
// every access is bounds-checked against its allocation, every launch's
// kernel name must be an entry of the embedded PTX, its parameter size
// must match, and its grid must cover exactly the rows it is given.
// Candidate appends happen in a scrambled order, as atomics on a GPU do.
//
// Pair values are float32 multiply-add chains in k order (version 1 fuses
// each step into one FMA; the tensor-core version 2 groups the additions):
// different roundings, all within kerneltest's tolerances, which only a
// GPU run can check for the real kernels.
type emuDevice struct {
	mu      sync.Mutex
	mem     map[uint64][]byte
	next    uint64
	entries map[string]bool
	perm    uint64
	free0   uint64 // free memory with nothing allocated (memInfo); 0: 64 GiB
	used    uint64 // bytes allocated

	persistent int           // launches on the v5 engine's persistent grid (tunables.persistBlocks)
	groups     map[int64]int // similarity launches by their tile order (simArgs.Group)
}

const emuShift = 40 // dptr = id<<40 | offset

func newEmuDevice() (*emuDevice, error) {
	d := &emuDevice{mem: map[uint64][]byte{}, next: 1, entries: map[string]bool{}}
	for _, m := range ptxModules {
		src, err := ptxSource(m.file)
		if err != nil {
			return nil, err
		}
		for _, e := range m.entries {
			if !strings.Contains(src, ".entry "+e+"(") {
				return nil, fmt.Errorf("emu: %s has no entry %s", m.file, e)
			}
			d.entries[e] = true
		}
	}
	return d, nil
}

func (d *emuDevice) describe() string { return "emulated" }

func (d *emuDevice) has(kernel string) bool { return d.entries[kernel] }

func (d *emuDevice) alloc(n int) (dptr, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	id := d.next
	d.next++
	d.mem[id] = make([]byte, n)
	d.used += uint64(n)
	return dptr(id << emuShift), nil
}

func (d *emuDevice) free(p dptr) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if p == 0 {
		return
	}
	if uint64(p)&(1<<emuShift-1) != 0 {
		panic(fmt.Sprintf("emu: free of interior pointer %#x", p))
	}
	if _, ok := d.mem[uint64(p)>>emuShift]; !ok {
		panic(fmt.Sprintf("emu: double free %#x", p))
	}
	d.used -= uint64(len(d.mem[uint64(p)>>emuShift]))
	delete(d.mem, uint64(p)>>emuShift)
}

// at returns the n bytes at p, panicking outside its allocation.
func (d *emuDevice) at(p dptr, n int) []byte {
	d.mu.Lock()
	defer d.mu.Unlock()
	b, ok := d.mem[uint64(p)>>emuShift]
	off := int(uint64(p) & (1<<emuShift - 1))
	if !ok || n < 0 || off+n > len(b) {
		panic(fmt.Sprintf("emu: access [%#x, +%d) outside its allocation (%d bytes)", p, n, len(b)))
	}
	return b[off : off+n : off+n]
}

func (d *emuDevice) hostAlloc(n int) ([]byte, error) { return make([]byte, n), nil }
func (d *emuDevice) hostFree([]byte)                 {}

func (d *emuDevice) h2d(dst dptr, src []byte, _ stream) error {
	copy(d.at(dst, len(src)), src)
	return nil
}

func (d *emuDevice) d2h(dst []byte, src dptr, _ stream) error {
	copy(dst, d.at(src, len(dst)))
	return nil
}

func (d *emuDevice) memsetD32(dst dptr, v uint32, n int, _ stream) error {
	w := u32s(d.at(dst, 4*n))
	for i := range w {
		w[i] = v
	}
	return nil
}

func (d *emuDevice) sync(stream) error          { return nil }
func (d *emuDevice) newStream() (stream, error) { return 1, nil }

// memInfo: 64 GiB free of 80 (free0 of free0+16 GiB in tests), less what
// is allocated.
func (d *emuDevice) memInfo() (uint64, uint64, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	free0 := d.free0
	if free0 == 0 {
		free0 = 64 << 30
	}
	return free0 - min(free0, d.used), free0 + 16<<30, nil
}
func (d *emuDevice) bind() func() { return func() {} }
func (d *emuDevice) close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.mem) != 0 {
		return fmt.Errorf("emu: %d device allocations leaked", len(d.mem))
	}
	return nil
}

func u32s(b []byte) []uint32 {
	if len(b) == 0 {
		return nil
	}
	return unsafe.Slice((*uint32)(unsafe.Pointer(&b[0])), len(b)/4)
}
func u64s(b []byte) []uint64 {
	if len(b) == 0 {
		return nil
	}
	return unsafe.Slice((*uint64)(unsafe.Pointer(&b[0])), len(b)/8)
}
func f32s(b []byte) []float32 {
	if len(b) == 0 {
		return nil
	}
	return unsafe.Slice((*float32)(unsafe.Pointer(&b[0])), len(b)/4)
}

func (d *emuDevice) launch(name string, grid, block [3]int, _ stream, params []uint64) error {
	if !d.entries[name] {
		return fmt.Errorf("emu: no kernel %q in the embedded PTX", name)
	}
	if block != [3]int{threads, 1, 1} {
		return fmt.Errorf("emu: %s: block %v, the kernels are built for %d threads", name, block, threads)
	}
	if grid[1] > maxGridY || grid[2] != 1 {
		return fmt.Errorf("emu: %s: grid %v", name, grid)
	}
	switch {
	case name == "topk_select":
		a, err := fromWords[selectArgs](params)
		if err != nil {
			return err
		}
		if grid[0] != int(a.NQ) || grid[1] != 1 {
			return fmt.Errorf("emu: topk_select: grid %v for %d queries", grid, a.NQ)
		}
		d.selectK(a)
	case name == "band_width" || name == "rescore_argmax" || name == "rescore_rows":
		a, err := fromWords[rescoreArgs](params)
		if err != nil {
			return err
		}
		if name == "rescore_rows" {
			if grid[0] < 1 || grid[1] != 1 {
				return fmt.Errorf("emu: %s: grid %v", name, grid)
			}
		} else if grid[0] != ceilDiv(int(a.NA), threads) || grid[1] != 1 {
			return fmt.Errorf("emu: %s: grid %v for %d rows", name, grid, a.NA)
		}
		d.rescore(name, a)
	case name == "topk_filter_thr" || name == "topk_rescore":
		a, err := fromWords[topkFilterArgs](params)
		if err != nil {
			return err
		}
		want := int(a.NQ)
		if name == "topk_filter_thr" {
			want = ceilDiv(want, threads)
		}
		if grid[0] != want || grid[1] != 1 {
			return fmt.Errorf("emu: %s: grid %v for %d queries", name, grid, a.NQ)
		}
		d.topkFilter(name, a)
	case strings.HasPrefix(name, "centroid_sums_kernel"):
		a, err := fromWords[sumArgs](params)
		if err != nil {
			return err
		}
		if grid[0] < 1 || grid[1] != 1 {
			return fmt.Errorf("emu: %s: grid %v", name, grid)
		}
		d.sums(a, strings.HasSuffix(name, "_f16"))
	default:
		a, err := fromWords[simArgs](params)
		if err != nil {
			return err
		}
		var op string
		var version int
		var dt string
		if _, err := fmt.Sscanf(strings.Replace(name, "_kernel", " ", 1), "%s %d_%s", &op, &version, &dt); err != nil {
			return fmt.Errorf("emu: kernel name %q: %v", name, err)
		}
		ta, tb := tiles(version)
		gx, gy := ceilDiv(int(a.NA), ta), ceilDiv(int(a.NB), tb)
		if d.groups == nil {
			d.groups = map[int64]int{}
		}
		d.groups[a.Group]++
		persistent := wgmmaEngine(version) && grid[1] == 1 && grid[0] >= 1 && grid[0] < gx*gy // blocks taking several tiles each
		if persistent {
			d.persistent++
		} else if grid[0] != gx || grid[1] != gy {
			return fmt.Errorf("emu: %s: grid %v for %dx%d rows (tiles %dx%d)", name, grid, a.NA, a.NB, ta, tb)
		}
		if a.LD%32 != 0 {
			return fmt.Errorf("emu: %s: ld %d is not a multiple of 32", name, a.LD)
		}
		d.sim(op, dt == "f16", a)
	}
	return nil
}

// rowsF32 reads n rows of ld elements at p as float32.
func (d *emuDevice) rowsF32(p dptr, n, ld int, f16 bool) []float32 {
	if f16 {
		h := unsafe.Slice((*uint16)(unsafe.Pointer(unsafe.SliceData(d.at(p, 2*n*ld)))), n*ld)
		out := make([]float32, n*ld)
		kernels.F16ToF32(out, h)
		return out
	}
	return f32s(d.at(p, 4*n*ld)) // read only
}

// sim is the contract of every similarity kernel (common.cuh, topk.cu).
func (d *emuDevice) sim(op string, f16 bool, a simArgs) {
	nA, nB, ld := int(a.NA), int(a.NB), int(a.LD)
	A := d.rowsF32(a.A, nA, ld, f16)
	B := d.rowsF32(a.B, nB, ld, f16)
	var scale, bias, thr []float32
	var best []uint64
	var count []uint32
	var keys []uint64
	band := op == "band" || op == "bandprefix"
	prefix := op == "prefixmax" || op == "bandprefix"
	switch op {
	case "topk":
		thr = f32s(d.at(a.Thr, 4*nA))
		count = u32s(d.at(a.Count, 4*nA))
		keys = u64s(d.at(a.Keys, 8*nA*int(a.Cap)))
	case "band", "bandprefix":
		thr = f32s(d.at(a.Thr, 4)) // thr[0]: the band width
		count = u32s(d.at(a.Count, 4*nA))
		keys = u64s(d.at(a.Keys, 8*nA*int(a.Cap)))
		fallthrough
	default:
		best = u64s(d.at(a.Best, 8*nA))
		if a.Scale != 0 {
			scale = f32s(d.at(a.Scale, 4*nB))
		}
		if a.Bias != 0 {
			bias = f32s(d.at(a.Bias, 4*nB))
		}
	}
	// B rows in a scrambled order: candidate slots fill as GPU atomics would
	order := make([]int, nB)
	for j := range order {
		order[j] = j
	}
	d.perm = d.perm*6364136223846793005 + 1442695040888963407
	seed := d.perm
	sort.Slice(order, func(x, y int) bool {
		hx, hy := uint64(order[x])*0x9e3779b97f4a7c15^seed, uint64(order[y])*0x9e3779b97f4a7c15^seed
		return hx>>17 < hy>>17
	})
	for i := 0; i < nA; i++ {
		ar := A[i*ld : (i+1)*ld]
		for _, j := range order {
			if prefix && a.BOff+int64(j) >= a.AOff+int64(i) {
				continue
			}
			br := B[j*ld : (j+1)*ld]
			var v float32
			for k, x := range ar {
				v += x * br[k]
			}
			if op == "topk" {
				if v > thr[i] {
					pos := count[i]
					count[i]++
					if int64(pos) < a.Cap {
						keys[int64(i)*a.Cap+int64(pos)] = makeKey(v, a.BOff+int64(j))
					}
				}
				continue
			}
			if scale != nil {
				v *= scale[j]
			}
			if bias != nil {
				v += bias[j]
			}
			if key := makeKey(v, a.BOff+int64(j)); key > best[i] {
				best[i] = key
			}
			// band: append v when within the width of the running best
			// (never above the final best, as on the GPU)
			if band && v >= bandThr(keyValue(best[i]), thr[0]) {
				pos := count[i]
				count[i]++
				if int64(pos) < a.Cap {
					keys[int64(i)*a.Cap+int64(pos)] = makeKey(v, a.BOff+int64(j))
				}
			}
		}
	}
}

// selectK is the contract of topk_select.
func (d *emuDevice) selectK(a selectArgs) {
	nq, capacity, k := int(a.NQ), int(a.Cap), int(a.K)
	keys := u64s(d.at(a.Keys, 8*nq*capacity))
	count := u32s(d.at(a.Count, 4*nq))
	thr := f32s(d.at(a.Thr, 4*nq))
	var out []uint64
	if a.Out != 0 {
		out = u64s(d.at(a.Out, 8*nq*k))
	}
	for q := 0; q < nq; q++ {
		kq := keys[q*capacity : (q+1)*capacity]
		n := min(int(count[q]), capacity)
		m := n
		if n >= k {
			s := slices.Clone(kq[:n])
			slices.Sort(s)
			kth := s[n-k]
			w := 0
			for _, key := range kq[:n] { // stable, in place
				if key >= kth {
					kq[w] = key
					w++
				}
			}
			m = k
			count[q] = uint32(k)
			thr[q] = keyValue(kth)
		}
		if out != nil {
			o := out[q*k : (q+1)*k]
			for r := range o {
				o[r] = 0
				if r < m {
					o[r] = kq[r]
				}
			}
			if a.Flags&selSortOut != 0 && m <= selSmemKeys {
				slices.Sort(o[:m])
				slices.Reverse(o[:m]) // best first
			}
		}
	}
}

// sums is the contract of centroid_sums_kernel1: fixed-point sums of each
// assigned point into its centroid's row.
func (d *emuDevice) sums(a sumArgs, f16 bool) {
	n, dim, ld := int(a.N), int(a.Dim), int(a.LD)
	X := d.rowsF32(a.X, n, ld, f16)
	best := u64s(d.at(a.Best, 8*n))
	for i := 0; i < n; i++ {
		if best[i] == 0 {
			continue
		}
		c := int(^uint32(best[i]))
		s := u64s(d.at(a.Sums+dptr(8*c*dim), 8*dim))
		for k := 0; k < dim; k++ {
			s[k] += uint64(kernels.ToFixed(X[i*ld+k]))
		}
	}
}

// bandThr is common.cuh's band_thr: a float32 lower bound of m - w.
func bandThr(m, w float32) float32 {
	t := m - w
	return t - float32(0x1p-21)*(float32(math.Abs(float64(m)))+w)
}

// rescore is the contract of exact.cu's band_width, rescore_argmax and
// rescore_rows; exact values are version 1's FMA chains (kernels.FMA32),
// the CPU backend's bits.
func (d *emuDevice) rescore(name string, r rescoreArgs) {
	nA, ld := int(r.NA), int(r.LD)
	A := d.rowsF32(dptr(r.A), nA, ld, true)
	if name == "band_width" {
		w := u32s(d.at(r.W, 4))
		for i := 0; i < nA; i++ {
			var s float64
			for _, x := range A[i*ld : (i+1)*ld] {
				s += float64(x) * float64(x)
			}
			e := (math.Sqrt(s)*(1+0x1p-40)*r.K1 + r.K2) * 2 * (1 + 0x1p-20)
			wi := float32(e)
			wi *= 1 + 0x1p-20
			w[0] = max(w[0], math.Float32bits(wi))
		}
		return
	}
	B := d.rowsF32(r.B, int(r.NB), ld, r.Flags&rsBF32 == 0)
	var scale, bias []float32
	if r.Scale != 0 {
		scale = f32s(d.at(r.Scale, 4*int(r.NB)))
	}
	if r.Bias != 0 {
		bias = f32s(d.at(r.Bias, 4*int(r.NB)))
	}
	value := func(i, j int) float32 {
		var acc float32
		ar, br := A[i*ld:(i+1)*ld], B[j*ld:(j+1)*ld]
		for k := range ar {
			acc = kernels.FMA32(ar[k], br[k], acc)
		}
		if scale != nil {
			acc = float32(acc * scale[j])
		}
		if bias != nil {
			acc = float32(acc + bias[j])
		}
		return acc
	}
	best := u64s(d.at(r.Best, 8*nA))
	over := u32s(d.at(r.Over, 4*(1+nA)))
	if name == "rescore_argmax" {
		count := u32s(d.at(r.Count, 4*nA))
		keys := u64s(d.at(r.Keys, 8*nA*int(r.Cap)))
		w := f32s(d.at(r.W, 4))[0]
		for i := 0; i < nA; i++ {
			n := int(count[i])
			if n > int(r.Cap) {
				over[1+over[0]] = uint32(i)
				over[0]++
				continue
			}
			if best[i] == 0 {
				continue
			}
			thr := bandThr(keyValue(best[i]), w)
			var b uint64
			for _, key := range keys[i*int(r.Cap) : i*int(r.Cap)+n] {
				if keyValue(key) < thr {
					continue
				}
				j := int(keyIndex(key))
				b = max(b, makeKey(value(i, j), int64(j)))
			}
			best[i] = b
		}
		return
	}
	// rescore_rows
	rows := int(over[0])
	if r.Flags&rsAll != 0 {
		rows = nA
	}
	for x := 0; x < rows; x++ {
		i := x
		if r.Flags&rsAll == 0 {
			i = int(over[1+x])
		}
		nb := int(r.NB)
		if r.Flags&rsPrefix != 0 {
			nb = min(nb, int(r.AOff)+i)
		}
		var b uint64
		for j := 0; j < nb; j++ {
			b = max(b, makeKey(value(i, j), int64(j)))
		}
		best[i] = b
	}
}

// topkFilter is the contract of exact.cu's topk_filter_thr and
// topk_rescore.
func (d *emuDevice) topkFilter(name string, f topkFilterArgs) {
	nq, ld, capacity := int(f.NQ), int(f.LD), int(f.Cap)
	if name == "topk_filter_thr" {
		thr, e := f32s(d.at(f.Thr, 4*nq)), f32s(d.at(f.E, 4*nq))
		bn := f32s(d.at(f.BNorm, 4))[0]
		out := f32s(d.at(f.ThrF, 4*nq))
		for i, t := range thr {
			out[i] = t
			if !math.IsInf(float64(t), -1) {
				out[i] = bandThr(t, e[i]*bn*(1+0x1p-20))
			}
		}
		return
	}
	q := d.rowsF32(f.Q, nq, ld, f.Flags&tfQF32 == 0)
	before, count := u32s(d.at(f.Before, 4*nq)), u32s(d.at(f.Count, 4*nq))
	keys := u64s(d.at(f.Keys, 8*nq*capacity))
	for i := 0; i < nq; i++ {
		for s := int(before[i]); s < min(int(count[i]), capacity); s++ {
			j := keyIndex(keys[i*capacity+s])
			b := d.rowsF32(dptr(f.B)+dptr(2*(j-f.BOff)*int64(ld)), 1, ld, true)
			var acc float32
			for k, x := range q[i*ld : (i+1)*ld] {
				acc = kernels.FMA32(x, b[k], acc)
			}
			keys[i*capacity+s] = makeKey(acc, j)
		}
	}
}
