package cuda

import (
	"fmt"
	"math"
	"reflect"
	"testing"

	"hpcrun/kernels"
	"hpcrun/kernels/kerneltest"
)

// nearTies returns n float16 rows of dim d, most of them near copies of a
// few others (some exact copies, the others with every fifth value moved
// by one float16 step and 2⁻¹⁰): their similarities to any query tie or
// differ by about the tensor cores' error, which is what the filter's band
// must get right.
func nearTies(seed uint64, n, d int) kernels.Matrix {
	g := kerneltest.Gen(seed, n, d, kerneltest.Gauss, false)
	x := append([]float32(nil), g.M.F32...)
	h := make([]uint16, n*d)
	row := make([]float32, d)
	for i := 0; i < n; i++ {
		if i >= 4 && i%3 != 0 {
			src := (i * 7919) % 4
			for k := range row {
				v := x[src*d+k]
				if (i+k)%5 == 0 && i%7 != 0 { // every 7th an exact copy
					v = float32(math.Nextafter32(v, 2)) * (1 + 1.0/1024)
				}
				row[k] = v
			}
			copy(x[i*d:(i+1)*d], row)
		}
		kernels.F32ToF16(h[i*d:(i+1)*d], x[i*d:(i+1)*d])
	}
	return kernels.F16Matrix(h, n, d)
}

func sameArgMax(t *testing.T, what string, got, want kernels.ArgMax) {
	t.Helper()
	bad := 0
	for i := range want.Idx {
		if got.Idx[i] != want.Idx[i] || math.Float32bits(got.Val[i]) != math.Float32bits(want.Val[i]) {
			if bad < 3 {
				t.Errorf("%s: row %d: (%v, %d), CPU backend (%v, %d)", what, i, got.Val[i], got.Idx[i], want.Val[i], want.Idx[i])
			}
			bad++
		}
	}
	if bad > 0 {
		t.Errorf("%s: %d of %d rows differ from the CPU backend", what, bad, len(want.Idx))
	}
}

// argmaxOps runs the four argmax ops with float16 streamed rows (base,
// points, x) against res (float32 or float16 resident rows).
func argmaxOps(b kernels.Backend, res, rows kernels.Matrix, thr []float32) (map[string]kernels.ArgMax, *kernels.Accum, error) {
	out := map[string]kernels.ArgMax{}
	var err error
	if out["MaxArg"], err = b.MaxArg(res, rows); err != nil {
		return nil, nil, err
	}
	if out["ShiftedMax"], err = b.ShiftedMax(res, rows, thr); err != nil {
		return nil, nil, err
	}
	acc := kernels.NewAccum(res.Rows, res.Dim)
	if out["NearestCentroid L2"], err = b.NearestCentroid(rows, res, kernels.L2, acc); err != nil {
		return nil, nil, err
	}
	if out["NearestCentroid cosine"], err = b.NearestCentroid(rows, res, kernels.Cosine, nil); err != nil {
		return nil, nil, err
	}
	if out["PrefixMax"], err = b.PrefixMax(rows); err != nil {
		return nil, nil, err
	}
	return out, acc, nil
}

// TestExactFilter: with Filter, every argmax op on float16 streamed rows
// equals the CPU backend bit for bit (values, indices, k-means sums), on
// every tensor-core version, with default and tiny tunables (chunks of a
// few rows, one B tile per launch, 1 or 2 candidate slots so rows overflow
// into rescore_rows), for float32 and float16 resident rows, on data full
// of near ties — where the same tensor-core kernels without the filter
// (Precision Float16) do differ from the CPU backend, so the test sees the
// filter work. Resident rows beyond float16's range take the exact-rows
// path and still agree; Version 1 turns the filter off.
func TestExactFilter(t *testing.T) {
	exactFilterSuite(t, func(t *testing.T, version int, tun tunables) *Backend { return newEmulated(t, version, tun) })
}

// exactFilterSuite is TestExactFilter on the backends mk makes (the
// emulator, or a GPU: TestExactFilterGPU).
func exactFilterSuite(t *testing.T, mk func(t *testing.T, version int, tun tunables) *Backend) {
	const d = 40
	rows := nearTies(31, 260, d)
	res32 := kerneltest.Gen(32, 70, d, kerneltest.Gauss, false).M
	// resident rows near each other too: copies with one value nudged
	for i := 10; i < res32.Rows; i += 3 {
		copy(res32.F32[i*d:(i+1)*d], res32.F32[(i-10)*d:(i-9)*d])
		res32.F32[i*d+i%d] += 1e-4
	}
	res16 := rounded(res32)
	thr := make([]float32, res32.Rows)
	for i := range thr {
		thr[i] = 0.01 * float32(i%4)
	}
	cpu := kernels.NewCPU(2)
	small := smallTunables()
	small.bandCap, small.bandRowBlocks = 2, 3
	tiny := small
	tiny.bandCap = 1
	for _, resident := range []struct {
		name string
		m    kernels.Matrix
	}{{"float32", res32}, {"float16", res16}} {
		want, wantAcc, err := argmaxOps(cpu, resident.m, rows, thr)
		if err != nil {
			t.Fatal(err)
		}
		// the unfiltered tensor-core results must differ somewhere, or the
		// data would not test the band
		approx := mk(t, 4, defaultTunables)
		approx.Precision = Float16
		got, _, err := argmaxOps(approx, resident.m, rows, thr)
		if err != nil {
			t.Fatal(err)
		}
		differ := 0
		for name, w := range want {
			for i := range w.Idx {
				if got[name].Idx[i] != w.Idx[i] || got[name].Val[i] != w.Val[i] {
					differ++
				}
			}
		}
		if differ == 0 {
			t.Fatalf("%s: the approximate kernels agree with the CPU backend everywhere: the data does not test the filter", resident.name)
		}
		t.Logf("%s resident: %d results differ without the filter", resident.name, differ)
		for _, c := range []struct {
			version int
			tun     tunables
			tag     string
		}{{2, defaultTunables, ""}, {4, defaultTunables, ""}, {5, defaultTunables, ""}, {7, defaultTunables, ""}, {4, small, "small"}, {5, tiny, "tiny"}, {7, tiny, "tiny"}} {
			t.Run(fmt.Sprintf("%s/v%d%s", resident.name, c.version, c.tag), func(t *testing.T) {
				b := mk(t, c.version, c.tun)
				if b.Float16Version() != c.version {
					t.Skipf("version %d does not run here", c.version)
				}
				b.Filter = true
				got, gotAcc, err := argmaxOps(b, resident.m, rows, thr)
				if err != nil {
					t.Fatal(err)
				}
				for name, w := range want {
					sameArgMax(t, name, got[name], w)
				}
				if !reflect.DeepEqual(gotAcc, wantAcc) {
					t.Error("k-means sums and counts differ from the CPU backend's")
				}
				s := b.stats
				switch {
				case c.tag != "" && s.bandExactRows == 0:
					t.Errorf("tiny slots: no row overflowed into rescore_rows: %+v", s)
				case c.tag == "" && s.bandExactRows > rows.Rows/10:
					// near copies (PrefixMax) may pass 32 candidates, a few
					t.Errorf("%d rows recomputed whole with 32 slots", s.bandExactRows)
				}
				t.Logf("rows recomputed whole: %d", s.bandExactRows)
			})
		}
	}
	for _, v := range []int{5, 7} {
		t.Run(fmt.Sprintf("no v%d band kernels", v), func(t *testing.T) {
			// the sm_90a module of exact.cu failed to load (version 4's band
			// kernels), or lacks version 7's (version 5's)
			b := newEmulated(t, v, defaultTunables)
			emu := b.dev.(*emuDevice)
			delete(emu.entries, kernelName("band", v, layout{dtypeShort: "f16"}))
			delete(emu.entries, kernelName("bandprefix", v, layout{dtypeShort: "f16"}))
			if v == 5 {
				delete(emu.entries, "band_kernel7_f16")
				delete(emu.entries, "bandprefix_kernel7_f16")
			}
			b.Filter = true
			if got, want := b.BandVersion(), map[int]int{5: 4, 7: 5}[v]; got != want {
				t.Errorf("band kernels of version %d, want %d", got, want)
			}
			got, _, err := argmaxOps(b, res32, rows, thr)
			if err != nil {
				t.Fatal(err)
			}
			want, _, err := argmaxOps(cpu, res32, rows, thr)
			if err != nil {
				t.Fatal(err)
			}
			for name, w := range want {
				sameArgMax(t, name, got[name], w)
			}
		})
	}
	t.Run("v1 off", func(t *testing.T) {
		b := mk(t, 1, defaultTunables)
		b.Filter = true
		if b.filtering() || b.pointsLayout(d, rows, res32, true).f16 {
			t.Error("Version 1 (FFMA everywhere) with Filter: the filter is on")
		}
	})
	t.Run("unroundable", func(t *testing.T) {
		big := kernels.F32Matrix(append([]float32(nil), res32.F32...), res32.Rows, d)
		big.F32[5] = 1e5 // beyond float16
		want, err := cpu.MaxArg(big, rows)
		if err != nil {
			t.Fatal(err)
		}
		b := mk(t, 4, defaultTunables)
		b.Filter = true
		got, err := b.MaxArg(big, rows)
		if err != nil {
			t.Fatal(err)
		}
		sameArgMax(t, "MaxArg", got, want)
		if b.stats.bandExactRows != rows.Rows {
			t.Errorf("%d rows recomputed whole, want all %d", b.stats.bandExactRows, rows.Rows)
		}
	})
}

// TestExactFilterKept: k-means on kept points with the filter: float16
// points kept as float16 (half the memory of the float32 layout), the same
// assignments and sums as the CPU backend.
func TestExactFilterKept(t *testing.T) {
	const d = 40
	rows := nearTies(41, 200, d)
	c := kerneltest.Gen(42, 30, d, kerneltest.Gauss, false).M
	cpu := kernels.NewCPU(2)
	wantAcc := kernels.NewAccum(c.Rows, d)
	want, err := cpu.NearestCentroid(rows, c, kernels.L2, wantAcc)
	if err != nil {
		t.Fatal(err)
	}
	tun := smallTunables()
	tun.bandCap, tun.bandRowBlocks = 16, 4
	b := newEmulated(t, 4, tun)
	b.Filter = true
	kx, err := b.Keep(rows)
	if err != nil {
		t.Fatal(err)
	}
	defer kx.Release()
	if l := kx.(*kept).l; !l.f16 {
		t.Errorf("kept layout %+v: want float16 with the filter", l)
	}
	for it := 0; it < 2; it++ {
		acc := kernels.NewAccum(c.Rows, d)
		got, err := kx.NearestCentroid(c, kernels.L2, acc)
		if err != nil {
			t.Fatal(err)
		}
		sameArgMax(t, "kept NearestCentroid", got, want)
		if !reflect.DeepEqual(acc, wantAcc) {
			t.Error("kept: sums and counts differ from the CPU backend's")
		}
	}
}

// TestExactFilterGPU: TestExactFilter's cases on a GPU, and CLIP-sized
// ones (d = 512: 60,000 float16 rows against 3,000 float32 centroids,
// TopK of 2,000 float32 queries over 100,000 float16 rows, PrefixMax over
// 20,000 rows of near copies), each bit for bit against the CPU backend. Not a TestGPU* name: the GPU check runs it in a process of
// its own (new kernels), after the others.
func TestExactFilterGPU(t *testing.T) {
	mk := func(t *testing.T, version int, tun tunables) *Backend {
		b := newGPU(t, 0)
		b.Version, b.tun = version, tun
		if persistFromEnv() {
			b.tun.persistBlocks = smCount(b.dev)
		}
		return b
	}
	exactFilterSuite(t, mk)
	t.Run("topk", func(t *testing.T) { exactFilterTopK(t, mk) })
	t.Run("clip", func(t *testing.T) {
		if emulated() {
			t.Skip("CLIP-sized: too slow on the emulator")
		}
		b := mk(t, 0, defaultTunables)
		b.Filter = true
		cpu := kernels.NewCPU(0)
		x := kerneltest.Gen(51, 60000, 512, kerneltest.Gauss, true).M
		c := kerneltest.Gen(52, 3000, 512, kerneltest.Gauss, false).M
		for _, m := range []kernels.Metric{kernels.L2, kernels.Cosine} {
			wantAcc, gotAcc := kernels.NewAccum(c.Rows, 512), kernels.NewAccum(c.Rows, 512)
			want, err := cpu.NearestCentroid(x, c, m, wantAcc)
			if err != nil {
				t.Fatal(err)
			}
			got, err := b.NearestCentroid(x, c, m, gotAcc)
			if err != nil {
				t.Fatal(err)
			}
			sameArgMax(t, fmt.Sprintf("NearestCentroid metric %d", m), got, want)
			if !reflect.DeepEqual(gotAcc, wantAcc) {
				t.Error("sums and counts differ from the CPU backend's")
			}
		}
		qs := kerneltest.Gen(54, 2000, 512, kerneltest.Gauss, false).M
		base := kerneltest.Gen(55, 100000, 512, kerneltest.Gauss, true).M
		for _, opt := range []kernels.TopKOptions{{K: 100}, {K: 1000, Smallest: true}} {
			want, err := cpu.TopK(qs, base, opt)
			if err != nil {
				t.Fatal(err)
			}
			got, err := b.TopK(qs, base, opt)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("TopK k=%d smallest=%v differs from the CPU backend", opt.K, opt.Smallest)
			}
		}
		p := nearTies(53, 20000, 512)
		want, err := cpu.PrefixMax(p)
		if err != nil {
			t.Fatal(err)
		}
		got, err := b.PrefixMax(p)
		if err != nil {
			t.Fatal(err)
		}
		sameArgMax(t, "PrefixMax", got, want)
		t.Logf("%s", b.Profile())
	})
}

// TestExactFilterTopK: with Filter, TopK on float16 base rows equals the
// CPU backend bit for bit (values and indices), float32 and float16
// queries, largest and smallest, k from 1 to beyond the base, with default
// and tiny tunables (chunks, query blocks, overflowing ranges redone in
// halves), on near-tie data where the unfiltered tensor-core kernels differ.
func TestExactFilterTopK(t *testing.T) {
	exactFilterTopK(t, func(t *testing.T, version int, tun tunables) *Backend { return newEmulated(t, version, tun) })
}

func exactFilterTopK(t *testing.T, mk func(t *testing.T, version int, tun tunables) *Backend) {
	splitTunables := func() tunables {
		tun := smallTunables()
		tun.chunkBytes = 256 * 128 // ranges grow past the headroom, and overflow
		return tun
	}
	const d = 40
	base := nearTies(61, 500, d)
	q32 := kerneltest.Gen(62, 37, d, kerneltest.Gauss, false).M
	cpu := kernels.NewCPU(2)
	for _, qs := range []struct {
		name string
		m    kernels.Matrix
	}{{"float32", q32}, {"float16", rounded(q32)}} {
		for _, opt := range []kernels.TopKOptions{{K: 1}, {K: 17, BaseOffset: 5}, {K: 40, Smallest: true}, {K: 600}} {
			want, err := cpu.TopK(qs.m, base, opt)
			if err != nil {
				t.Fatal(err)
			}
			approx := mk(t, 4, defaultTunables)
			approx.Precision = Float16
			ap, err := approx.TopK(qs.m, base, opt)
			if err != nil {
				t.Fatal(err)
			}
			differ := !reflect.DeepEqual(ap.Idx, want.Idx) || !reflect.DeepEqual(ap.Val, want.Val)
			for _, c := range []struct {
				version int
				tun     tunables
			}{{4, defaultTunables}, {5, defaultTunables}, {7, defaultTunables}, {2, splitTunables()}} {
				t.Run(fmt.Sprintf("%s/k=%d,smallest=%v/v%d", qs.name, opt.K, opt.Smallest, c.version), func(t *testing.T) {
					b := mk(t, c.version, c.tun)
					if b.Float16Version() != c.version {
						t.Skipf("version %d does not run here", c.version)
					}
					b.Filter = true
					got, err := b.TopK(qs.m, base, opt)
					if err != nil {
						t.Fatal(err)
					}
					bad := 0
					for i := range want.Idx {
						if got.Idx[i] != want.Idx[i] || math.Float32bits(got.Val[i]) != math.Float32bits(want.Val[i]) {
							bad++
						}
					}
					if bad > 0 {
						t.Errorf("%d of %d entries differ from the CPU backend", bad, len(want.Idx))
					}
				})
			}
			// (float16 queries: the emulator's float32 sums of exact float16
			// products are the CPU's, so only float32 queries can show it)
			if opt.K == 17 && qs.name == "float32" && !differ {
				t.Errorf("%s queries: the unfiltered kernels agree with the CPU backend: the data does not test the filter", qs.name)
			}
		}
	}
	// exact copies: equal values, ties to the smaller index; 250 random rows
	// (ranges grow), then 100 copies of query 0's rounding, which all beat
	// its threshold: the range overflows and is redone in halves
	t.Run("copies", func(t *testing.T) {
		src := kerneltest.Gen(63, 250, d, kerneltest.Gauss, true).M
		h := make([]uint16, 350*d)
		copy(h, src.F16)
		q0 := rounded(kernels.F32Matrix(q32.F32[:d], 1, d))
		for i := 250; i < 350; i++ {
			copy(h[i*d:(i+1)*d], q0.F16)
		}
		dup := kernels.F16Matrix(h, 350, d)
		opt := kernels.TopKOptions{K: 2}
		want, err := cpu.TopK(q32, dup, opt)
		if err != nil {
			t.Fatal(err)
		}
		b := mk(t, 4, splitTunables())
		b.Filter = true
		got, err := b.TopK(q32, dup, opt)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Error("differs from the CPU backend")
		}
		if b.stats.splits == 0 {
			t.Errorf("no range overflowed: %+v", b.stats)
		}
	})
}

// TestExactFilterConformance: the conformance suites (shapes, edge values,
// errors for NaN and wrong dims, k beyond the base, empty sets) through the
// filter's paths, with default and tiny tunables.
func TestExactFilterConformance(t *testing.T) {
	for _, c := range []struct {
		version int
		small   bool
	}{{4, false}, {5, true}, {7, true}} {
		t.Run(fmt.Sprintf("v%d,small=%v", c.version, c.small), func(t *testing.T) {
			tun := defaultTunables
			if c.small {
				tun = smallTunables()
				tun.bandCap = 2
			}
			b := newEmulated(t, c.version, tun)
			b.Filter = true
			kerneltest.All(t, b)
		})
	}
}
