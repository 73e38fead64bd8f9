package kernels

import (
	"bytes"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

func randSlice(r *rand.Rand, n int) []float32 {
	s := make([]float32, n)
	for i := range s {
		s[i] = float32(r.NormFloat64())
	}
	return s
}

func TestMicroKernel(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, kc := range []int{0, 1, 2, 3, 4, 5, 7, 8, 17, 64, 513} {
		for _, accum := range []bool{false, true} {
			a := randSlice(r, kc*mr)
			b := randSlice(r, kc*nr)
			const ldc = nr + 5
			const guard = 16
			c0 := randSlice(r, mr*ldc)
			// NaN guard regions around C.
			buf := make([]float32, len(c0)+2*guard)
			for i := range buf {
				buf[i] = nan32()
			}
			c := buf[guard : guard+len(c0)]
			copy(c, c0)
			for i := 0; i < mr; i++ {
				for j := nr; j < ldc; j++ {
					c[i*ldc+j] = nan32()
				}
			}
			microKernel(kc, a, b, c, ldc, accum)
			for i := 0; i < mr; i++ {
				for j := 0; j < nr; j++ {
					var s float64
					if accum {
						s = float64(c0[i*ldc+j])
					}
					var mag float64 = 1
					for p := 0; p < kc; p++ {
						s += float64(a[p*mr+i]) * float64(b[p*nr+j])
						mag += abs64(float64(a[p*mr+i]) * float64(b[p*nr+j]))
					}
					if d := abs64(float64(c[i*ldc+j]) - s); d > 1e-6*mag {
						t.Fatalf("kc=%d accum=%v c[%d][%d]=%v want %v", kc, accum, i, j, c[i*ldc+j], s)
					}
				}
				for j := nr; j < ldc && i < mr-1; j++ {
					if c[i*ldc+j] == c[i*ldc+j] {
						t.Fatalf("kc=%d wrote outside tile at %d,%d", kc, i, j)
					}
				}
			}
			for i := 0; i < guard; i++ {
				if buf[i] == buf[i] || buf[len(buf)-1-i] == buf[len(buf)-1-i] {
					t.Fatalf("guard region overwritten")
				}
			}
		}
	}
}

func BenchmarkMicroKernel(b *testing.B) {
	for _, kc := range []int{128, 256, 512} {
		b.Run(fmt.Sprintf("kc=%d", kc), func(b *testing.B) {
			r := rand.New(rand.NewPCG(1, 2))
			a := randSlice(r, kc*mr)
			bb := randSlice(r, kc*nr)
			c := make([]float32, mr*nr)
			for i := 0; i < b.N; i++ {
				microKernel(kc, a, bb, c, nr, false)
			}
			b.ReportMetric(float64(b.N)*2*mr*nr*float64(kc)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
		})
	}
}

func BenchmarkPeak(b *testing.B) {
	const n = 1 << 16
	var fl float64
	for i := 0; i < b.N; i++ {
		f, ok := peakLoop(n)
		if !ok {
			b.Skip("no asm")
		}
		fl += f
	}
	b.ReportMetric(fl/b.Elapsed().Seconds()/1e9, "GFLOP/s")
}

// TestAVX2MicroKernel: kern5 (AVX2 sub-blocks) gives kern3's bits exactly,
// for every k and both accumulate modes, and writes nothing outside the
// block (skipped without AVX2+FMA; kern3 needs AVX-512 to compare).
func TestAVX2MicroKernel(t *testing.T) {
	if !cpuFeat.avx2 || !cpuFeat.fma || !haveAsmKernel {
		t.Skip("no AVX2+FMA")
	}
	r := rand.New(rand.NewPCG(3, 4))
	for _, kc := range []int{1, 2, 3, 5, 16, 63, 256, 513} {
		for _, accum := range []int{0, 1} {
			a := randSlice(r, kc*mr)
			b := randSlice(r, kc*nr)
			const ldc = nr + 3
			c0 := randSlice(r, mr*ldc+5)
			got := append([]float32(nil), c0...)
			kern14x32AVX2(kc, a, b, got, ldc, accum)
			want := append([]float32(nil), c0...)
			if cpuFeat.avx512 {
				microKernel(kc, a, b, want, ldc, accum == 1)
			} else {
				kernFMARef(kc, a, b, want, ldc, accum == 1)
			}
			for i := range got {
				row, col := i/ldc, i%ldc
				in := row < mr && col < nr
				if !in && got[i] != c0[i] {
					t.Fatalf("kc=%d: wrote outside the block at %d,%d", kc, row, col)
				}
				if in && math.Float32bits(got[i]) != math.Float32bits(want[i]) {
					t.Fatalf("kc=%d accum=%d c[%d][%d] = %v, want %v (kern3's bits)", kc, accum, row, col, got[i], want[i])
				}
			}
		}
	}
}

// TestGenericKernelFMA: kern1, the plain-Go twin (-tags noasm, arm64, CPUs
// without FMA), gives the FMA kernels' bits: one fused chain per element.
func TestGenericKernelFMA(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	for _, kc := range []int{1, 2, 17, 512} {
		for _, accum := range []bool{false, true} {
			a := randSlice(r, kc*mr)
			b := randSlice(r, kc*nr)
			got := randSlice(r, mr*nr)
			want := append([]float32(nil), got...)
			kernGeneric(kc, a, b, got, nr, accum)
			kernFMARef(kc, a, b, want, nr, accum)
			for i := range got {
				if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
					t.Fatalf("kc=%d accum=%v c[%d][%d] = %v, want %v (one fused chain)", kc, accum, i/nr, i%nr, got[i], want[i])
				}
			}
		}
	}
}

// kernFMARef is kernGeneric with fma32: every element one fused chain.
func kernFMARef(kc int, a, b, c []float32, ldc int, accum bool) {
	for i := 0; i < mr; i++ {
		for j := 0; j < nr; j++ {
			var s float32
			if accum {
				s = c[i*ldc+j]
			}
			for p := 0; p < kc; p++ {
				s = fma32(a[p*mr+i], b[p*nr+j], s)
			}
			c[i*ldc+j] = s
		}
	}
}

// TestKernelAsmFresh: kern_amd64.s is what scripts/gen_kernel_asm.py
// writes (edit the generator, not the assembly).
func TestKernelAsmFresh(t *testing.T) {
	const py = "/usr/bin/python3"
	if _, err := os.Stat(py); err != nil {
		if os.Getenv("HPCRUN_REQUIRE_REFS") == "1" {
			t.Fatalf("%s is required: %v", py, err)
		}
		t.Skip(err)
	}
	out := filepath.Join(t.TempDir(), "kern_amd64.s")
	if b, err := exec.Command(py, "../scripts/gen_kernel_asm.py", out).CombinedOutput(); err != nil {
		t.Fatalf("gen_kernel_asm.py: %v\n%s", err, b)
	}
	want, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile("kern_amd64.s")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("kernels/kern_amd64.s is stale or edited by hand: run /usr/bin/python3 scripts/gen_kernel_asm.py")
	}
}
