package synth

import (
	"bytes"
	"fmt"
	"image"
	"image/color"
	"image/color/palette"
	"image/draw"
	"image/jpeg"
	"image/png"
	"math"
	"math/rand/v2"
	"path/filepath"

	"hpcrun/clip"
	"hpcrun/dataset"
)

// ImageSpec sizes the labelled image folder synth writes for the embed
// stage, with the ONNX image encoder that embeds it:
// images/<Name>/n%08d/img_%03d.{jpg,png} (class folders in label order, as
// torchvision's ImageFolder reads them) and models/clip-visual.onnx.
//
// Each class has a pattern of Grid x Grid colour cells; an image of the
// class paints that pattern, jittered, textured and partly occluded, over
// the square that CLIP's centre crop keeps, and noise in the margins the
// crop drops. The encoder (clip.TinyEncoder: average-pool to the same
// Grid x Grid cells, then a linear map) is solved so that a class's clean
// pattern maps onto the class centre the class-embedding matrix is drawn
// around, so zero-shot accuracy on these images is meaningful.
type ImageSpec struct {
	Name             string
	Classes          int // classes 0..Classes-1 of the world
	PerClass         int
	MinSide, MaxSide int // image sides, drawn uniformly
	ImageSize        int // the encoder's input side (the embed image_size)
	Grid             int // pattern cells per side (ImageSize % Grid == 0)
}

// ImageSpecs gives the presets that write images.
var ImageSpecs = map[string]ImageSpec{
	"quickstart": {Name: "imagenet-images", Classes: 100, PerClass: 4, MinSide: 120, MaxSide: 320, ImageSize: 224, Grid: 8},
	"tiny":       {Name: "imagenet-images", Classes: 10, PerClass: 2, MinSide: 40, MaxSide: 80, ImageSize: 32, Grid: 8},
}

// ModelFile is where the encoder goes, relative to the world's folder.
var ModelFile = filepath.Join("models", "clip-visual.onnx")

// Image noise levels, on the [0, 1] colour scale.
const (
	cellJitter  = 0.05 // per image and cell
	pixelNoise  = 0.08 // per pixel
	occluders   = 3    // random ellipses per image
	patternLow  = 0.12 // pattern colours are drawn in [low, high]
	patternHigh = 0.88
)

// writeImages writes the preset's image folder, if it has one.
func writeImages(out string, g *gen) error {
	s, ok := ImageSpecs[g.p.Name]
	if !ok {
		return nil
	}
	if s.Classes > g.p.Classes {
		return fmt.Errorf("synth images: %d classes but the world has %d", s.Classes, g.p.Classes)
	}
	return WriteImages(out, s, g.seed, g.topics[:s.Classes*g.p.Dim], g.p.Dim)
}

// WriteImages writes s's images under out/images/<Name>/ and the encoder
// to out/ModelFile, mapping class c's pattern to centres[c*dim:(c+1)*dim].
// The same seed gives the same bytes.
func WriteImages(out string, s ImageSpec, seed uint64, centres []float32, dim int) error {
	if s.Grid < 1 || s.ImageSize%s.Grid != 0 || s.Classes < 1 || s.PerClass < 1 || s.MinSide < 8 || s.MaxSide < s.MinSide {
		return fmt.Errorf("synth images: bad spec %+v", s)
	}
	if len(centres) != s.Classes*dim {
		return fmt.Errorf("synth images: %d centre values for %d classes of dim %d", len(centres), s.Classes, dim)
	}
	k := 3 * s.Grid * s.Grid
	if s.Classes > k {
		return fmt.Errorf("synth images: %d classes need a grid with at least that many features (3·grid² = %d)", s.Classes, k)
	}
	rng := rand.New(rand.NewPCG(seed, 50))
	patterns := make([][]float64, s.Classes) // [class][ch*G*G + cell] in [0,1]
	for c := range patterns {
		patterns[c] = make([]float64, k)
		for j := range patterns[c] {
			patterns[c][j] = patternLow + (patternHigh-patternLow)*rng.Float64()
		}
	}
	w, err := solveEncoder(patterns, s.Grid, centres, dim)
	if err != nil {
		return err
	}
	model, err := clip.TinyEncoder(clip.Tiny{Size: s.ImageSize, Grid: s.Grid, Dim: dim, W: w})
	if err != nil {
		return err
	}
	if err := dataset.WriteFileAtomic(filepath.Join(out, ModelFile), model); err != nil {
		return err
	}
	root := filepath.Join(out, "images", s.Name)
	for c := 0; c < s.Classes; c++ {
		for i := 0; i < s.PerClass; i++ {
			n := c*s.PerClass + i
			ir := rand.New(rand.NewPCG(seed, 51<<32|uint64(n)))
			data, ext, err := drawImage(ir, s, patterns[c], n)
			if err != nil {
				return err
			}
			p := filepath.Join(root, fmt.Sprintf("n%08d", c), fmt.Sprintf("img_%03d.%s", i, ext))
			if err := dataset.WriteFileAtomic(p, data); err != nil {
				return err
			}
		}
	}
	return nil
}

// solveEncoder returns W [3·G², dim] with W^T f_c = centre_c for every
// class, f_c being the class pattern as the encoder sees it (normalised
// with CLIP's mean and std): the minimum-norm solution W = F^T (F F^T)^-1 T.
func solveEncoder(patterns [][]float64, grid int, centres []float32, dim int) ([]float32, error) {
	n, k := len(patterns), len(patterns[0])
	cells := grid * grid
	f := make([][]float64, n)
	for c, p := range patterns {
		f[c] = make([]float64, k)
		for j, v := range p {
			ch := j / cells
			f[c][j] = (v - float64(clip.Mean[ch])) / float64(clip.Std[ch])
		}
	}
	// G = F F^T (n x n), solve G Y = T (Y n x dim), W = F^T Y
	gram := make([]float64, n*n)
	for a := 0; a < n; a++ {
		for b := 0; b < n; b++ {
			var s float64
			for j := 0; j < k; j++ {
				s += f[a][j] * f[b][j]
			}
			gram[a*n+b] = s
		}
	}
	y := make([]float64, n*dim)
	for i := range y {
		y[i] = float64(centres[i])
	}
	if err := choleskySolve(gram, y, n, dim); err != nil {
		return nil, err
	}
	w := make([]float32, k*dim)
	for j := 0; j < k; j++ {
		for d := 0; d < dim; d++ {
			var s float64
			for c := 0; c < n; c++ {
				s += f[c][j] * y[c*dim+d]
			}
			w[j*dim+d] = float32(s)
		}
	}
	return w, nil
}

// choleskySolve solves A X = B in place (A n x n symmetric positive
// definite, B n x m, overwritten by X).
func choleskySolve(a, b []float64, n, m int) error {
	for j := 0; j < n; j++ {
		s := a[j*n+j]
		for p := 0; p < j; p++ {
			s -= a[j*n+p] * a[j*n+p]
		}
		if s <= 1e-12 {
			return fmt.Errorf("synth images: class patterns are linearly dependent")
		}
		a[j*n+j] = math.Sqrt(s)
		for i := j + 1; i < n; i++ {
			s := a[i*n+j]
			for p := 0; p < j; p++ {
				s -= a[i*n+p] * a[j*n+p]
			}
			a[i*n+j] = s / a[j*n+j]
		}
	}
	for c := 0; c < m; c++ {
		for i := 0; i < n; i++ { // L z = b
			s := b[i*m+c]
			for p := 0; p < i; p++ {
				s -= a[i*n+p] * b[p*m+c]
			}
			b[i*m+c] = s / a[i*n+i]
		}
		for i := n - 1; i >= 0; i-- { // L^T x = z
			s := b[i*m+c]
			for p := i + 1; p < n; p++ {
				s -= a[p*n+i] * b[p*m+c]
			}
			b[i*m+c] = s / a[i*n+i]
		}
	}
	return nil
}

// drawImage paints one image of a class and encodes it; image n of the set
// is, by n % 10: a JPEG (0-5), an RGB PNG (6), a translucent RGBA PNG (7), a
// palette PNG (8) or a greyscale JPEG (9).
func drawImage(rng *rand.Rand, s ImageSpec, pattern []float64, n int) ([]byte, string, error) {
	w := s.MinSide + rng.IntN(s.MaxSide-s.MinSide+1)
	h := s.MinSide + rng.IntN(s.MaxSide-s.MinSide+1)
	img := image.NewNRGBA(image.Rect(0, 0, w, h))
	side := min(w, h)
	ox, oy := (w-side)/2, (h-side)/2
	G := s.Grid
	cells := G * G
	jit := make([]float64, len(pattern))
	for j := range jit {
		jit[j] = pattern[j] + cellJitter*rng.NormFloat64()
	}
	bg := [3]float64{rng.Float64(), rng.Float64(), rng.Float64()}
	to8 := func(v float64) uint8 { return uint8(math.Round(255 * math.Max(0, math.Min(1, v)))) }
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			var rgb [3]float64
			if x >= ox && x < ox+side && y >= oy && y < oy+side {
				cell := min(G-1, (y-oy)*G/side)*G + min(G-1, (x-ox)*G/side)
				for ch := 0; ch < 3; ch++ {
					rgb[ch] = jit[ch*cells+cell] + pixelNoise*rng.NormFloat64()
				}
			} else { // margins the centre crop drops: a noisy gradient
				for ch := 0; ch < 3; ch++ {
					rgb[ch] = bg[ch]*float64(x+y)/float64(w+h) + 0.3*rng.Float64()
				}
			}
			o := img.Pix[y*img.Stride+4*x:]
			o[0], o[1], o[2], o[3] = to8(rgb[0]), to8(rgb[1]), to8(rgb[2]), 255
		}
	}
	for e := 0; e < occluders; e++ { // small occluding ellipses
		cx, cy := rng.Float64()*float64(w), rng.Float64()*float64(h)
		rx, ry := (0.03+0.07*rng.Float64())*float64(side), (0.03+0.07*rng.Float64())*float64(side)
		col := color.NRGBA{uint8(rng.IntN(256)), uint8(rng.IntN(256)), uint8(rng.IntN(256)), 255}
		for y := max(0, int(cy-ry)); y < min(h, int(cy+ry)+1); y++ {
			for x := max(0, int(cx-rx)); x < min(w, int(cx+rx)+1); x++ {
				dx, dy := (float64(x)-cx)/rx, (float64(y)-cy)/ry
				if dx*dx+dy*dy <= 1 {
					img.SetNRGBA(x, y, col)
				}
			}
		}
	}
	var buf bytes.Buffer
	var err error
	ext := "png"
	switch n % 10 {
	case 6:
		rgb := image.NewRGBA(img.Rect)
		draw.Draw(rgb, rgb.Rect, img, image.Point{}, draw.Src)
		err = png.Encode(&buf, rgb)
	case 7:
		for i := 3; i < len(img.Pix); i += 4 {
			img.Pix[i] = uint8(190 + rng.IntN(66))
		}
		err = png.Encode(&buf, img)
	case 8:
		pal := image.NewPaletted(img.Rect, palette.WebSafe)
		draw.Draw(pal, pal.Rect, img, image.Point{}, draw.Src)
		err = png.Encode(&buf, pal)
	case 9:
		grey := image.NewGray(img.Rect)
		draw.Draw(grey, grey.Rect, img, image.Point{}, draw.Src)
		err, ext = jpeg.Encode(&buf, grey, &jpeg.Options{Quality: 90}), "jpg"
	default:
		err, ext = jpeg.Encode(&buf, img, &jpeg.Options{Quality: 80 + rng.IntN(16)}), "jpg"
	}
	return buf.Bytes(), ext, err
}
