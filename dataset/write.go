package dataset

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"

	"github.com/sbinet/npyio/npy"
)

// AtomicFile is a file that appears at its final path only on Commit:
// it is written as a hidden temp file in the same folder and renamed, so a
// crash or an error never leaves a half-written output behind.
type AtomicFile struct {
	*os.File
	final string
	done  bool
}

// CreateAtomic starts writing path (its folder is created).
func CreateAtomic(path string) (*AtomicFile, error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	var r [6]byte
	_, _ = rand.Read(r[:])
	tmp := filepath.Join(dir, "."+filepath.Base(path)+".tmp-"+hex.EncodeToString(r[:]))
	f, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return nil, err
	}
	return &AtomicFile{File: f, final: path}, nil
}

// Commit syncs, closes and renames the file into place.
func (a *AtomicFile) Commit() error {
	if a.done {
		return nil
	}
	a.done = true
	tmp := a.File.Name()
	if err := a.File.Sync(); err != nil {
		a.File.Close()
		os.Remove(tmp)
		return fmt.Errorf("writing %s: %w", a.final, err)
	}
	if err := a.File.Close(); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("writing %s: %w", a.final, err)
	}
	if err := os.Rename(tmp, a.final); err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
}

// Abort removes the temp file; safe after Commit (then it does nothing).
func (a *AtomicFile) Abort() {
	if a.done {
		return
	}
	a.done = true
	a.File.Close()
	os.Remove(a.File.Name())
}

// WriteFileAtomic writes data to path atomically.
func WriteFileAtomic(path string, data []byte) error {
	f, err := CreateAtomic(path)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Abort()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return f.Commit()
}

// WriteNPY writes a numeric array of the given shape atomically. data is
// []float32, []uint16 (float16 bits, with dt = Float16), []int32 or []int64.
func WriteNPY(path string, dt DType, shape []int, data any) error {
	var raw []byte
	n := 0
	switch v := data.(type) {
	case []float32:
		raw, n = asBytes(v), len(v)
	case []uint16:
		raw, n = asBytes(v), len(v)
	case []int32:
		raw, n = asBytes(v), len(v)
	case []int64:
		raw, n = asBytes(v), len(v)
	case []float64:
		raw, n = asBytes(v), len(v)
	case []uint8:
		raw, n = v, len(v)
	default:
		return fmt.Errorf("WriteNPY %s: unsupported slice type %T", path, data)
	}
	if len(raw) != n*dt.Size() {
		return fmt.Errorf("WriteNPY %s: %T does not hold %s elements", path, data, dt.Name())
	}
	want := 1
	for _, s := range shape {
		want *= s
	}
	if want != n {
		return fmt.Errorf("WriteNPY %s: shape %v wants %d elements, got %d", path, shape, want, n)
	}
	hdr, err := headerBytes(dt, shape, 0)
	if err != nil {
		return err
	}
	f, err := CreateAtomic(path)
	if err != nil {
		return err
	}
	w := bufio.NewWriterSize(f, 1<<20)
	w.Write(hdr)
	w.Write(raw)
	if err := w.Flush(); err != nil {
		f.Abort()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return f.Commit()
}

// WriteInt64 writes a 1-d int64 array.
func WriteInt64(path string, v []int64) error { return WriteNPY(path, Int64, []int{len(v)}, v) }

// WriteInt32 writes a 1-d int32 array.
func WriteInt32(path string, v []int32) error { return WriteNPY(path, Int32, []int{len(v)}, v) }

// WriteFloat32 writes a float32 array of the given shape.
func WriteFloat32(path string, v []float32, shape ...int) error {
	if len(shape) == 0 {
		shape = []int{len(v)}
	}
	return WriteNPY(path, Float32, shape, v)
}

// WriteStrings writes a 1-d numpy unicode array ('<U', as np.array(list of
// str) makes) through npyio.
func WriteStrings(path string, v []string) error {
	if v == nil {
		v = []string{}
	}
	var buf bytes.Buffer
	if err := npy.Write(&buf, v); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return WriteFileAtomic(path, buf.Bytes())
}

// MatrixWriter streams rows of a 2-d float array [n, dim] to an .npy file
// whose row count is known only at Close; the file appears atomically.
type MatrixWriter struct {
	f    *AtomicFile
	w    *bufio.Writer
	dt   DType
	dim  int
	rows int
	half []uint16
}

// matrixHeaderSize is the fixed header size reserved for streamed
// matrices: room for any realistic shape, patched in place at Close.
const matrixHeaderSize = 128

// CreateMatrix starts a [?, dim] array of dtype Float32 or Float16.
func CreateMatrix(path string, dt DType, dim int) (*MatrixWriter, error) {
	if dt != Float32 && dt != Float16 {
		return nil, fmt.Errorf("CreateMatrix %s: dtype must be float32 or float16, not %s", path, dt.Name())
	}
	f, err := CreateAtomic(path)
	if err != nil {
		return nil, err
	}
	hdr, err := headerBytes(dt, []int{0, dim}, matrixHeaderSize)
	if err != nil {
		f.Abort()
		return nil, err
	}
	w := bufio.NewWriterSize(f, 1<<20)
	w.Write(hdr)
	return &MatrixWriter{f: f, w: w, dt: dt, dim: dim}, nil
}

// Write appends rows (len(rows) a multiple of dim), converting to the
// file's dtype.
func (m *MatrixWriter) Write(rows []float32) error {
	if m.dim == 0 || len(rows)%m.dim != 0 {
		return fmt.Errorf("%s: %d values are not whole rows of %d", m.f.final, len(rows), m.dim)
	}
	var err error
	if m.dt == Float32 {
		_, err = m.w.Write(asBytes(rows))
	} else {
		if cap(m.half) < len(rows) {
			m.half = make([]uint16, len(rows))
		}
		h := m.half[:len(rows)]
		F32ToF16(h, rows)
		_, err = m.w.Write(asBytes(h))
	}
	m.rows += len(rows) / m.dim
	return err
}

// Rows is the number of rows written so far.
func (m *MatrixWriter) Rows() int { return m.rows }

// Close patches the header with the final row count and commits the file.
func (m *MatrixWriter) Close() error {
	if err := m.w.Flush(); err != nil {
		m.f.Abort()
		return fmt.Errorf("writing %s: %w", m.f.final, err)
	}
	hdr, err := headerBytes(m.dt, []int{m.rows, m.dim}, matrixHeaderSize)
	if err != nil {
		m.f.Abort()
		return err
	}
	if _, err := m.f.WriteAt(hdr, 0); err != nil {
		m.f.Abort()
		return fmt.Errorf("writing %s: %w", m.f.final, err)
	}
	return m.f.Commit()
}

// Abort drops the file.
func (m *MatrixWriter) Abort() { m.f.Abort() }
