package kernels

import (
	"math"
	"math/rand/v2"
	"testing"
)

func TestF16ToF32Exhaustive(t *testing.T) {
	src := make([]uint16, 1<<16)
	for i := range src {
		src[i] = uint16(i)
	}
	dst := make([]float32, len(src)+3)
	dst[len(src)] = 7
	F16ToF32(dst, src[:])
	if dst[len(src)] != 7 {
		t.Fatal("wrote past len(src)")
	}
	for i, h := range src {
		got := dst[i]
		// independent reference via float64 arithmetic
		exp := int(h>>10) & 0x1f
		man := float64(h & 0x3ff)
		var want float64
		switch {
		case exp == 0x1f && man == 0:
			want = math.Inf(1)
		case exp == 0x1f:
			want = math.NaN()
		case exp == 0:
			want = man * math.Pow(2, -24)
		default:
			want = (1 + man/1024) * math.Pow(2, float64(exp-15))
		}
		if h&0x8000 != 0 {
			want = -want
		}
		if math.IsNaN(want) {
			if got == got {
				t.Fatalf("%#04x: got %v want NaN", h, got)
			}
			continue
		}
		if float64(got) != want || math.Signbit(float64(got)) != math.Signbit(want) {
			t.Fatalf("%#04x: got %v want %v", h, got, want)
		}
		if f16ToF32(h) != got && got == got {
			t.Fatalf("%#04x: generic %v asm %v", h, f16ToF32(h), got)
		}
		// round trip
		if back := f32ToF16(got); back != h && got == got {
			t.Fatalf("%#04x: round trip gives %#04x", h, back)
		}
	}
}

func TestF32ToF16(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	var src []float32
	for i := 0; i < 100000; i++ {
		switch i % 4 {
		case 0:
			src = append(src, float32(r.NormFloat64()))
		case 1:
			src = append(src, math.Float32frombits(r.Uint32()))
		case 2:
			src = append(src, float32(r.NormFloat64()*1e-6))
		default:
			src = append(src, float32(r.NormFloat64()*6e4))
		}
	}
	src = append(src, 65504, 65519.99, 65520, -65520, 5.960464477539063e-08, 2.98e-8, 2.9802322387695312e-08, 0, float32(math.Copysign(0, -1)), float32(math.Inf(1)), float32(math.Inf(-1)))
	dst := make([]uint16, len(src))
	F32ToF16(dst, src)
	for i, f := range src {
		want := f32ToF16(f)
		if f != f {
			if dst[i]&0x7c00 != 0x7c00 || dst[i]&0x3ff == 0 {
				t.Fatalf("NaN %#x -> %#04x", math.Float32bits(f), dst[i])
			}
			continue
		}
		if dst[i] != want {
			t.Fatalf("%v (%#x): asm %#04x generic %#04x", f, math.Float32bits(f), dst[i], want)
		}
		// nearest check via float64
		g := float64(f16ToF32(want))
		if !math.IsInf(g, 0) {
			for _, nb := range []uint16{want + 1, want - 1} {
				o := float64(f16ToF32(nb))
				if o == o && !math.IsInf(o, 0) && math.Abs(o-float64(f)) < math.Abs(g-float64(f)) {
					t.Fatalf("%v: %#04x not nearest (%#04x closer)", f, want, nb)
				}
			}
		}
	}
}

func BenchmarkF16ToF32(b *testing.B) {
	src := make([]uint16, 1<<16)
	dst := make([]float32, 1<<16)
	b.SetBytes(int64(len(src) * 6))
	for i := 0; i < b.N; i++ {
		F16ToF32(dst, src)
	}
}
