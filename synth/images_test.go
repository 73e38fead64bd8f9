package synth

import (
	"bytes"
	"math"
	"os"
	"path/filepath"
	"testing"

	"hpcrun/clip"
)

var testImageSpec = ImageSpec{Name: "imgs", Classes: 6, PerClass: 3, MinSide: 40, MaxSide: 90, ImageSize: 32, Grid: 4}

func unitCentres(n, dim int, seed uint64) []float32 {
	g := &gen{p: Preset{Dim: dim}, seed: seed}
	return g.unitSet(1, n)
}

// The same seed writes the same bytes; the folder is an ImageFolder tree
// with every format; the encoder maps each class pattern onto its centre.
func TestWriteImages(t *testing.T) {
	s := testImageSpec
	const dim = 16
	centres := unitCentres(s.Classes, dim, 3)
	a, b := t.TempDir(), t.TempDir()
	for _, d := range []string{a, b} {
		if err := WriteImages(d, s, 9, centres, dim); err != nil {
			t.Fatal(err)
		}
	}
	files, _ := filepath.Glob(filepath.Join(a, "images", s.Name, "n*", "img_*"))
	if len(files) != s.Classes*s.PerClass {
		t.Fatalf("%d image files, want %d", len(files), s.Classes*s.PerClass)
	}
	formats := map[string]int{}
	for _, f := range append(files, filepath.Join(a, ModelFile)) {
		rel, _ := filepath.Rel(a, f)
		x, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		y, err := os.ReadFile(filepath.Join(b, rel))
		if err != nil || !bytes.Equal(x, y) {
			t.Fatalf("%s differs between two runs with one seed", rel)
		}
		if rel != ModelFile {
			p, err := clip.Decode(x)
			if err != nil {
				t.Fatalf("%s: %v", rel, err)
			}
			formats[p.Format+"/"+p.Mode.String()]++
		}
	}
	for _, want := range []string{"jpeg/RGB", "png/RGB", "png/RGBA", "png/P", "jpeg/L"} {
		if formats[want] == 0 {
			t.Errorf("no %s image (have %v)", want, formats)
		}
	}

	// W^T f_c = centre_c for the clean patterns
	patterns := [][]float64{}
	for c := 0; c < s.Classes; c++ {
		p := make([]float64, 3*s.Grid*s.Grid)
		for j := range p {
			p[j] = 0.1 + 0.8*math.Mod(float64(c*7+j*13), 17)/17
		}
		patterns = append(patterns, p)
	}
	w, err := solveEncoder(patterns, s.Grid, centres, dim)
	if err != nil {
		t.Fatal(err)
	}
	cells := s.Grid * s.Grid
	for c, p := range patterns {
		for d := 0; d < dim; d++ {
			var e float64
			for j, v := range p {
				ch := j / cells
				e += (v - float64(clip.Mean[ch])) / float64(clip.Std[ch]) * float64(w[j*dim+d])
			}
			if math.Abs(e-float64(centres[c*dim+d])) > 1e-4 {
				t.Fatalf("class %d dim %d: encoder gives %v, centre %v", c, d, e, centres[c*dim+d])
			}
		}
	}
}
