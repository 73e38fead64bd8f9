package cuda

import (
	"errors"
	"math/rand/v2"
	"testing"

	"hpcrun/kernels"
)

// TestCopyF16 checks the word-at-a-time copy and NaN/Inf test against the
// plain per-value rule for every 16-bit pattern in every lane position and
// every tail length, with and without the sign flip.
func TestCopyF16(t *testing.T) {
	plain := func(dst, src []uint16, sign uint16) bool {
		bad := false
		for i, h := range src {
			bad = bad || h&0x7c00 == 0x7c00
			dst[i] = h ^ sign
		}
		return bad
	}
	r := rand.New(rand.NewPCG(1, 2))
	for v := 0; v < 1<<16; v++ {
		for _, n := range []int{1, 3, 4, 5, 8, 9, 13} {
			src := make([]uint16, n)
			for i := range src {
				src[i] = uint16(r.IntN(0x7c00)) | uint16(r.IntN(2))<<15 // finite
			}
			src[(v+n)%n] = uint16(v)
			for _, sign := range []uint16{0, 0x8000} {
				want, got := make([]uint16, n), make([]uint16, n)
				wb := plain(want, src, sign)
				gb := copyF16(got, src, uint64(sign)*0x0001_0001_0001_0001)
				if wb != gb {
					t.Fatalf("value %#04x at %d of %d, sign %#x: non-finite %v, want %v", v, (v+n)%n, n, sign, gb, wb)
				}
				for i := range want {
					if want[i] != got[i] {
						t.Fatalf("value %#04x, n %d: copy differs at %d", v, n, i)
					}
				}
			}
		}
	}
}

// TestPackF16Rows: pack names the first non-finite row, for contiguous
// (ld == dim) and padded layouts.
func TestPackF16Rows(t *testing.T) {
	for _, dim := range []int{64, 50} {
		rows := 300
		h := make([]uint16, rows*dim)
		for i := range h {
			h[i] = 0x3c00 // 1.0
		}
		h[217*dim+dim-1] = 0x7e00 // NaN in row 217
		m := kernels.F16Matrix(h, rows, dim)
		l := layoutOf(dim, m)
		dst := make([]byte, rows*l.rowBytes())
		err := pack(dst, m, 0, rows, l, false, "base", 4)
		if !errors.Is(err, kernels.ErrNonFinite) || err.Error() != "kernels: non-finite value: base row 217" && !contains(err.Error(), "base row 217") {
			t.Fatalf("dim %d: %v, want base row 217", dim, err)
		}
		h[217*dim+dim-1] = 0x3c00
		if err := pack(dst, m, 0, rows, l, true, "base", 4); err != nil {
			t.Fatal(err)
		}
		out := dst[:]
		for i := 0; i < rows; i++ {
			for k := 0; k < l.ld; k++ {
				got := uint16(out[2*(i*l.ld+k)]) | uint16(out[2*(i*l.ld+k)+1])<<8
				want := uint16(0xbc00) // -1.0
				if k >= dim {
					want = 0
				}
				if got != want {
					t.Fatalf("dim %d row %d col %d: %#04x, want %#04x", dim, i, k, got, want)
				}
			}
		}
	}
}

func contains(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return true
		}
	}
	return false
}

// BenchmarkPackF16 packs 64 MiB of CLIP-sized float16 rows (the per-chunk
// host work of every streamed op).
func BenchmarkPackF16(b *testing.B) {
	const dim, rows = 512, 1 << 16
	h := make([]uint16, rows*dim)
	for i := range h {
		h[i] = uint16(i) & 0x3bff
	}
	m := kernels.F16Matrix(h, rows, dim)
	l := layoutOf(dim, m)
	dst := make([]byte, rows*l.rowBytes())
	b.SetBytes(int64(len(dst)))
	for b.Loop() {
		if err := pack(dst, m, 0, rows, l, false, "x", 1); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDecodeTopK is TopK's last host step on 2,000 queries × k = 1,000
// keys, one thread: sorting each row here (k > selSortMax) or only decoding
// rows topk_select sorted on the device (SEL_SORT_OUT).
func BenchmarkDecodeTopK(b *testing.B) {
	const nq, k = 2000, 1000
	r := rand.New(rand.NewPCG(1, 2))
	orig := make([]uint64, nq*k)
	for i := range orig {
		orig[i] = r.Uint64() | 1
	}
	keys := make([]uint64, len(orig))
	res := kernels.TopKResult{NQ: nq, K: k, Val: make([]float32, nq*k), Idx: make([]int64, nq*k)}
	for _, sorted := range []bool{false, true} {
		name := "host-sort"
		if sorted {
			name = "device-sorted"
		}
		b.Run(name, func(b *testing.B) {
			b.SetBytes(8 * nq * k)
			for b.Loop() {
				b.StopTimer()
				copy(keys, orig)
				b.StartTimer()
				if err := decodeTopK(keys, nq, 0, topkPlan{k: k}, res, sorted, 1); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
