package clip

import (
	"bytes"
	"testing"
)

// The encoders are deterministic: the same description gives the same bytes.
func TestEncodersDeterministic(t *testing.T) {
	a, err := TinyEncoder(Tiny{Size: 32, Grid: 4, Dim: 8, Seed: 3})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := TinyEncoder(Tiny{Size: 32, Grid: 4, Dim: 8, Seed: 3})
	c, _ := TinyEncoder(Tiny{Size: 32, Grid: 4, Dim: 8, Seed: 4})
	if !bytes.Equal(a, b) || bytes.Equal(a, c) {
		t.Fatal("TinyEncoder is not a function of its seed")
	}
	v := ViT{Size: 32, Patch: 16, Width: 16, Layers: 1, Heads: 2, Dim: 8, Seed: 1}
	x, _ := ViTEncoder(v)
	y, _ := ViTEncoder(v)
	if !bytes.Equal(x, y) {
		t.Fatal("ViTEncoder is not deterministic")
	}
	if _, err := TinyEncoder(Tiny{Size: 30, Grid: 4, Dim: 8}); err == nil {
		t.Fatal("size not a multiple of grid accepted")
	}
	if f := ViTB32.FLOPs(); f < 8e9 || f > 9.5e9 {
		t.Fatalf("ViT-B/32 FLOPs %g, want about 8.8e9 (4.4 GMAC)", f)
	}
}
