package dataset

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"strconv"
	"strings"
	"unsafe"
)

// DType is an array element type, spelled as numpy's descr.
type DType string

// The element types hpcrun reads and writes.
const (
	Float16 DType = "<f2"
	Float32 DType = "<f4"
	Float64 DType = "<f8"
	Int32   DType = "<i4"
	Int64   DType = "<i8"
	Uint8   DType = "|u1"
	Bool    DType = "|b1"
)

// Size is the element size in bytes (0 for string dtypes).
func (d DType) Size() int {
	switch d {
	case Float16:
		return 2
	case Float32, Int32:
		return 4
	case Float64, Int64:
		return 8
	case Uint8, Bool:
		return 1
	}
	if n, ok := unicodeLen(d); ok {
		return 4 * n
	}
	return 0
}

// Name is numpy's name of the dtype ("float16").
func (d DType) Name() string {
	switch d {
	case Float16:
		return "float16"
	case Float32:
		return "float32"
	case Float64:
		return "float64"
	case Int32:
		return "int32"
	case Int64:
		return "int64"
	case Uint8:
		return "uint8"
	case Bool:
		return "bool"
	}
	return string(d)
}

func unicodeLen(d DType) (int, bool) {
	s := string(d)
	if !strings.HasPrefix(s, "<U") {
		return 0, false
	}
	n, err := strconv.Atoi(s[2:])
	return n, err == nil && n >= 0
}

// MaxHeaderLen bounds the .npy header we accept (numpy's own default limit
// for untrusted files is 10,000 bytes); a larger one is an error, never an
// allocation.
const MaxHeaderLen = 65536

var npyMagic = []byte("\x93NUMPY")

// Header is a parsed .npy header.
type Header struct {
	DType   DType
	Fortran bool
	Shape   []int
	// DataOffset is where the array data starts in the file.
	DataOffset int64
}

// Elems is the number of elements (1 for a 0-d array).
func (h Header) Elems() int64 {
	n := int64(1)
	for _, s := range h.Shape {
		n *= int64(s)
	}
	return n
}

// DataBytes is the size of the data that must follow the header.
func (h Header) DataBytes() int64 { return h.Elems() * int64(h.DType.Size()) }

// ReadHeader parses a .npy header from r, which must be at the file start.
// It never trusts a length field with an allocation larger than
// MaxHeaderLen, and it accepts the dict keys in any order.
func ReadHeader(r io.Reader) (Header, error) {
	var pre [8]byte
	if _, err := io.ReadFull(r, pre[:]); err != nil {
		return Header{}, fmt.Errorf("not a .npy file: too short for the magic (%d bytes needed)", len(pre))
	}
	if !bytes.Equal(pre[:6], npyMagic) {
		return Header{}, fmt.Errorf("not a .npy file: bad magic %q", pre[:6])
	}
	major := pre[6]
	var hlen int
	var off int64
	switch major {
	case 1:
		var b [2]byte
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return Header{}, errors.New("truncated .npy header")
		}
		hlen = int(binary.LittleEndian.Uint16(b[:]))
		off = 10
	case 2, 3:
		var b [4]byte
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return Header{}, errors.New("truncated .npy header")
		}
		v := binary.LittleEndian.Uint32(b[:])
		if v > MaxHeaderLen {
			return Header{}, fmt.Errorf("npy header length %d exceeds the limit of %d bytes", v, MaxHeaderLen)
		}
		hlen = int(v)
		off = 12
	default:
		return Header{}, fmt.Errorf("unsupported .npy format version %d.%d", major, pre[7])
	}
	if hlen > MaxHeaderLen {
		return Header{}, fmt.Errorf("npy header length %d exceeds the limit of %d bytes", hlen, MaxHeaderLen)
	}
	buf := make([]byte, hlen)
	if _, err := io.ReadFull(r, buf); err != nil {
		return Header{}, fmt.Errorf("truncated .npy header: want %d bytes", hlen)
	}
	h, err := ParseHeaderDict(string(buf))
	if err != nil {
		return Header{}, err
	}
	h.DataOffset = off + int64(hlen)
	return h, nil
}

// ParseHeaderDict parses the Python dict literal of a .npy header, e.g.
// {'descr': '<f2', 'fortran_order': False, 'shape': (1000, 512), }.
func ParseHeaderDict(s string) (Header, error) {
	var h Header
	p := dictParser{s: strings.TrimRight(s, " \n\x00")}
	if !p.eat('{') {
		return h, errors.New("bad .npy header: not a dict")
	}
	seen := map[string]bool{}
	for {
		p.space()
		if p.eat('}') {
			break
		}
		key, err := p.str()
		if err != nil {
			return h, err
		}
		p.space()
		if !p.eat(':') {
			return h, fmt.Errorf("bad .npy header: no ':' after %q", key)
		}
		p.space()
		switch key {
		case "descr":
			v, err := p.str()
			if err != nil {
				return h, err
			}
			h.DType = DType(normDescr(v))
		case "fortran_order":
			switch {
			case p.word("True"):
				h.Fortran = true
			case p.word("False"):
			default:
				return h, errors.New("bad .npy header: fortran_order is not True/False")
			}
		case "shape":
			shape, err := p.tuple()
			if err != nil {
				return h, err
			}
			h.Shape = shape
		default:
			return h, fmt.Errorf("bad .npy header: unknown key %q", key)
		}
		seen[key] = true
		p.space()
		if !p.eat(',') {
			p.space()
			if !p.eat('}') {
				return h, errors.New("bad .npy header: expected ',' or '}'")
			}
			break
		}
	}
	for _, k := range []string{"descr", "fortran_order", "shape"} {
		if !seen[k] {
			return h, fmt.Errorf("bad .npy header: missing %q", k)
		}
	}
	if h.DType.Size() == 0 && h.DType != "<U0" {
		return h, fmt.Errorf("unsupported dtype %q", string(h.DType))
	}
	// Guard the element count against overflow: no real file has 2^62 bytes.
	n := int64(1)
	for _, d := range h.Shape {
		if d > 0 && n > (1<<62)/int64(d) {
			return h, fmt.Errorf("bad .npy header: shape %v is too large", h.Shape)
		}
		n *= int64(d)
	}
	if h.Fortran && len(h.Shape) > 1 {
		return h, errors.New("fortran_order arrays are not supported (write with np.ascontiguousarray)")
	}
	return h, nil
}

// normDescr maps numpy's equivalent spellings to one ('<f2', '=f2', 'f2').
func normDescr(d string) string {
	if len(d) >= 2 && (d[0] == '=' || d[0] == '|') && d != "|u1" && d != "|b1" {
		d = "<" + d[1:]
	}
	switch d {
	case "u1", "<u1":
		return "|u1"
	case "b1", "<b1", "?", "|?":
		return "|b1"
	}
	if len(d) > 0 && d[0] != '<' && d[0] != '>' && d[0] != '|' {
		d = "<" + d
	}
	return d
}

type dictParser struct {
	s string
	i int
}

func (p *dictParser) space() {
	for p.i < len(p.s) && (p.s[p.i] == ' ' || p.s[p.i] == '\t' || p.s[p.i] == '\n') {
		p.i++
	}
}

func (p *dictParser) eat(c byte) bool {
	if p.i < len(p.s) && p.s[p.i] == c {
		p.i++
		return true
	}
	return false
}

func (p *dictParser) word(w string) bool {
	if strings.HasPrefix(p.s[p.i:], w) {
		p.i += len(w)
		return true
	}
	return false
}

func (p *dictParser) str() (string, error) {
	if p.i >= len(p.s) || (p.s[p.i] != '\'' && p.s[p.i] != '"') {
		return "", errors.New("bad .npy header: expected a quoted string")
	}
	q := p.s[p.i]
	end := strings.IndexByte(p.s[p.i+1:], q)
	if end < 0 {
		return "", errors.New("bad .npy header: unterminated string")
	}
	v := p.s[p.i+1 : p.i+1+end]
	p.i += end + 2
	return v, nil
}

func (p *dictParser) tuple() ([]int, error) {
	if !p.eat('(') {
		return nil, errors.New("bad .npy header: shape is not a tuple")
	}
	shape := []int{}
	for {
		p.space()
		if p.eat(')') {
			return shape, nil
		}
		j := p.i
		for j < len(p.s) && p.s[j] >= '0' && p.s[j] <= '9' {
			j++
		}
		if j == p.i || j-p.i > 18 {
			return nil, errors.New("bad .npy header: shape entries must be non-negative integers")
		}
		v, _ := strconv.Atoi(p.s[p.i:j])
		p.i = j
		p.eat('L') // Python 2 wrote longs as 512L
		shape = append(shape, v)
		if len(shape) > 32 {
			return nil, errors.New("bad .npy header: more than 32 dimensions")
		}
		p.space()
		if !p.eat(',') {
			p.space()
			if !p.eat(')') {
				return nil, errors.New("bad .npy header: unterminated shape tuple")
			}
			return shape, nil
		}
	}
}

// OpenNPY opens path, parses its header and checks that the file holds
// exactly the data the header promises (no truncation, no trailing bytes).
// Errors name the file.
func OpenNPY(path string) (*os.File, Header, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, Header{}, err
	}
	h, err := ReadHeader(f)
	if err != nil {
		f.Close()
		return nil, Header{}, fmt.Errorf("%s: %w", path, err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, Header{}, err
	}
	have := st.Size() - h.DataOffset
	if want := h.DataBytes(); have != want {
		f.Close()
		if have < want {
			return nil, Header{}, fmt.Errorf("%s: truncated: header promises %v %s (%d bytes of data), file has %d", path, h.Shape, h.DType.Name(), want, have)
		}
		return nil, Header{}, fmt.Errorf("%s: %d trailing bytes after the %v %s array", path, have-want, h.Shape, h.DType.Name())
	}
	return f, h, nil
}

// HeaderOf reads and checks path's header (see OpenNPY).
func HeaderOf(path string) (Header, error) {
	f, h, err := OpenNPY(path)
	if err != nil {
		return h, err
	}
	f.Close()
	return h, nil
}

// ReadInt64 reads a 1-d integer array (int64, or int32 widened).
func ReadInt64(path string) ([]int64, error) {
	f, h, err := OpenNPY(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if len(h.Shape) != 1 {
		return nil, fmt.Errorf("%s: want a 1-d array, got shape %v", path, h.Shape)
	}
	switch h.DType {
	case Int64:
		out := make([]int64, h.Shape[0])
		_, err := io.ReadFull(f, asBytes(out))
		return out, wrap(path, err)
	case Int32:
		tmp := make([]int32, h.Shape[0])
		if _, err := io.ReadFull(f, asBytes(tmp)); err != nil {
			return nil, wrap(path, err)
		}
		out := make([]int64, len(tmp))
		for i, v := range tmp {
			out[i] = int64(v)
		}
		return out, nil
	}
	return nil, fmt.Errorf("%s: want an int64 array, got %s", path, h.DType.Name())
}

// ReadInt32 reads a 1-d int32 array.
func ReadInt32(path string) ([]int32, error) {
	f, h, err := OpenNPY(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if len(h.Shape) != 1 || h.DType != Int32 {
		return nil, fmt.Errorf("%s: want a 1-d int32 array, got %s %v", path, h.DType.Name(), h.Shape)
	}
	out := make([]int32, h.Shape[0])
	_, err = io.ReadFull(f, asBytes(out))
	return out, wrap(path, err)
}

// ReadFloat32 reads a float32 (or float16, widened) array of any shape;
// NaN or Inf is an error.
func ReadFloat32(path string) ([]float32, []int, error) {
	f, h, err := OpenNPY(path)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	var out []float32
	switch h.DType {
	case Float32:
		out = make([]float32, h.Elems())
		if _, err := io.ReadFull(f, asBytes(out)); err != nil {
			return nil, nil, wrap(path, err)
		}
	case Float16:
		raw := make([]uint16, h.Elems())
		if _, err := io.ReadFull(f, asBytes(raw)); err != nil {
			return nil, nil, wrap(path, err)
		}
		out = make([]float32, len(raw))
		F16ToF32(out, raw)
	default:
		return nil, nil, fmt.Errorf("%s: want a float32 or float16 array, got %s", path, h.DType.Name())
	}
	for i, v := range out {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			return nil, nil, fmt.Errorf("%s: element %d is %v", path, i, v)
		}
	}
	return out, h.Shape, nil
}

// ReadStrings reads a 1-d numpy unicode ('<U') array: UTF-32LE code
// points, NUL-padded to a fixed width.
func ReadStrings(path string) ([]string, error) {
	f, h, err := OpenNPY(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	width, ok := unicodeLen(h.DType)
	if !ok || len(h.Shape) != 1 {
		return nil, fmt.Errorf("%s: want a 1-d unicode string array, got %s %v", path, h.DType, h.Shape)
	}
	raw := make([]byte, h.DataBytes())
	if _, err := io.ReadFull(f, raw); err != nil {
		return nil, wrap(path, err)
	}
	out := make([]string, h.Shape[0])
	var sb strings.Builder
	for i := range out {
		sb.Reset()
		rec := raw[i*4*width : (i+1)*4*width]
		for j := 0; j < width; j++ {
			r := binary.LittleEndian.Uint32(rec[4*j:])
			if r == 0 {
				break
			}
			sb.WriteRune(rune(r))
		}
		out[i] = sb.String()
	}
	return out, nil
}

func wrap(path string, err error) error {
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}

// asBytes views a numeric slice as its little-endian bytes (hpcrun runs on
// little-endian machines only: amd64 and arm64).
func asBytes[T int32 | int64 | uint16 | float32 | float64 | uint8](s []T) []byte {
	if len(s) == 0 {
		return nil
	}
	return unsafe.Slice((*byte)(unsafe.Pointer(&s[0])), len(s)*int(unsafe.Sizeof(s[0])))
}

// headerBytes renders a version 1.0 header padded with spaces to exactly
// size bytes (size a multiple of 64, so the data is aligned as numpy does).
// NPYHeader is a version 1.0 .npy header for an array of dtype dt and
// shape, padded to size bytes (0: the next multiple of 64, as numpy writes
// it; a fixed size leaves room to patch the shape in place later).
func NPYHeader(dt DType, shape []int, size int) ([]byte, error) { return headerBytes(dt, shape, size) }

func headerBytes(dt DType, shape []int, size int) ([]byte, error) {
	var sb strings.Builder
	sb.WriteString("(")
	for i, s := range shape {
		if i > 0 {
			sb.WriteString(", ")
		}
		sb.WriteString(strconv.Itoa(s))
	}
	if len(shape) == 1 {
		sb.WriteString(",")
	}
	sb.WriteString(")")
	dict := fmt.Sprintf("{'descr': '%s', 'fortran_order': False, 'shape': %s, }", dt, sb.String())
	if size == 0 {
		size = (10 + len(dict) + 1 + 63) / 64 * 64
	}
	pad := size - 10 - len(dict) - 1
	if pad < 0 {
		return nil, fmt.Errorf("npy header for shape %v does not fit %d bytes", shape, size)
	}
	b := make([]byte, 0, size)
	b = append(b, npyMagic...)
	b = append(b, 1, 0)
	b = binary.LittleEndian.AppendUint16(b, uint16(size-10))
	b = append(b, dict...)
	b = append(b, bytes.Repeat([]byte{' '}, pad)...)
	b = append(b, '\n')
	return b, nil
}

func sizeOf[T any](v T) int { return int(unsafe.Sizeof(v)) }

func unsafeSlice[T any](b []byte, n int) []T {
	if n == 0 {
		return nil
	}
	return unsafe.Slice((*T)(unsafe.Pointer(&b[0])), n)
}
