package dataset

import (
	"fmt"
	"io"
	"math"
	"os"
	"runtime"
	"sync"
)

// NormTolerance is how far a row's L2 norm may be from 1 before it is an
// error (or, with Normalize, rescaled).
const NormTolerance = 1e-2

// Matrix is an open 2-d float16/float32 .npy file, read in row blocks.
// Blocks are views of a read-only memory map: no copy, and pages already
// processed are dropped, so the resident set stays bounded by the block
// size, never the file size.
type Matrix struct {
	Path  string
	Rows  int
	Dim   int
	DType DType
	f     *os.File
	off   int64
	m     []byte // the mapped file (nil until first use, or when empty)
}

// OpenMatrix opens a [rows, dim] float16 or float32 array and checks its
// size against the header.
func OpenMatrix(path string) (*Matrix, error) {
	f, h, err := OpenNPY(path)
	if err != nil {
		return nil, err
	}
	if h.DType != Float16 && h.DType != Float32 {
		f.Close()
		return nil, fmt.Errorf("%s: embeddings must be float16 or float32, got %s", path, h.DType.Name())
	}
	if len(h.Shape) != 2 {
		f.Close()
		return nil, fmt.Errorf("%s: embeddings must be 2-d [n, dim], got shape %v", path, h.Shape)
	}
	return &Matrix{Path: path, Rows: h.Shape[0], Dim: h.Shape[1], DType: h.DType, f: f, off: h.DataOffset}, nil
}

// Close unmaps and closes the file.
func (m *Matrix) Close() error {
	err := unmapFile(m.m)
	m.m = nil
	if cerr := m.f.Close(); err == nil {
		err = cerr
	}
	return err
}

// ReadRaw reads rows [row0, row0+n) as they are stored into buf, which must
// hold n*Dim*DType.Size() bytes.
func (m *Matrix) ReadRaw(row0, n int, buf []byte) error {
	if row0 < 0 || n < 0 || row0+n > m.Rows {
		return fmt.Errorf("%s: rows [%d, %d) out of range (file has %d)", m.Path, row0, row0+n, m.Rows)
	}
	rowBytes := int64(m.Dim * m.DType.Size())
	want := int(int64(n) * rowBytes)
	if len(buf) < want {
		return fmt.Errorf("%s: buffer of %d bytes is smaller than %d", m.Path, len(buf), want)
	}
	got, err := m.f.ReadAt(buf[:want], m.off+int64(row0)*rowBytes)
	if err != nil && !(err == io.EOF && got == want) {
		return fmt.Errorf("%s: reading rows [%d, %d): %w", m.Path, row0, row0+n, err)
	}
	return nil
}

// Check says what to do with rows that are not unit vectors.
type Check struct {
	// Normalize rescales rows whose norm is off; otherwise that is an error.
	Normalize bool
	// SkipNorm disables the norm check (NaN/Inf are always errors).
	SkipNorm bool
	// Threads validates in parallel (0 = GOMAXPROCS).
	Threads int
}

// Block is a run of consecutive rows of one matrix. Exactly one of F16 and
// F32 is set: F16 when the file stores float16 (a view of the file), F32
// when it stores float32 (a view) or when rows had to be normalised (a
// private copy). Both are valid only during the callback.
type Block struct {
	Row0 int // first row, counted in the matrix
	Rows int
	Dim  int
	F16  []uint16
	F32  []float32
}

// Float32 returns the rows as float32, converting into buf (grown as
// needed) when they are float16.
func (b Block) Float32(buf []float32) []float32 {
	if b.F32 != nil {
		return b.F32
	}
	if cap(buf) < len(b.F16) {
		buf = make([]float32, len(b.F16))
	}
	buf = buf[:len(b.F16)]
	F16ToF32(buf, b.F16)
	return buf
}

// Blocks validates the matrix in blocks of blockRows rows and calls fn on
// each, in order. The kernel reads ahead the next block while the current
// one is checked and used.
func (m *Matrix) Blocks(blockRows int, c Check, fn func(Block) error) error {
	if blockRows <= 0 {
		blockRows = 16384
	}
	if m.Rows == 0 || m.Dim == 0 {
		return nil
	}
	if m.m == nil {
		mm, err := mapFile(m.f, m.off+int64(m.Rows)*int64(m.Dim*m.DType.Size()))
		if err != nil {
			return fmt.Errorf("%s: mmap: %w", m.Path, err)
		}
		m.m = mm
	}
	rowBytes := m.Dim * m.DType.Size()
	span := func(r0 int) (lo, hi int) {
		n := min(blockRows, m.Rows-r0)
		lo = int(m.off) + r0*rowBytes
		return lo, lo + n*rowBytes
	}
	// Map the next block's pages in the background while this one is used.
	ready := make(chan struct{}, 1)
	prefetch := func(r0 int) {
		if r0 >= m.Rows {
			ready <- struct{}{}
			return
		}
		lo, hi := span(r0)
		go func() { populate(m.m, lo, hi); ready <- struct{}{} }()
	}
	defer func() { <-ready }() // never leave a prefetch running past Close
	prefetch(0)
	var private []float32
	for r0 := 0; r0 < m.Rows; r0 += blockRows {
		n := min(blockRows, m.Rows-r0)
		lo, hi := span(r0)
		<-ready
		prefetch(r0 + blockRows)
		raw := m.m[lo:hi]
		b := Block{Row0: r0, Rows: n, Dim: m.Dim}
		if m.DType == Float16 {
			b.F16 = bytesAs[uint16](raw)
		} else {
			b.F32 = bytesAs[float32](raw)
		}
		off, err := m.check(b, c)
		if err != nil {
			return err
		}
		if len(off) > 0 { // rows to normalise: work on a private copy
			if b.F32 != nil {
				private = append(private[:0], b.F32...)
			} else {
				private = b.Float32(private)
			}
			for _, r := range off {
				row := private[r*m.Dim : (r+1)*m.Dim]
				var ss float64
				for _, v := range row {
					ss += float64(v) * float64(v)
				}
				inv := float32(1 / math.Sqrt(ss))
				for j := range row {
					row[j] *= inv
				}
			}
			b.F16, b.F32 = nil, private
		}
		if err := fn(b); err != nil {
			return err
		}
		dropPages(m.m, lo, hi)
	}
	return nil
}

// check validates a block's rows in parallel and returns the rows (relative
// to the block) whose norm is off, when c.Normalize allows rescaling them.
func (m *Matrix) check(b Block, c Check) ([]int, error) {
	threads := c.Threads
	if threads <= 0 {
		threads = runtime.GOMAXPROCS(0)
	}
	if b.Rows*b.Dim < 1<<15 {
		threads = 1
	}
	threads = max(1, min(threads, b.Rows))
	var wg sync.WaitGroup
	errs := make([]error, threads)
	offs := make([][]int, threads)
	per := (b.Rows + threads - 1) / threads
	for t := 0; t < threads; t++ {
		lo, hi := t*per, min((t+1)*per, b.Rows)
		if lo >= hi {
			continue
		}
		wg.Add(1)
		go func(t, lo, hi int) {
			defer wg.Done()
			offs[t], errs[t] = m.checkRows(b, lo, hi, c)
		}(t, lo, hi)
	}
	wg.Wait()
	var off []int
	for t := range errs {
		if errs[t] != nil {
			return nil, errs[t]
		}
		off = append(off, offs[t]...)
	}
	return off, nil
}

func (m *Matrix) checkRows(b Block, lo, hi int, c Check) ([]int, error) {
	dim := b.Dim
	var off []int
	for r := lo; r < hi; r++ {
		var ss float32
		if b.F16 != nil {
			ss = sumSqF16(b.F16[r*dim : (r+1)*dim])
		} else {
			ss = sumSqF32(b.F32[r*dim : (r+1)*dim])
		}
		if math.IsNaN(float64(ss)) || math.IsInf(float64(ss), 0) {
			row := b.Float32(nil)[r*dim : (r+1)*dim]
			for j, v := range row {
				if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
					return nil, fmt.Errorf("%s: row %d, column %d is %v", m.Path, b.Row0+r, j, v)
				}
			}
			// finite values whose squares overflow: the norm is far off
		}
		if c.SkipNorm {
			continue
		}
		norm := math.Sqrt(float64(ss))
		if math.Abs(norm-1) > NormTolerance {
			if !c.Normalize || norm == 0 || math.IsInf(norm, 0) {
				return nil, fmt.Errorf("%s: row %d has L2 norm %.4g, not 1 ± %g (embeddings must be L2-normalised; set the dataset's normalize = true to rescale)", m.Path, b.Row0+r, norm, NormTolerance)
			}
			off = append(off, r)
		}
	}
	return off, nil
}

// sumSqF32 is the sum of squares of x.
func sumSqF32(x []float32) float32 {
	var s0, s1, s2, s3 float32
	i := 0
	for ; i+4 <= len(x); i += 4 {
		s := x[i : i+4 : i+4]
		s0 += s[0] * s[0]
		s1 += s[1] * s[1]
		s2 += s[2] * s[2]
		s3 += s[3] * s[3]
	}
	for ; i < len(x); i++ {
		s0 += x[i] * x[i]
	}
	return (s0 + s1) + (s2 + s3)
}

// bytesAs views little-endian bytes as a numeric slice (len(b) a multiple
// of the element size; .npy data offsets are multiples of 16).
func bytesAs[T uint16 | float32 | int64 | int32](b []byte) []T {
	var z T
	return unsafeSlice[T](b, len(b)/sizeOf(z))
}
