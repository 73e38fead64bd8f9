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

// Matrix is an open 2-d float16/float32 .npy file, read in row blocks with
// pread: memory stays bounded by the block size, never the file size.
type Matrix struct {
	Path  string
	Rows  int
	Dim   int
	DType DType
	f     *os.File
	off   int64
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

// Close closes the file.
func (m *Matrix) Close() error { return m.f.Close() }

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
	// Skip disables the norm check (NaN/Inf are always errors).
	SkipNorm bool
	// Threads converts and checks in parallel (0 = GOMAXPROCS).
	Threads int
}

// Decode converts n raw rows into dst as float32 and validates them: NaN
// or Inf is an error; a norm off by more than NormTolerance is an error
// (or rescaled when c.Normalize). Rows are numbered from row0 in errors.
func (m *Matrix) Decode(dst []float32, raw []byte, row0, n int, c Check) error {
	dim := m.Dim
	dst = dst[:n*dim]
	threads := c.Threads
	if threads <= 0 {
		threads = runtime.GOMAXPROCS(0)
	}
	if threads > n {
		threads = n
	}
	if threads <= 1 || n*dim < 1<<16 {
		return m.decodeRange(dst, raw, row0, 0, n, c)
	}
	var wg sync.WaitGroup
	errs := make([]error, threads)
	per := (n + threads - 1) / threads
	for t := 0; t < threads; t++ {
		lo, hi := t*per, min((t+1)*per, n)
		if lo >= hi {
			continue
		}
		wg.Add(1)
		go func(t, lo, hi int) {
			defer wg.Done()
			errs[t] = m.decodeRange(dst, raw, row0, lo, hi, c)
		}(t, lo, hi)
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

func (m *Matrix) decodeRange(dst []float32, raw []byte, row0, lo, hi int, c Check) error {
	dim := m.Dim
	out := dst[lo*dim : hi*dim]
	if m.DType == Float16 {
		F16ToF32(out, bytesAs[uint16](raw[lo*dim*2:hi*dim*2]))
	} else {
		copy(out, bytesAs[float32](raw[lo*dim*4:hi*dim*4]))
	}
	for r := lo; r < hi; r++ {
		row := dst[r*dim : (r+1)*dim]
		var ss float32
		for _, v := range row {
			ss += v * v
		}
		if math.IsNaN(float64(ss)) || math.IsInf(float64(ss), 0) {
			for j, v := range row {
				if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
					return fmt.Errorf("%s: row %d, column %d is %v", m.Path, row0+r, j, v)
				}
			}
		}
		if c.SkipNorm {
			continue
		}
		norm := math.Sqrt(float64(ss))
		if math.Abs(norm-1) > NormTolerance {
			if !c.Normalize || norm == 0 {
				return fmt.Errorf("%s: row %d has L2 norm %.4g, not 1 ± %g (embeddings must be L2-normalised; set the dataset's normalize = true to rescale)", m.Path, row0+r, norm, NormTolerance)
			}
			inv := float32(1 / norm)
			for j := range row {
				row[j] *= inv
			}
		}
	}
	return nil
}

// Block is a run of consecutive rows of one matrix, decoded to float32.
type Block struct {
	Row0 int       // first row, counted in the matrix
	Rows int       // number of rows
	Dim  int       // columns
	Data []float32 // Rows*Dim values, row-major; reused after the callback returns
}

// Blocks reads the whole matrix in blocks of blockRows rows and calls fn on
// each, in order. Reading the next block overlaps decoding the current one;
// two raw buffers and one float32 block are all the memory it holds.
func (m *Matrix) Blocks(blockRows int, c Check, fn func(Block) error) error {
	if blockRows <= 0 {
		blockRows = 16384
	}
	if m.Rows == 0 {
		return nil
	}
	rowBytes := m.Dim * m.DType.Size()
	type raw struct {
		row0, n int
		buf     []byte
		err     error
	}
	free := make(chan []byte, 2)
	for i := 0; i < 2; i++ {
		free <- make([]byte, blockRows*rowBytes)
	}
	full := make(chan raw, 2)
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		defer close(full)
		for r0 := 0; r0 < m.Rows; r0 += blockRows {
			var buf []byte
			select {
			case buf = <-free:
			case <-stop:
				return
			}
			n := min(blockRows, m.Rows-r0)
			err := m.ReadRaw(r0, n, buf)
			select {
			case full <- raw{r0, n, buf, err}:
			case <-stop:
				return
			}
			if err != nil {
				return
			}
		}
	}()
	data := make([]float32, blockRows*m.Dim)
	for r := range full {
		if r.err != nil {
			return r.err
		}
		if err := m.Decode(data, r.buf, r.row0, r.n, c); err != nil {
			return err
		}
		free <- r.buf
		if err := fn(Block{Row0: r.row0, Rows: r.n, Dim: m.Dim, Data: data[:r.n*m.Dim]}); err != nil {
			return err
		}
	}
	return nil
}

// bytesAs views little-endian bytes as a numeric slice (len(b) a multiple
// of the element size; the buffer comes from make, so it is aligned).
func bytesAs[T uint16 | float32 | int64 | int32](b []byte) []T {
	var z T
	return unsafeSlice[T](b, len(b)/sizeOf(z))
}
