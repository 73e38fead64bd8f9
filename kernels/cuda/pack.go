package cuda

import (
	"fmt"
	"math"
	"sync"
	"time"
	"unsafe"

	"hpcrun/kernels"
)

// layout is how a set of rows lives on the device: float16 bits when every
// input of the op is float16 (the tensor-core path) or Backend.Precision
// is Float16 (float32 inputs rounded), else float32 (float16 inputs
// converted exactly); rows padded with zeros from dim to ld, a multiple of
// 32 elements, so every row starts 64-byte aligned.
type layout struct {
	f16        bool
	dim, ld    int
	esize      int
	dtypeShort string // "f16" | "f32": kernel name suffix

	// Precision Float16x2 (split): a row is parts float16 pieces of ld1
	// values each (ld = parts*ld1); pat[role] says which half of each value
	// every piece holds for operand A (role 0) and B (role 1) — 'h' the
	// value rounded to float16, 'l' the rest (x - hi, rounded; 0 for float16
	// inputs) — and the kernels' k sum over the pieces adds hi·hi + hi·lo
	// (+ lo·hi). role is the operand this copy of the layout packs.
	parts, ld1 int
	pat        [2]string
	role       int
}

// forRole is l for packing operand role (0 = A, 1 = B).
func (l layout) forRole(role int) layout { l.role = role; return l }

func layoutOf(dim int, ms ...kernels.Matrix) layout {
	f16 := true
	for _, m := range ms {
		if m.F16 == nil {
			f16 = false
		}
	}
	l := layout{f16: f16, dim: dim, ld: (dim + 31) / 32 * 32, esize: 4, dtypeShort: "f32"}
	if f16 {
		l.esize, l.dtypeShort = 2, "f16"
	}
	return l
}

func (l layout) rowBytes() int { return l.ld * l.esize }

// checkMatrix applies the shape rules of kernels.Matrix, with the CPU
// backend's messages.
func checkMatrix(m kernels.Matrix, name string) error { return m.Check(name) }

func checkPair(a, b kernels.Matrix, an, bn string) error {
	if err := checkMatrix(a, an); err != nil {
		return err
	}
	if err := checkMatrix(b, bn); err != nil {
		return err
	}
	if a.Dim != b.Dim {
		return fmt.Errorf("kernels: %s has dim %d, %s has dim %d", an, a.Dim, bn, b.Dim)
	}
	return nil
}

func checkFiniteF32(name string, x []float32) error {
	for i, v := range x {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			return fmt.Errorf("%w: %s[%d]", kernels.ErrNonFinite, name, i)
		}
	}
	return nil
}

// parallelFor runs fn over [0, n) split into at most threads contiguous
// parts and returns the error of the lowest part that failed.
func parallelFor(n, threads int, fn func(lo, hi int) error) error {
	parts := max(1, min(threads, n/64))
	if parts == 1 {
		return fn(0, n)
	}
	errs := make([]error, parts)
	var wg sync.WaitGroup
	for p := 0; p < parts; p++ {
		lo, hi := n*p/parts, n*(p+1)/parts
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[p] = fn(lo, hi)
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// pack writes rows [r0, r1) of m into dst in layout l (negated when neg:
// the TopK Smallest direction, exact in both precisions), and returns an
// error wrapping kernels.ErrNonFinite naming the first row holding NaN or
// ±Inf. dst holds at least (r1-r0)*l.rowBytes() bytes.
func pack(dst []byte, m kernels.Matrix, r0, r1 int, l layout, neg bool, name string, threads int) error {
	d, ld := m.Dim, l.ld
	n := r1 - r0
	if n <= 0 || ld == 0 {
		return nil
	}
	if l.parts > 1 {
		return packSplit(dst, m, r0, r1, l, neg, name, threads)
	}
	if l.f16 && m.F16 == nil {
		// float32 rounded to float16 (Precision Float16)
		out := unsafe.Slice((*uint16)(unsafe.Pointer(&dst[0])), n*ld)
		var sign uint16
		if neg {
			sign = 0x8000
		}
		return parallelFor(n, threads, func(lo, hi int) error {
			for i := lo; i < hi; i++ {
				row := out[i*ld : (i+1)*ld]
				if err := roundRow(row[:d], m.F32[(r0+i)*d:(r0+i+1)*d], name, r0+i, Float16); err != nil {
					return err
				}
				for k := range row[:d] {
					row[k] ^= sign
				}
				clear(row[d:])
			}
			return nil
		})
	}
	if l.f16 {
		out := unsafe.Slice((*uint16)(unsafe.Pointer(&dst[0])), n*ld)
		var sign uint64
		if neg {
			sign = 0x8000_8000_8000_8000
		}
		if ld == d { // rows are contiguous on both sides: one flat pass per part
			return parallelFor(n, threads, func(lo, hi int) error {
				if copyF16(out[lo*d:hi*d], m.F16[(r0+lo)*d:(r0+hi)*d], sign) {
					for i := lo; i < hi; i++ {
						if copyF16(out[i*d:(i+1)*d], m.F16[(r0+i)*d:(r0+i+1)*d], sign) {
							return fmt.Errorf("%w: %s row %d", kernels.ErrNonFinite, name, r0+i)
						}
					}
				}
				return nil
			})
		}
		return parallelFor(n, threads, func(lo, hi int) error {
			for i := lo; i < hi; i++ {
				row := out[i*ld : (i+1)*ld]
				if copyF16(row[:d], m.F16[(r0+i)*d:(r0+i+1)*d], sign) {
					return fmt.Errorf("%w: %s row %d", kernels.ErrNonFinite, name, r0+i)
				}
				clear(row[d:])
			}
			return nil
		})
	}
	out := unsafe.Slice((*float32)(unsafe.Pointer(&dst[0])), n*ld)
	return parallelFor(n, threads, func(lo, hi int) error {
		for i := lo; i < hi; i++ {
			row := out[i*ld : (i+1)*ld]
			if m.F16 != nil {
				kernels.F16ToF32(row[:d], m.F16[(r0+i)*d:(r0+i+1)*d])
			} else {
				copy(row[:d], m.F32[(r0+i)*d:(r0+i+1)*d])
			}
			var z float32
			for k, v := range row[:d] {
				z += v * 0 // NaN once any v is NaN or ±Inf
				if neg {
					row[k] = -v
				}
			}
			if z != 0 || z != z {
				return fmt.Errorf("%w: %s row %d", kernels.ErrNonFinite, name, r0+i)
			}
			clear(row[d:])
		}
		return nil
	})
}

// packSplit writes rows [r0, r1) of m as l.parts float16 pieces (layout
// comment): hi = x rounded to float16, lo = (x - hi) rounded (0 when m is
// float16), each piece padded from dim to l.ld1.
func packSplit(dst []byte, m kernels.Matrix, r0, r1 int, l layout, neg bool, name string, threads int) error {
	d, ld1, pat := m.Dim, l.ld1, l.pat[l.role]
	out := unsafe.Slice((*uint16)(unsafe.Pointer(&dst[0])), (r1-r0)*l.ld)
	var sign uint16
	if neg {
		sign = 0x8000
	}
	return parallelFor(r1-r0, threads, func(lo, hi int) error {
		his, los := make([]uint16, d), make([]uint16, d)
		rest := make([]float32, d)
		for i := lo; i < hi; i++ {
			r := r0 + i
			if m.F16 != nil {
				if copyF16(his, m.F16[r*d:(r+1)*d], 0) {
					return fmt.Errorf("%w: %s row %d", kernels.ErrNonFinite, name, r)
				}
				clear(los)
			} else {
				src := m.F32[r*d : (r+1)*d]
				if err := roundRow(his, src, name, r, Float16x2); err != nil {
					return err
				}
				for k, h := range his {
					rest[k] = src[k] - kernels.F16Value(h) // exact
				}
				kernels.F32ToF16(los, rest)
			}
			row := out[i*l.ld : (i+1)*l.ld]
			for p := 0; p < l.parts; p++ {
				piece, from := row[p*ld1:(p+1)*ld1], his
				if pat[p] == 'l' {
					from = los
				}
				for k, h := range from {
					piece[k] = h ^ sign
				}
				clear(piece[d:])
			}
		}
		return nil
	})
}

// roundRow rounds the float32 row src (row r of name) to float16 bits in
// dst (to nearest even): a NaN or ±Inf in src is kernels.ErrNonFinite, a
// finite value beyond float16's range an error naming it and prec.
func roundRow(dst []uint16, src []float32, name string, r int, prec Precision) error {
	kernels.F32ToF16(dst, src)
	for k, h := range dst {
		if h&0x7c00 == 0x7c00 { // NaN or ±Inf: in the input, or rounding overflowed
			if checkFiniteF32(name, src) != nil {
				return fmt.Errorf("%w: %s row %d", kernels.ErrNonFinite, name, r)
			}
			return fmt.Errorf("kernels/cuda: %s row %d: %g is beyond float16's range (precision %s)", name, r, src[k], prec)
		}
	}
	return nil
}

// roundF16 returns m (float32) rounded to float16 (roundRow's errors).
func roundF16(m kernels.Matrix, name string) (kernels.Matrix, error) {
	d := m.Dim
	h := make([]uint16, m.Rows*d)
	for r := 0; r < m.Rows; r++ {
		if err := roundRow(h[r*d:(r+1)*d], m.F32[r*d:(r+1)*d], name, r, Float16); err != nil {
			return m, err
		}
	}
	return kernels.F16Matrix(h, m.Rows, d), nil
}

// copyF16 copies float16 bits src to dst (same length), XOR-ing every value
// with the sign bits in sign (0 or 0x8000 in each 16-bit lane), and reports
// whether src holds a NaN or ±Inf (exponent bits all ones). Four values per
// 64-bit word: t = (x & exp) ^ exp has a zero lane exactly where the
// exponent is all ones, and (t - 1s) &^ t & 8000s is non-zero iff some lane
// of t is zero (a borrow can only set a lane's top bit above a zero lane).
func copyF16(dst, src []uint16, sign uint64) bool {
	const exp, ones, tops = 0x7c00_7c00_7c00_7c00, 0x0001_0001_0001_0001, 0x8000_8000_8000_8000
	n4 := len(src) / 4
	var bad uint64
	if n4 > 0 {
		s := unsafe.Slice((*uint64)(unsafe.Pointer(unsafe.SliceData(src))), n4)
		o := unsafe.Slice((*uint64)(unsafe.Pointer(unsafe.SliceData(dst))), n4)
		for i, x := range s {
			t := x&exp ^ exp
			bad |= (t - ones) &^ t & tops
			o[i] = x ^ sign
		}
	}
	for i := 4 * n4; i < len(src); i++ {
		h := src[i]
		if h&0x7c00 == 0x7c00 {
			bad = 1
		}
		dst[i] = h ^ uint16(sign)
	}
	return bad != 0
}

// checkFinite reports the first non-finite value of m (for inputs that are
// otherwise never packed, e.g. when the other set is empty).
func checkFinite(m kernels.Matrix, name string, threads int) error {
	d := m.Dim
	if d == 0 || m.Rows == 0 {
		return nil
	}
	return parallelFor(m.Rows, threads, func(lo, hi int) error {
		for i := lo; i < hi; i++ {
			if m.F16 != nil {
				for _, h := range m.F16[i*d : (i+1)*d] {
					if h&0x7c00 == 0x7c00 {
						return fmt.Errorf("%w: %s row %d", kernels.ErrNonFinite, name, i)
					}
				}
				continue
			}
			if err := checkFiniteF32(name, m.F32[i*d:(i+1)*d]); err != nil {
				return fmt.Errorf("%w: %s row %d", kernels.ErrNonFinite, name, i)
			}
		}
		return nil
	})
}

// chunkRows is the number of rows of layout l per streamed chunk.
func (e *Backend) chunkRows(l layout, n int) int {
	return max(1, min(n, e.tun.chunkBytes/max(1, l.rowBytes())))
}

// staging returns the two page-locked staging buffers, each at least
// bytes long (kept by the Backend between calls, grown on demand).
func (e *Backend) staging(bytes int) ([2][]byte, error) {
	for i := range e.pinned {
		if cap(e.pinned[i]) >= bytes {
			continue
		}
		if e.pinned[i] != nil {
			e.dev.hostFree(e.pinned[i])
			e.pinned[i] = nil
		}
		b, err := e.dev.hostAlloc(bytes)
		if err != nil {
			return e.pinned, err
		}
		e.pinned[i] = b
	}
	return [2][]byte{e.pinned[0][:bytes], e.pinned[1][:bytes]}, nil
}

// upload packs all rows of m into a new device buffer (through the staging
// buffers, chunk by chunk) and returns it.
func (e *Backend) upload(m kernels.Matrix, l layout, neg bool, name string) (dptr, error) {
	rb := l.rowBytes()
	if err := e.fits(m.Rows*rb, name); err != nil {
		return 0, err
	}
	buf, err := e.dev.alloc(m.Rows * rb)
	if err != nil {
		return 0, err
	}
	rows := e.chunkRows(l, m.Rows)
	stg, err := e.staging(rows * rb)
	if err != nil {
		e.dev.free(buf)
		return 0, err
	}
	for r0 := 0; r0 < m.Rows; r0 += rows {
		r1 := min(m.Rows, r0+rows)
		b := stg[0][:(r1-r0)*rb]
		err := pack(b, m, r0, r1, l, neg, name, e.threads)
		if err == nil {
			err = e.dev.h2d(buf+dptr(r0*rb), b, e.copyS)
		}
		if err == nil {
			err = e.dev.sync(e.copyS)
		}
		if err != nil {
			e.dev.free(buf)
			return 0, err
		}
	}
	return buf, nil
}

// fits fails when a resident set of the given size would take more than
// residentFrac of the free device memory.
func (e *Backend) fits(bytes int, name string) error {
	free, _, err := e.dev.memInfo()
	if err != nil {
		return err
	}
	if float64(bytes) > e.tun.residentFrac*float64(free) {
		return fmt.Errorf("kernels/cuda: %s needs %.2f GiB on %s, %.2f GiB free (at most %.0f%% used for it)",
			name, float64(bytes)/(1<<30), e.dev.describe(), float64(free)/(1<<30), 100*e.tun.residentFrac)
	}
	return nil
}

// stream runs fn over the chunks [r0, r1) of m's rows, in order, each
// packed (layout l) into one of two device buffers. Copies overlap compute:
// while fn runs on chunk c (its kernels on the compute stream), a goroutine
// packs chunk c+1 into the other page-locked staging buffer and copies it
// on the copy stream into the other device buffer. fn must have finished
// every kernel reading its buffer when it returns (stream also syncs the
// compute stream after fn), which is what makes the buffer free for chunk
// c+2 without events.
func (e *Backend) stream(m kernels.Matrix, l layout, neg bool, name string, fn func(buf dptr, r0, r1 int) error) error {
	n := m.Rows
	if n == 0 {
		return nil
	}
	rb := l.rowBytes()
	rows := e.chunkRows(l, n)
	var bufs [2]dptr
	defer func() {
		for _, b := range bufs {
			e.dev.free(b)
		}
	}()
	for i := range bufs {
		b, err := e.dev.alloc(rows * rb)
		if err != nil {
			return err
		}
		bufs[i] = b
	}
	stg, err := e.staging(rows * rb)
	if err != nil {
		return err
	}
	nChunks := (n + rows - 1) / rows
	// stage packs and copies chunk c in pieces: the copy of a piece (async,
	// from page-locked memory) runs while the next piece is packed
	piece := max(1, ceilDiv(rows, stagePieces))
	stage := func(c int) error {
		r0, r1 := c*rows, min(n, (c+1)*rows)
		for p0 := r0; p0 < r1; p0 += piece {
			p1 := min(r1, p0+piece)
			b := stg[c%2][(p0-r0)*rb : (p1-r0)*rb]
			if err := pack(b, m, p0, p1, l, neg, name, e.threads); err != nil {
				return err
			}
			if err := e.dev.h2d(bufs[c%2]+dptr((p0-r0)*rb), b, e.copyS); err != nil {
				return err
			}
		}
		return e.dev.sync(e.copyS)
	}
	t0 := time.Now()
	if err := stage(0); err != nil {
		return err
	}
	e.stats.firstSec += time.Since(t0).Seconds()
	for c := 0; c < nChunks; c++ {
		var next chan error
		if c+1 < nChunks {
			next = make(chan error, 1)
			go func() {
				undo := e.dev.bind()
				defer undo()
				next <- stage(c + 1)
			}()
		}
		e.stats.chunks++
		err := fn(bufs[c%2], c*rows, min(n, (c+1)*rows))
		if err == nil {
			err = e.dev.sync(e.compute)
		}
		if next != nil {
			t0 := time.Now()
			if err2 := <-next; err == nil {
				err = err2
			}
			e.stats.stallSec += time.Since(t0).Seconds()
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// resident runs fn over the chunks [r0, r1) of n rows already on the device
// at buf (layout l), as stream does for rows in host memory.
func (e *Backend) resident(buf dptr, n int, l layout, fn func(buf dptr, r0, r1 int) error) error {
	rows, rb := e.chunkRows(l, n), l.rowBytes()
	for r0 := 0; r0 < n; r0 += rows {
		r1 := min(n, r0+rows)
		e.stats.chunks++
		if err := fn(buf+dptr(r0*rb), r0, r1); err != nil {
			return err
		}
		if err := e.dev.sync(e.compute); err != nil {
			return err
		}
	}
	return nil
}

// stagePieces: a streamed chunk is packed and copied in this many pieces.
const stagePieces = 8

// bytesOf views a slice of 4- or 8-byte values as bytes (for copies).
func bytesOf[T uint32 | uint64 | float32 | int64](s []T) []byte {
	if len(s) == 0 {
		return nil
	}
	return unsafe.Slice((*byte)(unsafe.Pointer(&s[0])), len(s)*int(unsafe.Sizeof(s[0])))
}
