package kernels

import (
	"fmt"
	"math"
	"math/big"
	"math/rand/v2"
	"slices"
	"testing"
)

func skipNoAMX(t *testing.T) {
	t.Helper()
	if !cpuFeat.amx || !amxGranted() {
		t.Skip("no AMX-BF16 on this CPU (or HPCRUN_NO_AMX set, or the OS refused the tile state): engine 2 is not used here")
	}
}

// TestFMA32 holds the plain-Go FMA to exact big.Float arithmetic, including
// cancellation and halfway cases.
func TestFMA32(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 200000; i++ {
		a := float32(r.NormFloat64())
		b := float32(r.NormFloat64() * math.Ldexp(1, r.IntN(20)-10))
		c := float32(r.NormFloat64() * math.Ldexp(1, r.IntN(40)-20))
		switch i % 4 {
		case 1:
			c = -float32(float64(a) * float64(b)) // near cancellation
		case 2:
			// halfway: c a power of two, a·b tiny and of equal size to half an ulp of c
			c = float32(math.Ldexp(1, r.IntN(10)))
			b = float32(math.Ldexp(float64(c), -25)) / a
		case 3:
			if i%8 == 3 { // results below float32's normal range
				a = float32(math.Ldexp(r.NormFloat64(), -70))
				b = float32(math.Ldexp(r.NormFloat64(), -60))
				c = float32(math.Ldexp(r.NormFloat64(), -128-r.IntN(20)))
			}
		}
		ex := new(big.Float).SetPrec(200).SetFloat64(float64(a))
		ex.Mul(ex, new(big.Float).SetPrec(200).SetFloat64(float64(b)))
		ex.Add(ex, new(big.Float).SetPrec(200).SetFloat64(float64(c)))
		want, _ := ex.Float32()
		if got := fma32(a, b, c); got != want && !(got == 0 && want == 0) {
			t.Fatalf("fma32(%g, %g, %g) = %g, want %g", a, b, c, got, want)
		}
	}
	// Double rounding: the exact sum 1 + 2⁻²⁴ + 2⁻⁵⁴ rounds to the float32
	// midpoint 1 + 2⁻²⁴ in float64, then to even (1); rounded once it is 1 + 2⁻²³.
	a := float32(1 + math.Ldexp(1, -15))
	b := -float32(math.Ldexp(1-math.Ldexp(1, -15), -24))
	c := float32(1 + math.Ldexp(1, -23))
	if got := fma32(a, b, c); got != c {
		t.Fatalf("fma32(%g, %g, %g) = %.10g, want %.10g (rounded once)", a, b, c, got, c)
	}
	if got := madd32(a, b, c); got != c {
		t.Fatalf("madd32(%g, %g, %g) = %.10g, want %.10g (rounded once)", a, b, c, got, c)
	}
}

// TestDotGatherMatchesMicroKernel: the rescoring chain gives exactly the
// micro-kernel's value for every entry of a tile, from panels and from
// row-major rows.
func TestDotGatherMatchesMicroKernel(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for _, d := range []int{1, 7, 32, 100, 512} {
		a := randSlice(r, mr*d)
		b := randSlice(r, nr*d)
		for i := range a {
			a[i] *= float32(math.Ldexp(1, r.IntN(30)-15))
		}
		ap := make([]float32, mr*d)
		bp := make([]float32, nr*d)
		scratch := make([]float32, nr*d+16)
		if err := packRows(ap, F32Matrix(a, mr, d), 0, mr, mr, false, scratch); err != nil {
			t.Fatal(err)
		}
		if err := packRows(bp, F32Matrix(b, nr, d), 0, nr, nr, false, scratch); err != nil {
			t.Fatal(err)
		}
		c := make([]float32, mr*nr)
		microKernel(d, ap, bp, c, nr, false)
		var offa, offb, offra, offrb []int32
		for i := 0; i < mr; i++ {
			for j := 0; j < nr; j++ {
				offa = append(offa, int32(i))
				offb = append(offb, int32(j))
				offra = append(offra, int32(i*d))
				offrb = append(offrb, int32(j*d))
			}
		}
		got := make([]float32, len(offa))
		gotRows := make([]float32, len(offa))
		dotGatherS(ap, offa, mr, bp, offb, nr, d, got)
		dotGatherS(a, offra, 1, b, offrb, 1, d, gotRows)
		goRef := make([]float32, len(offa))
		dotGatherGo(ap, offa, mr, bp, offb, nr, d, goRef)
		// kernGeneric (no assembly) does not fuse multiply and add, so
		// only the assembly micro-kernel is held to the FMA chain.
		fused := haveAsmKernel && cpuFeat.avx512
		for l := range got {
			want := goRef[l]
			if fused && c[int(offa[l])*nr+int(offb[l])] != want {
				t.Fatalf("d=%d pair %d: dotGatherGo %g, micro-kernel %g", d, l, want, c[int(offa[l])*nr+int(offb[l])])
			}
			if got[l] != want || gotRows[l] != want {
				t.Fatalf("d=%d pair %d: dotGather %g / %g (rows), dotGatherGo %g", d, l, got[l], gotRows[l], want)
			}
		}
	}
}

func TestDotGather1(t *testing.T) {
	r := rand.New(rand.NewPCG(15, 16))
	for _, d := range []int{1, 15, 16, 17, 100, 512} {
		a := randSlice(r, 3*d)
		b := randSlice(r, 40*d)
		offb := make([]int32, 32)
		for l := range offb {
			offb[l] = int32(r.IntN(40) * d)
		}
		for _, sa := range []int{1, 3} {
			for _, pf := range [][]int32{nil, offb[16:]} {
				got := make([]float32, 32)
				want := make([]float32, 32)
				dotGather1S(a, sa, b, offb, 1, d, got, pf)
				dotGather1Go(a, sa, b, offb, 1, d, want)
				if !slices.Equal(got, want) {
					t.Fatalf("d=%d sa=%d: dotGather1 %v want %v", d, sa, got, want)
				}
			}
		}
	}
}

// TestDotT holds the transpose kernels (refine3, refine4) to the Go twins
// bit for bit, rows read to their very end (guards after each row would
// fault only if a kernel read past d: masked tails).
func TestDotT(t *testing.T) {
	r := rand.New(rand.NewPCG(17, 18))
	scratch := make([]float32, 272)
	for _, d := range []int{1, 5, 15, 16, 17, 31, 48, 100, 512} {
		a := randSlice(r, 30*d)
		b := randSlice(r, 50*d)
		offa := make([]int32, 48)
		offb := make([]int32, 48)
		for l := range offa {
			offa[l] = int32(r.IntN(30) * d)
			offb[l] = int32(r.IntN(50) * d)
		}
		got := make([]float32, 48)
		want := make([]float32, 48)
		dotTS(a, offa, b, offb, d, got, scratch)
		dotGatherGo(a, offa, 1, b, offb, 1, d, want)
		if !slices.Equal(got, want) {
			t.Fatalf("d=%d: dotT %v want %v", d, got, want)
		}
		for _, pf := range [][]int32{nil, offb[16:32]} {
			dotT1S(a[7*d:], b, offb, d, got, pf, scratch)
			dotGather1Go(a[7*d:], 1, b, offb, 1, d, want)
			if !slices.Equal(got, want) {
				t.Fatalf("d=%d: dotT1 %v want %v", d, got, want)
			}
		}
	}
}

func TestBF16RowAndVNNI(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	for _, d := range []int{1, 15, 16, 17, 33, 64, 100} {
		ld := (d + 31) &^ 31
		for _, neg := range []bool{false, true} {
			x := randSlice(r, d)
			for i := range x {
				switch r.IntN(6) {
				case 0:
					x[i] = float32(math.Ldexp(float64(x[i]), -130)) // float32 subnormal
				case 1:
					x[i] = math.Float32frombits(0x00800000 | uint32(r.IntN(1<<16))) // rounds to the bf16 min normal or below
				case 2:
					x[i] = 0
				}
			}
			for _, cs := range []int{32, 1024} {
				got := make([]uint16, (ld/32-1)*cs+32+cs)
				want := make([]uint16, len(got))
				for i := range got {
					got[i], want[i] = 0xdead, 0xdead
				}
				var gs, ws [48]float32
				bf16RowS(got, x, ld, cs, neg, &gs)
				bf16RowGo(want, x, ld, cs, neg, &ws)
				if !slices.Equal(got, want) {
					t.Fatalf("d=%d neg=%v cstride=%d: bf16Row %x want %x", d, neg, cs, got, want)
				}
				if gs != ws {
					t.Fatalf("d=%d neg=%v: sums %v want %v", d, neg, gs, ws)
				}
			}
		}
	}
	for _, np := range []int{1, 3} {
		for _, ks := range []int{1, 4} {
			ld := 32*ks + 32
			src := make([]uint16, 32*np*ld)
			for i := range src {
				src[i] = uint16(r.Uint32())
			}
			got := make([]uint16, np*ks*1024+8)
			want := make([]uint16, np*ks*1024+8)
			vnniPackS(got, src, ld, np, ks)
			vnniPackGo(want, src, ld, np, ks)
			if !slices.Equal(got, want) {
				t.Fatalf("np=%d ks=%d: vnniPack differs", np, ks)
			}
		}
	}
}

// TestAMXTile: small integers make every bf16 product and float32 sum
// exact, so the AMX tile must equal the float64 twin exactly; Gaussian
// data within the accumulation bound.
func TestAMXTile(t *testing.T) {
	skipNoAMX(t)
	r := rand.New(rand.NewPCG(7, 8))
	for _, sh := range [][3]int{{1, 1, 1}, {2, 3, 4}, {4, 2, 16}} {
		mb, np, ks := sh[0], sh[1], sh[2]
		for _, ints := range []bool{true, false} {
			a := make([]uint16, 32*mb*32*ks) // tiled (tiledIndex)
			brow := make([]uint16, 32*np*32*ks)
			gen := func() uint16 {
				if ints {
					return uint16(math.Float32bits(float32(r.IntN(9)-4)) >> 16)
				}
				return uint16(bf16Bits(float32(r.NormFloat64())) >> 16)
			}
			for i := range a {
				a[i] = gen()
			}
			for i := range brow {
				brow[i] = gen()
			}
			b := make([]uint16, np*ks*1024)
			vnniPackGo(b, brow, 32*ks, np, ks)
			ldc := 32*np + 16
			got := make([]float32, 32*mb*ldc)
			want := make([]float32, 32*mb*ldc)
			amxTileS(a, b, got, ldc, mb, np, ks)
			amxTileGo(a, b, want, ldc, mb, np, ks)
			for i := 0; i < 32*mb; i++ {
				for j := 0; j < 32*np; j++ {
					g, w := got[i*ldc+j], want[i*ldc+j]
					var abs float64
					for k := 0; k < 32*ks; k++ {
						abs += math.Abs(bf16Value(a[tiledIndex(i, k, ks)]) * bf16Value(brow[j*32*ks+k]))
					}
					if tol := gamma(64*ks) * abs; math.Abs(float64(g-w)) > tol || (ints && g != w) {
						t.Fatalf("mb=%d np=%d ks=%d ints=%v: c[%d][%d] = %g want %g", mb, np, ks, ints, i, j, g, w)
					}
				}
			}
		}
	}
}

func TestFilterAndMaxTile(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 10))
	for _, rows := range []int{1, 5} {
		for _, n := range []int{1, 15, 16, 17, 40} {
			ldc := 48
			c := make([]float32, rows*ldc)
			for i := range c {
				c[i] = float32(r.IntN(7) - 3)
			}
			bias := make([]float32, 64)
			for i := range bias {
				bias[i] = float32(r.IntN(3) - 1)
			}
			thr := make([]float32, rows)
			for i := range thr {
				thr[i] = float32(r.IntN(5) - 2)
			}
			for _, bs := range [][]float32{nil, bias} {
				for _, mx := range []int{0, 3, 1000} {
					got := make([]int32, mx+16)
					want := make([]int32, mx+16)
					gn := filterTileS(c, ldc, rows, n, bs, thr, got, mx)
					wn := filterTileGo(c, ldc, rows, n, bs, thr, want, mx)
					if gn != wn || (gn <= mx && !slices.Equal(got[:gn], want[:wn])) {
						t.Fatalf("rows=%d n=%d bias=%v max=%d: filterTile %d %v want %d %v", rows, n, bs != nil, mx, gn, got[:min(gn, mx)], wn, want[:min(wn, mx)])
					}
				}
				got := make([]float32, rows)
				want := make([]float32, rows)
				maxTileS(c, ldc, rows, n, bs, got)
				maxTileGo(c, ldc, rows, n, bs, want)
				if !slices.Equal(got, want) {
					t.Fatalf("rows=%d n=%d: maxTile %v want %v", rows, n, got, want)
				}
			}
		}
	}
}

// engineData returns test inputs of several kinds: unit Gaussian rows,
// small integers (exact products, many ties), near-duplicates (entries
// within the filter's error bound of each other), rows of mixed scale
// (norms from 2^-60 to 2^35), rows of float32 subnormals, float16.
func engineData(r *rand.Rand, kind string, rows, d int, f16 bool) Matrix {
	x := make([]float32, rows*d)
	for i := 0; i < rows; i++ {
		row := x[i*d : (i+1)*d]
		switch kind {
		case "int":
			for k := range row {
				row[k] = float32(r.IntN(5) - 2)
			}
		case "near":
			if i > 0 && r.IntN(2) == 0 {
				src := x[r.IntN(i)*d:]
				for k := range row {
					row[k] = src[k] * (1 + float32(r.NormFloat64()*1e-4))
				}
				continue
			}
			fallthrough
		default:
			var s float64
			for k := range row {
				row[k] = float32(r.NormFloat64())
				s += float64(row[k]) * float64(row[k])
			}
			sc := 1 / math.Sqrt(s)
			switch kind {
			case "scale":
				sc *= math.Ldexp(1, r.IntN(95)-60)
			case "tiny": // float32 subnormal entries, products underflow
				sc *= math.Ldexp(1, -120-r.IntN(10))
			}
			for k := range row {
				row[k] = float32(float64(row[k]) * sc)
			}
		}
	}
	if f16 {
		h := make([]uint16, len(x))
		F32ToF16(h, x)
		return F16Matrix(h, rows, d)
	}
	return F32Matrix(x, rows, d)
}

// TestEngine2MatchesEngine1 runs every op through engine 2 (AMX filter)
// and engine 1 (all entries exact) and requires identical bits.
func TestEngine2MatchesEngine1(t *testing.T) {
	skipNoAMX(t)
	for _, small := range []int{0, 1, 2} {
		func() {
			switch small {
			case 1:
				defer SetSmallBlocks(false)()
			case 2:
				defer SetSmallBlocks(true)()
			}
			r := rand.New(rand.NewPCG(11, uint64(small)))
			for _, kind := range []string{"gauss", "int", "near", "scale", "tiny"} {
				for _, sh := range [][3]int{{1, 1, 32}, {37, 300, 33}, {130, 1100, 64}, {250, 700, 100}} {
					f16 := kind == "gauss" && sh[0] == 130
					q := engineData(r, kind, sh[0], sh[2], f16)
					b := engineData(r, kind, sh[1], sh[2], f16)
					name := fmt.Sprintf("small=%d/%s/%dx%dx%d/f16=%v", small, kind, sh[0], sh[1], sh[2], f16)
					t.Run(name, func(t *testing.T) { compareEngines(t, r, q, b) })
				}
			}
		}()
	}
}

// TestEngine2Portable runs engine 2 on the plain-Go twin of the AMX
// kernel (as on a CPU with AVX-512 but no AMX) and compares with engine 1.
func TestEngine2Portable(t *testing.T) {
	if !haveAsmKernel || !cpuFeat.avx512 {
		t.Skip("engine 2 holds its rescoring to the assembly micro-kernels' FMA chains")
	}
	amx := cpuFeat.amx
	cpuFeat.amx, amxForce = false, true
	defer func() { cpuFeat.amx, amxForce = amx, false }()
	r := rand.New(rand.NewPCG(19, 20))
	for _, kind := range []string{"gauss", "near"} {
		q := engineData(r, kind, 40, 32, false)
		b := engineData(r, kind, 600, 32, kind == "near")
		t.Run(kind, func(t *testing.T) { compareEngines(t, r, q, b) })
	}
}

func compareEngines(t *testing.T, r *rand.Rand, q, b Matrix) {
	f0, d0, x0 := amxCount.filtered.Load(), amxCount.dense.Load(), amxCount.exact.Load()
	defer func() {
		t.Logf("engine 2 tiles: %d filtered, %d dense, %d exact", amxCount.filtered.Load()-f0, amxCount.dense.Load()-d0, amxCount.exact.Load()-x0)
	}()
	e2 := &CPU{Threads: 2}
	e1 := &CPU{Threads: 2, NoAMX: true}
	eqArg := func(what string, g, w ArgMax, err1, err2 error) {
		t.Helper()
		if err1 != nil || err2 != nil {
			t.Fatalf("%s: errors %v / %v", what, err1, err2)
		}
		if !slices.Equal(g.Idx, w.Idx) || !slices.EqualFunc(g.Val, w.Val, func(a, b float32) bool { return math.Float32bits(a) == math.Float32bits(b) }) {
			for i := range g.Idx {
				if g.Idx[i] != w.Idx[i] || g.Val[i] != w.Val[i] {
					t.Fatalf("%s: row %d: engine 2 (%g, %d), engine 1 (%g, %d)", what, i, g.Val[i], g.Idx[i], w.Val[i], w.Idx[i])
				}
			}
		}
	}
	for _, k := range []int{1, 10, 100} {
		for _, small := range []bool{false, true} {
			opt := TopKOptions{K: k, Smallest: small, BaseOffset: 7}
			g, err2 := e2.TopK(q, b, opt)
			w, err1 := e1.TopK(q, b, opt)
			if err1 != nil || err2 != nil {
				t.Fatalf("TopK: %v / %v", err1, err2)
			}
			if !slices.Equal(g.Idx, w.Idx) || !slices.Equal(g.Val, w.Val) {
				t.Fatalf("TopK k=%d smallest=%v: engines differ", k, small)
			}
		}
	}
	g, err2 := e2.MaxArg(q, b)
	w, err1 := e1.MaxArg(q, b)
	eqArg("MaxArg", g, w, err1, err2)
	thr := make([]float32, q.Rows)
	for i := range thr {
		thr[i] = float32(r.NormFloat64() * 0.1)
	}
	g, err2 = e2.ShiftedMax(q, b, thr)
	w, err1 = e1.ShiftedMax(q, b, thr)
	eqArg("ShiftedMax", g, w, err1, err2)
	for _, metric := range []Metric{L2, Cosine} {
		a2, a1 := NewAccum(q.Rows, q.Dim), NewAccum(q.Rows, q.Dim)
		g, err2 = e2.NearestCentroid(b, q, metric, a2)
		w, err1 = e1.NearestCentroid(b, q, metric, a1)
		eqArg(fmt.Sprintf("NearestCentroid(%d)", metric), g, w, err1, err2)
		if !slices.Equal(a2.Sums, a1.Sums) || !slices.Equal(a2.Counts, a1.Counts) {
			t.Fatalf("NearestCentroid sums differ")
		}
	}
	g, err2 = e2.PrefixMax(b)
	w, err1 = e1.PrefixMax(b)
	eqArg("PrefixMax", g, w, err1, err2)
}

// TestEngine2LargeK: k up to 20,000 (the paper's candidate count) on
// engine 2, against engine 1.
func TestEngine2LargeK(t *testing.T) {
	skipNoAMX(t)
	r := rand.New(rand.NewPCG(21, 22))
	q := engineData(r, "gauss", 5, 64, false)
	b := engineData(r, "near", 23000, 64, true)
	for _, k := range []int{1000, 20000, 30000} {
		opt := TopKOptions{K: k}
		g, err2 := (&CPU{Threads: 2}).TopK(q, b, opt)
		w, err1 := (&CPU{Threads: 2, NoAMX: true}).TopK(q, b, opt)
		if err1 != nil || err2 != nil {
			t.Fatal(err1, err2)
		}
		if !slices.Equal(g.Idx, w.Idx) || !slices.Equal(g.Val, w.Val) {
			t.Fatalf("k=%d: engines differ", k)
		}
	}
}

// TestEngine2NearTies: thousands of base rows within the filter's error
// bound of each other (copies of row 0 with 1e-6 noise) make TopK's intervals
// overlap; reservoirs must stay bounded (resolved exactly) and the result
// equal engine 1's.
func TestEngine2NearTies(t *testing.T) {
	skipNoAMX(t)
	r := rand.New(rand.NewPCG(23, 24))
	const d = 64
	q := engineData(r, "gauss", 30, d, false)
	b := engineData(r, "gauss", 20000, d, false)
	for i := 1; i < b.Rows; i++ {
		if i%10 == 0 { // sparse enough that tiles stay approximate
			for k := 0; k < d; k++ {
				b.F32[i*d+k] = b.F32[k] * (1 + float32(r.NormFloat64()*1e-6))
			}
		}
	}
	for i := 0; i < q.Rows; i++ { // queries near row 0: the copies are their best matches
		for k := 0; k < d; k++ {
			q.F32[i*d+k] = b.F32[k] + float32(r.NormFloat64()*0.01/math.Sqrt(d))
		}
	}
	r0 := amxCount.resolved.Load()
	for _, k := range []int{5, 100} {
		opt := TopKOptions{K: k}
		g, err2 := (&CPU{Threads: 2}).TopK(q, b, opt)
		w, err1 := (&CPU{Threads: 2, NoAMX: true}).TopK(q, b, opt)
		if err1 != nil || err2 != nil {
			t.Fatal(err1, err2)
		}
		if !slices.Equal(g.Idx, w.Idx) || !slices.Equal(g.Val, w.Val) {
			t.Fatalf("k=%d: engines differ", k)
		}
	}
	if amxCount.resolved.Load() == r0 {
		t.Fatalf("no reservoir was resolved: the test does not reach the bound")
	}
}

// TestEngine2NearTiesArgmax: ~10 centroids per tile within the error
// bound of each other and of every point; the argmax pending list must be
// flushed early, and the assignment and sums equal engine 1's.
func TestEngine2NearTiesArgmax(t *testing.T) {
	skipNoAMX(t)
	r := rand.New(rand.NewPCG(25, 26))
	const d = 64
	c := engineData(r, "gauss", 2048, d, false)
	for i := 50; i < c.Rows; i += 50 {
		for k := 0; k < d; k++ {
			c.F32[i*d+k] = c.F32[k] * (1 + float32(r.NormFloat64()*1e-6))
		}
	}
	x := engineData(r, "gauss", 500, d, false)
	for i := 0; i < x.Rows; i++ {
		for k := 0; k < d; k++ {
			x.F32[i*d+k] = c.F32[k] + float32(r.NormFloat64()*0.01/math.Sqrt(d))
		}
	}
	r0 := amxCount.resolved.Load()
	a2, a1 := NewAccum(c.Rows, d), NewAccum(c.Rows, d)
	g, err2 := (&CPU{Threads: 2}).NearestCentroid(x, c, L2, a2)
	w, err1 := (&CPU{Threads: 2, NoAMX: true}).NearestCentroid(x, c, L2, a1)
	if err1 != nil || err2 != nil {
		t.Fatal(err1, err2)
	}
	if !slices.Equal(g.Idx, w.Idx) || !slices.Equal(g.Val, w.Val) || !slices.Equal(a2.Sums, a1.Sums) {
		t.Fatal("engines differ")
	}
	if amxCount.resolved.Load() == r0 {
		t.Fatal("the pending list was never flushed early: the test does not reach the bound")
	}
}

// TestEngine2Errors: non-finite input is reported by engine 2 too.
func TestEngine2Errors(t *testing.T) {
	skipNoAMX(t)
	r := rand.New(rand.NewPCG(13, 14))
	q := engineData(r, "gauss", 40, 64, false)
	b := engineData(r, "gauss", 300, 64, false)
	q.F32[5*64+3] = float32(math.NaN())
	e2 := &CPU{Threads: 2}
	if _, err := e2.NearestCentroid(q, b, L2, nil); err == nil {
		t.Fatal("NaN in points not reported")
	}
	if _, err := e2.TopK(q, b, TopKOptions{K: 3}); err == nil {
		t.Fatal("NaN in queries not reported")
	}
	q.F32[5*64+3] = 0
	b.F32[200*64] = float32(math.Inf(1))
	if _, err := e2.TopK(q, b, TopKOptions{K: 3}); err == nil {
		t.Fatal("Inf in base not reported")
	}
}
