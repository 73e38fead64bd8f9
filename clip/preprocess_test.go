package clip

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"image"
	"image/jpeg"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
)

// fixtures are the test images clip/testdata/make.py wrote with PIL.
func fixtures(t testing.TB) []string {
	t.Helper()
	var names []string
	for _, pat := range []string{"*.jpg", "*.png", "*.webp"} {
		m, _ := filepath.Glob(filepath.Join("testdata", pat))
		names = append(names, m...)
	}
	sort.Strings(names)
	if len(names) < 10 {
		t.Fatalf("testdata holds %d images", len(names))
	}
	return names
}

func decodeFile(t testing.TB, path string) *Picture {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	p, err := Decode(b)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return p
}

// The windowed, table-driven Run equals the whole-image PreprocessRef
// exactly, for every mode and for up- and down-scaling.
func TestPreprocessMatchesReference(t *testing.T) {
	for _, f := range fixtures(t) {
		p := decodeFile(t, f)
		for _, size := range []int{224, 97, 64} {
			pp := NewPreprocessor(size)
			got := make([]float32, 3*size*size)
			if err := pp.Run(p, got); err != nil {
				t.Fatal(err)
			}
			// twice: scratch reuse must not leak between calls
			if err := pp.Run(p, got); err != nil {
				t.Fatal(err)
			}
			want := PreprocessRef(p, size)
			for i := range want {
				if got[i] != want[i] {
					t.Fatalf("%s (%s %dx%d) size %d: value %d: Run %v, reference %v", f, p.Mode, p.W, p.H, size, i, got[i], want[i])
				}
			}
		}
	}
}

func TestResizeGeometry(t *testing.T) {
	for _, c := range []struct{ w, h, size, nw, nh, left, top int }{
		{500, 375, 224, 298, 224, 37, 0},
		{375, 500, 224, 224, 298, 0, 37},
		{224, 224, 224, 224, 224, 0, 0},
		{173, 131, 224, 295, 224, 36, 0}, // (295-224)/2 = 35.5 rounds to even 36
		{131, 173, 224, 224, 295, 0, 36},
		{61, 45, 224, 303, 224, 40, 0}, // 303.6 truncates; 39.5 -> 40
		{100, 101, 10, 10, 10, 0, 0},
	} {
		nw, nh := ResizedSize(c.w, c.h, c.size)
		l, tp := CenterCrop(nw, nh, c.size)
		if nw != c.nw || nh != c.nh || l != c.left || tp != c.top {
			t.Errorf("%dx%d -> %d: got %dx%d crop (%d,%d), want %dx%d (%d,%d)", c.w, c.h, c.size, nw, nh, l, tp, c.nw, c.nh, c.left, c.top)
		}
	}
}

// python returns Debian's python3 with numpy and PIL, or skips (fails when
// HPCRUN_REQUIRE_REFS=1).
func python(t testing.TB) string {
	t.Helper()
	const py = "/usr/bin/python3"
	err := exec.Command(py, "-c", "import numpy, PIL").Run()
	if err != nil {
		if os.Getenv("HPCRUN_REQUIRE_REFS") == "1" {
			t.Fatalf("%s with numpy and PIL (apt-get install python3-numpy python3-pil): %v", py, err)
		}
		t.Skipf("%s with numpy and PIL not available: %v", py, err)
	}
	return py
}

// pilScript computes, with PIL and numpy, what open_clip's
// image_transform(224, is_train=False) gives: torchvision Resize(224,
// BICUBIC) (PIL resize with its default reducing_gap=None), CenterCrop,
// convert("RGB"), ToTensor, Normalize in float32. It writes NAME.ref
// (float32 [3,S,S]) and NAME.dec (uint8 [H,W,3], the decoded image
// converted to RGB) for each input.
const pilScript = `
import sys, os, numpy as np
from PIL import Image
S = int(sys.argv[1]); out = sys.argv[2]
mean = np.array([0.48145466, 0.4578275, 0.40821073], np.float32).reshape(3, 1, 1)
std = np.array([0.26862954, 0.26130258, 0.27577711], np.float32).reshape(3, 1, 1)
for f in sys.argv[3:]:
    name = os.path.basename(f)
    im = Image.open(f)
    np.asarray(im.convert("RGB"), np.uint8).tofile(os.path.join(out, name + ".dec"))
    w, h = im.size
    short, long = (w, h) if w <= h else (h, w)
    ns, nl = S, int(S * long / short)
    nw, nh = (ns, nl) if w <= h else (nl, ns)
    if (nw, nh) != (w, h):
        im = im.resize((nw, nh), Image.BICUBIC)
    top, left = int(round((nh - S) / 2.0)), int(round((nw - S) / 2.0))
    im = im.crop((left, top, left + S, top + S)).convert("RGB")
    x = np.asarray(im, np.uint8).transpose(2, 0, 1).astype(np.float32) / np.float32(255)
    x = ((x - mean) / std).astype(np.float32)
    x.tofile(os.path.join(out, name + ".ref"))
`

// pilTolerance is the largest |Run - PIL| allowed, in 8-bit levels before
// normalisation, per format: PNG goes through no lossy decoder and must
// match exactly; JPEG decoded by libjpeg-turbo (PIL's own decoder) must
// match exactly too, but CMYK JPEGs and JPEGs without the library come from
// Go's decoder, whose IDCT rounds differently, so a decoded pixel may be a
// level or three off (resampling can carry that to a few levels at sharp
// edges); WebP (libwebp's upsampler and YUV tables replicated) matches
// exactly. meanLevels bounds the mean difference. One level is
// 1/255/std ≈ 0.015 in normalised units.
var pilTolerance = map[string]struct{ maxLevels, meanLevels float64 }{
	".png":  {0, 0},
	".jpg":  {5, 0.1},
	".webp": {0, 0},
}

// Preprocessing matches PIL + torchvision on real files of every mode.
func TestPreprocessMatchesPIL(t *testing.T) {
	py := python(t)
	const S = 224
	dir := t.TempDir()
	files := fixtures(t)
	cmd := exec.Command(py, append([]string{"-c", pilScript, fmt.Sprint(S), dir}, files...)...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("PIL reference: %v\n%s", err, out)
	}
	pp := NewPreprocessor(S)
	for _, f := range files {
		name := filepath.Base(f)
		p := decodeFile(t, f)
		// the decoder alone, against PIL's decode + convert("RGB")
		dec := readBin[uint8](t, filepath.Join(dir, name+".dec"), p.W*p.H*3)
		rgb := toRGB(p)
		dmax, dmean := diffLevels(rgb, dec)
		// the whole preprocessing
		ref := readBin[float32](t, filepath.Join(dir, name+".ref"), 3*S*S)
		got := make([]float32, 3*S*S)
		if err := pp.Run(p, got); err != nil {
			t.Fatal(err)
		}
		var maxL, sumL float64
		for i := range ref {
			c := i / (S * S)
			l := math.Abs(float64(got[i]-ref[i])) * float64(Std[c]) * 255
			maxL = math.Max(maxL, l)
			sumL += l
		}
		meanL := sumL / float64(len(ref))
		tol := pilTolerance[filepath.Ext(f)]
		if p.Format == "jpeg" && p.Mode != ModeCMYK && JPEGDecoder() == "libjpeg-turbo" {
			tol.maxLevels, tol.meanLevels = 0, 0 // PIL's own decoder: exact
		}
		t.Logf("%-14s %-4s %3dx%-3d decode: max %2.0f mean %.3f levels; tensor: max %.2f mean %.4f levels", name, p.Mode, p.W, p.H, dmax, dmean, maxL, meanL)
		if maxL > tol.maxLevels+1e-3 || meanL > tol.meanLevels {
			t.Errorf("%s: differs from PIL by up to %.2f levels (mean %.4f), tolerance %v / %v", name, maxL, meanL, tol.maxLevels, tol.meanLevels)
		}
	}
}

// TestJPEGDecoders: libjpeg-turbo is there where make deps ran (required
// under HPCRUN_REQUIRE_REFS=1); HPCRUN_JPEG=go switches to image/jpeg,
// which decodes the same files to within a few levels; a truncated JPEG is
// an error from both.
func TestJPEGDecoders(t *testing.T) {
	d := JPEGDecoder()
	t.Logf("JPEG decoder: %s", d)
	if d != "libjpeg-turbo" {
		if os.Getenv("HPCRUN_REQUIRE_REFS") == "1" {
			t.Fatalf("libjpeg-turbo not used (apt-get install libturbojpeg0): %s", d)
		}
		t.Skip(d)
	}
	for _, name := range []string{"photo.jpg", "photo422.jpg", "grey.jpg", "cmyk.jpg"} {
		data, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			t.Fatal(err)
		}
		tj, err := Decode(data)
		if err != nil {
			t.Fatal(err)
		}
		t.Setenv(JPEGEnv, "go")
		if d := JPEGDecoder(); !strings.HasPrefix(d, "go (") {
			t.Fatalf("%s=go: decoder %q", JPEGEnv, d)
		}
		g, err := Decode(data)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := Decode(data[:len(data)*2/3]); err == nil {
			t.Errorf("%s: truncated file accepted by the Go decoder", name)
		}
		os.Unsetenv(JPEGEnv)
		if _, err := Decode(data[:len(data)*2/3]); err == nil {
			t.Errorf("%s: truncated file accepted by libjpeg-turbo", name)
		}
		if tj.W != g.W || tj.H != g.H || tj.Mode != g.Mode || tj.C != g.C {
			t.Fatalf("%s: %dx%d %v/%d vs Go %dx%d %v/%d", name, tj.W, tj.H, tj.Mode, tj.C, g.W, g.H, g.Mode, g.C)
		}
		dmax := 0
		for i := range tj.Pix {
			dmax = max(dmax, abs(int(tj.Pix[i])-int(g.Pix[i])))
		}
		if dmax > 4 {
			t.Errorf("%s: libjpeg-turbo and image/jpeg differ by %d levels", name, dmax)
		}
	}
}

func abs(x int) int {
	if x < 0 {
		return -x
	}
	return x
}

// toRGB is convert("RGB") of the decoded planes, for the decoder check.
func toRGB(p *Picture) []uint8 {
	out := make([]uint8, p.W*p.H*3)
	for i := 0; i < p.W*p.H; i++ {
		var c [3]uint8
		px := p.Pix[i*p.C:]
		switch p.Mode {
		case ModeL, Mode1:
			c = [3]uint8{px[0], px[0], px[0]}
		case ModeP:
			c = p.Pal[px[0]]
		case ModeCMYK:
			c[0], c[1], c[2] = cmykToRGB(px[0], px[1], px[2], px[3])
		default:
			c = [3]uint8{px[0], px[1], px[2]}
		}
		copy(out[3*i:], c[:])
	}
	return out
}

func diffLevels(a, b []uint8) (maxD, mean float64) {
	var sum float64
	for i := range a {
		d := math.Abs(float64(a[i]) - float64(b[i]))
		maxD = math.Max(maxD, d)
		sum += d
	}
	return maxD, sum / float64(len(a))
}

func readBin[T uint8 | float32](t testing.TB, path string, n int) []T {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]T, n)
	if err := binary.Read(strings.NewReader(string(b)), binary.LittleEndian, out); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return out
}

// BenchmarkDecodePreprocess: one 500x375 quality-90 JPEG (ImageNet's typical
// size) through Decode and Run at 224, beside the plain reference.
func BenchmarkDecodePreprocess(b *testing.B) {
	data := benchJPEG(b, 500, 375)
	pp := NewPreprocessor(224)
	dst := make([]float32, 3*224*224)
	b.Run("decode", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			if _, err := Decode(data); err != nil {
				b.Fatal(err)
			}
		}
	})
	p, _ := Decode(data)
	b.Run("preprocess", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			pp.Run(p, dst)
		}
	})
	b.Run("reference", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			PreprocessRef(p, 224)
		}
	})
}

func benchJPEG(b *testing.B, w, h int) []byte {
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	rng := rand.New(rand.NewPCG(1, 2))
	for y := 0; y < h; y++ { // smooth colour waves plus sensor-like noise
		for x := 0; x < w; x++ {
			o := img.Pix[y*img.Stride+4*x:]
			o[0] = uint8(128 + 90*math.Sin(float64(x)/13)*math.Cos(float64(y)/17) + 10*rng.NormFloat64())
			o[1] = uint8(60 + 150*float64(x)/float64(w) + 10*rng.NormFloat64())
			o[2] = uint8(60 + 150*float64(y)/float64(h) + 10*rng.NormFloat64())
			o[3] = 255
		}
	}
	var buf bytes.Buffer
	if err := jpeg.Encode(&buf, img, &jpeg.Options{Quality: 90}); err != nil {
		b.Fatal(err)
	}
	return buf.Bytes()
}

// TestJPEGDecodeConcurrent: many goroutines share libjpeg-turbo's handle
// pool (or the Go decoder) and get the sequential result every time.
func TestJPEGDecodeConcurrent(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("testdata", "photo422.jpg"))
	if err != nil {
		t.Fatal(err)
	}
	want, err := Decode(data)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 100)
	for g := 0; g < 100; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 5; i++ {
				p, err := Decode(data)
				if err == nil && !bytes.Equal(p.Pix, want.Pix) {
					err = fmt.Errorf("pixels differ from the sequential decode")
				}
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}
