package dataset

import (
	"bytes"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// python returns a python3 that imports numpy, or skips (fails when
// HPCRUN_REQUIRE_REFS=1, as `make test` sets: there numpy must be present).
func python(t testing.TB) string {
	t.Helper()
	for _, p := range []string{os.Getenv("HPCRUN_PYTHON"), "/usr/bin/python3", "python3"} {
		if p == "" {
			continue
		}
		if exec.Command(p, "-c", "import numpy").Run() == nil {
			return p
		}
	}
	if os.Getenv("HPCRUN_REQUIRE_REFS") == "1" {
		t.Fatal("python3 with numpy is required (apt-get install python3-numpy)")
	}
	t.Skip("no python3 with numpy (apt-get install python3-numpy)")
	return ""
}

func runPy(t testing.TB, code string, args ...string) string {
	t.Helper()
	cmd := exec.Command(python(t), append([]string{"-c", code}, args...)...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("python: %v\n%s%s", err, out, stderr.String())
	}
	return strings.TrimSpace(string(out))
}

func TestNumpyWrittenFilesRead(t *testing.T) {
	dir := t.TempDir()
	runPy(t, `
import numpy as np, sys
d = sys.argv[1]
rng = np.random.default_rng(7)
x = rng.standard_normal((37, 13)).astype(np.float32)
x /= np.linalg.norm(x, axis=1, keepdims=True)
np.save(d + "/f32.npy", x)
np.save(d + "/f16.npy", x.astype(np.float16))
np.save(d + "/i64.npy", np.arange(-5, 1000, 3, dtype=np.int64))
np.save(d + "/i32.npy", np.arange(-5, 1000, 3, dtype=np.int32))
np.save(d + "/str.npy", np.array(["a/b.jpg", "ü/ñ.png", ""]))
np.save(d + "/empty.npy", np.zeros((0, 13), dtype=np.float16))
x.astype(np.float32).tofile(d + "/f32.raw")
x.astype(np.float16).astype(np.float32).tofile(d + "/f16.raw")
`, dir)
	for _, name := range []string{"f32", "f16"} {
		m, err := OpenMatrix(filepath.Join(dir, name+".npy"))
		if err != nil {
			t.Fatal(err)
		}
		if m.Rows != 37 || m.Dim != 13 {
			t.Fatalf("%s: shape %dx%d", name, m.Rows, m.Dim)
		}
		raw, _ := os.ReadFile(filepath.Join(dir, name+".raw"))
		want := bytesAs[float32](raw)
		var got []float32
		// odd block size: blocks must stitch together exactly
		err = m.Blocks(5, Check{}, func(b Block) error {
			if b.Row0 != len(got)/13 {
				t.Fatalf("block starts at %d, want %d", b.Row0, len(got)/13)
			}
			got = append(got, b.Float32(nil)...)
			return nil
		})
		m.Close()
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != len(want) {
			t.Fatalf("%s: %d values, want %d", name, len(got), len(want))
		}
		for i := range got {
			if got[i] != want[i] {
				t.Fatalf("%s[%d] = %v, numpy says %v", name, i, got[i], want[i])
			}
		}
	}
	i64, err := ReadInt64(filepath.Join(dir, "i64.npy"))
	if err != nil || len(i64) != 335 || i64[0] != -5 || i64[334] != 997 {
		t.Fatalf("int64: %v %v", err, i64[:3])
	}
	i32, err := ReadInt64(filepath.Join(dir, "i32.npy"))
	if err != nil || len(i32) != 335 || i32[1] != -2 {
		t.Fatalf("int32 widened: %v", err)
	}
	s, err := ReadStrings(filepath.Join(dir, "str.npy"))
	if err != nil || len(s) != 3 || s[1] != "ü/ñ.png" || s[2] != "" {
		t.Fatalf("strings: %v %q", err, s)
	}
	m, err := OpenMatrix(filepath.Join(dir, "empty.npy"))
	if err != nil || m.Rows != 0 {
		t.Fatalf("empty: %v", err)
	}
	if err := m.Blocks(4, Check{}, func(Block) error { t.Fatal("block from empty matrix"); return nil }); err != nil {
		t.Fatal(err)
	}
	m.Close()
}

func TestNumpyLoadsWhatWeWrite(t *testing.T) {
	dir := t.TempDir()
	rng := rand.New(rand.NewPCG(1, 2))
	f32 := make([]float32, 6*5)
	for i := range f32 {
		f32[i] = float32(rng.NormFloat64())
	}
	// float16 edge values: max, min normal, subnormals, ±0, rounding ties
	edges := []float32{65504, -65504, 6.103515625e-05, 5.960464477539063e-08, 2.9802322387695312e-08, 0, float32(math.Copysign(0, -1)), 1.0009765625, 1.00048828125, 1.000732421875, 70000, 1e-9, 0.1, 0.3333333}
	i64 := []int64{math.MinInt64, -1, 0, 1, math.MaxInt64}
	i32 := []int32{math.MinInt32, 0, math.MaxInt32}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(WriteFloat32(filepath.Join(dir, "f32.npy"), f32, 6, 5))
	mw, err := CreateMatrix(filepath.Join(dir, "f16.npy"), Float16, len(edges))
	must(err)
	must(mw.Write(edges))
	must(mw.Write(edges))
	must(mw.Close())
	must(WriteInt64(filepath.Join(dir, "i64.npy"), i64))
	must(WriteInt32(filepath.Join(dir, "i32.npy"), i32))
	must(WriteStrings(filepath.Join(dir, "s.npy"), []string{"x", "yy/zz.jpg"}))
	var edgesStr []string
	for _, e := range edges {
		edgesStr = append(edgesStr, strconv.FormatFloat(float64(e), 'g', -1, 32))
	}
	out := runPy(t, `
import numpy as np, sys
d = sys.argv[1]
a = np.load(d + "/f32.npy"); assert a.dtype == np.float32 and a.shape == (6, 5), (a.dtype, a.shape)
h = np.load(d + "/f16.npy"); assert h.dtype == np.float16 and h.shape == (2, len(sys.argv[2].split(","))), (h.dtype, h.shape)
ref = np.array([float(v) for v in sys.argv[2].split(",")], dtype=np.float32).astype(np.float16)
assert (h[0].view(np.uint16) == ref.view(np.uint16)).all(), (h[0], ref)
assert (h[1] == h[0]).all()
i = np.load(d + "/i64.npy"); assert i.dtype == np.int64 and list(i) == [-2**63, -1, 0, 1, 2**63-1]
j = np.load(d + "/i32.npy"); assert j.dtype == np.int32 and list(j) == [-2**31, 0, 2**31-1]
s = np.load(d + "/s.npy"); assert list(s) == ["x", "yy/zz.jpg"], s
print(repr(float(a[5, 4])))
`, dir, strings.Join(edgesStr, ","))
	if v, err := strconv.ParseFloat(out, 64); err != nil || float32(v) != f32[29] {
		t.Fatalf("numpy read %s, we wrote %v", out, f32[29])
	}
	// and our reader agrees with ourselves
	got, shape, err := ReadFloat32(filepath.Join(dir, "f32.npy"))
	must(err)
	if shape[0] != 6 || got[29] != f32[29] {
		t.Fatal("float32 round trip")
	}
	// no temp files left behind
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".") {
			t.Fatalf("temp file left: %s", e.Name())
		}
	}
}

func TestF16Conversion(t *testing.T) {
	// every float16 bit pattern round-trips through float32
	for h := 0; h < 1<<16; h++ {
		f := HalfToFloat(uint16(h))
		if math.IsNaN(float64(f)) {
			if FloatToHalf(f)&0x7c00 != 0x7c00 || FloatToHalf(f)&0x3ff == 0 {
				t.Fatalf("NaN %#04x lost", h)
			}
			continue
		}
		if back := FloatToHalf(f); back != uint16(h) {
			t.Fatalf("%#04x -> %v -> %#04x", h, f, back)
		}
	}
	// round to nearest even at a tie between 1 and the next half
	if got := FloatToHalf(1 + 1.0/2048); got != 0x3c00 {
		t.Fatalf("tie rounds to even: got %#04x", got)
	}
	if got := FloatToHalf(1 + 3.0/2048); got != 0x3c02 {
		t.Fatalf("tie rounds to even (up): got %#04x", got)
	}
	if got := FloatToHalf(1e6); got != 0x7c00 {
		t.Fatalf("overflow -> Inf: %#04x", got)
	}
}

func writeRaw(t *testing.T, path string, hdrDict string, data []byte) {
	t.Helper()
	b := append([]byte{}, npyMagic...)
	b = append(b, 1, 0)
	dict := hdrDict + "\n"
	b = append(b, byte(len(dict)), byte(len(dict)>>8))
	b = append(b, dict...)
	b = append(b, data...)
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestMalformedNPY(t *testing.T) {
	dir := t.TempDir()
	p := func(n string) string { return filepath.Join(dir, n) }
	good := make([]byte, 4*2*3)
	cases := []struct {
		name  string
		write func(path string)
		want  string
	}{
		{"bad magic", func(path string) { os.WriteFile(path, []byte("PK\x03\x04 this is a zip file, not npy"), 0o644) }, "bad magic"},
		{"empty file", func(path string) { os.WriteFile(path, nil, 0o644) }, "too short"},
		{"truncated header", func(path string) {
			os.WriteFile(path, append(append([]byte{}, npyMagic...), 1, 0, 200, 0, '{'), 0o644)
		}, "truncated .npy header"},
		{"truncated data", func(path string) {
			writeRaw(t, path, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", good[:20])
		}, "truncated: header promises [2 3] float32 (24 bytes of data), file has 20"},
		{"trailing bytes", func(path string) {
			writeRaw(t, path, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", append(good, 0, 0, 0, 0))
		}, "4 trailing bytes"},
		{"wrong dtype", func(path string) {
			writeRaw(t, path, "{'descr': '<i8', 'fortran_order': False, 'shape': (2, 3), }", make([]byte, 48))
		}, "embeddings must be float16 or float32, got int64"},
		{"big endian", func(path string) {
			writeRaw(t, path, "{'descr': '>f4', 'fortran_order': False, 'shape': (2, 3), }", good)
		}, "unsupported dtype \">f4\""},
		{"complex", func(path string) {
			writeRaw(t, path, "{'descr': '<c8', 'fortran_order': False, 'shape': (2, 3), }", make([]byte, 48))
		}, "unsupported dtype"},
		{"fortran", func(path string) {
			writeRaw(t, path, "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3), }", good)
		}, "fortran_order"},
		{"1-d", func(path string) {
			writeRaw(t, path, "{'descr': '<f4', 'fortran_order': False, 'shape': (6,), }", good)
		}, "must be 2-d"},
		{"garbage dict", func(path string) { writeRaw(t, path, "{'descr': '<f4', 'shape': (2, x)}", good) }, "bad .npy header"},
		{"no newline, no close", func(path string) { writeRaw(t, path, "{'descr'", good) }, "bad .npy header"},
		{"huge header v2", func(path string) {
			b := append(append([]byte{}, npyMagic...), 2, 0, 0xff, 0xff, 0xff, 0x7f)
			os.WriteFile(path, b, 0o644)
		}, "exceeds the limit"},
		{"absurd shape", func(path string) {
			writeRaw(t, path, "{'descr': '<f4', 'fortran_order': False, 'shape': (999999999999, 999999999999), }", good)
		}, "too large"},
		{"version 9", func(path string) {
			os.WriteFile(path, append(append([]byte{}, npyMagic...), 9, 0, 0, 0), 0o644)
		}, "unsupported .npy format version 9"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path := p(strings.ReplaceAll(c.name, " ", "_") + ".npy")
			c.write(path)
			_, err := OpenMatrix(path)
			if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), path) {
				t.Fatalf("got %v, want an error naming %s and saying %q", err, path, c.want)
			}
		})
	}
}

func TestNaNInfAndNorm(t *testing.T) {
	dir := t.TempDir()
	rows := []float32{0.6, 0.8, 0, 1, 0, 0}
	mk := func(name string, v []float32) *Matrix {
		path := filepath.Join(dir, name)
		if err := WriteFloat32(path, v, len(v)/3, 3); err != nil {
			t.Fatal(err)
		}
		m, err := OpenMatrix(path)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { m.Close() })
		return m
	}
	run := func(m *Matrix, c Check) ([]float32, error) {
		var out []float32
		err := m.Blocks(1, c, func(b Block) error { out = append(out, b.Float32(nil)...); return nil })
		return out, err
	}
	if _, err := run(mk("ok.npy", rows), Check{}); err != nil {
		t.Fatal(err)
	}
	nan := append([]float32{}, rows...)
	nan[4] = float32(math.NaN())
	if _, err := run(mk("nan.npy", nan), Check{Normalize: true}); err == nil || !strings.Contains(err.Error(), "row 1, column 1 is NaN") {
		t.Fatalf("NaN: %v", err)
	}
	inf := append([]float32{}, rows...)
	inf[0] = float32(math.Inf(-1))
	if _, err := run(mk("inf.npy", inf), Check{}); err == nil || !strings.Contains(err.Error(), "row 0, column 0 is -Inf") {
		t.Fatalf("Inf: %v", err)
	}
	off := []float32{0.6, 0.8, 0, 2, 0, 0}
	if _, err := run(mk("norm.npy", off), Check{}); err == nil || !strings.Contains(err.Error(), "row 1 has L2 norm 2") || !strings.Contains(err.Error(), "normalize") {
		t.Fatalf("norm: %v", err)
	}
	got, err := run(mk("norm2.npy", off), Check{Normalize: true})
	if err != nil || got[3] != 1 {
		t.Fatalf("normalize: %v %v", err, got)
	}
	zero := []float32{0, 0, 0}
	if _, err := run(mk("zero.npy", zero), Check{Normalize: true}); err == nil {
		t.Fatal("a zero row cannot be normalised")
	}
}

func TestParseHeaderDictForms(t *testing.T) {
	for _, s := range []string{
		"{'descr': '<f2', 'fortran_order': False, 'shape': (3, 4), }",
		"{'shape': (3, 4), 'fortran_order': False, 'descr': '<f2'}",
		"{\"descr\": \"<f2\", \"fortran_order\": False, \"shape\": (3L, 4L)}",
		"{'descr':'<f2','fortran_order':False,'shape':(3,4)}   ",
	} {
		h, err := ParseHeaderDict(s)
		if err != nil || h.DType != Float16 || len(h.Shape) != 2 || h.Shape[1] != 4 {
			t.Errorf("%s: %v %+v", s, err, h)
		}
	}
	h, err := ParseHeaderDict("{'descr': '<i8', 'fortran_order': False, 'shape': (), }")
	if err != nil || h.Elems() != 1 {
		t.Errorf("0-d: %v %+v", err, h)
	}
}

func TestHeaderBytesParse(t *testing.T) {
	b, err := headerBytes(Float16, []int{123456789, 512}, matrixHeaderSize)
	if err != nil || len(b) != matrixHeaderSize {
		t.Fatal(err, len(b))
	}
	h, err := ReadHeader(bytes.NewReader(b))
	if err != nil || h.DataOffset != matrixHeaderSize || h.Shape[0] != 123456789 {
		t.Fatal(err, h)
	}
}

func FuzzReadHeader(f *testing.F) {
	for _, shape := range [][]int{{3, 4}, {0}, {}, {1, 2, 3}} {
		b, _ := headerBytes(Float32, shape, 0)
		f.Add(b)
	}
	f.Add([]byte("\x93NUMPY\x01\x00\x10\x00{'descr': '<f2'\n"))
	f.Add([]byte("\x93NUMPY\x02\x00\xff\xff\x00\x00"))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := ReadHeader(bytes.NewReader(b))
		if err != nil {
			return
		}
		if h.DType.Size() <= 0 && h.DType != "<U0" {
			t.Fatalf("accepted dtype %q", h.DType)
		}
		if h.DataOffset > int64(len(b)) {
			t.Fatalf("data offset %d beyond input %d", h.DataOffset, len(b))
		}
		for _, d := range h.Shape {
			if d < 0 {
				t.Fatalf("negative dim %v", h.Shape)
			}
		}
	})
}
