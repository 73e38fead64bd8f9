package ort

import (
	"errors"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"hpcrun/clip"
)

// orSkip loads ONNX Runtime or skips (fails under HPCRUN_REQUIRE_REFS=1).
func orSkip(t testing.TB) {
	t.Helper()
	if _, err := Init(); err != nil {
		if os.Getenv("HPCRUN_REQUIRE_REFS") == "1" {
			t.Fatal(err)
		}
		t.Skip(err)
	}
}

// writeModel(t)(clip.TinyEncoder(...)) writes the model to a temp file.
func writeModel(t testing.TB) func([]byte, error) string {
	return func(b []byte, err error) string {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(t.TempDir(), "m.onnx")
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
}

func randImages(n, size int, seed uint64) []float32 {
	rng := rand.New(rand.NewPCG(seed, 1))
	x := make([]float32, n*3*size*size)
	for i := range x {
		x[i] = float32(rng.NormFloat64())
	}
	return x
}

// The hand-encoded TinyEncoder, run by ONNX Runtime, equals its plain Go
// forward pass.
func TestTinyEncoderMatchesForward(t *testing.T) {
	orSkip(t)
	tm := clip.Tiny{Size: 32, Grid: 4, Dim: 24, Seed: 5}
	s, err := NewSession(writeModel(t)(clip.TinyEncoder(tm)), SessionOptions{Backend: "cpu", Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.Size != 32 || s.Dim != 24 || s.Provider != "CPU" {
		t.Fatalf("session %+v", s)
	}
	for _, n := range []int{1, 5} {
		x := randImages(n, 32, uint64(n))
		got, err := s.Run(x, n, nil)
		if err != nil {
			t.Fatal(err)
		}
		want := clip.TinyForward(tm, x, n)
		for i := range want {
			if d := math.Abs(float64(got[i] - want[i])); d > 1e-5 {
				t.Fatalf("n=%d: value %d: ort %v, reference %v", n, i, got[i], want[i])
			}
		}
	}
}

// The ViT-shaped benchmark model loads and runs; a batch gives the same rows
// as its images run one by one.
func TestViTEncoderRuns(t *testing.T) {
	orSkip(t)
	v := clip.ViT{Size: 64, Patch: 16, Width: 32, Layers: 2, Heads: 4, Dim: 16, Seed: 1}
	s, err := NewSession(writeModel(t)(clip.ViTEncoder(v)), SessionOptions{Backend: "cpu", Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	x := randImages(3, 64, 9)
	all, err := s.Run(x, 3, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		one, err := s.Run(x[i*3*64*64:], 1, nil)
		if err != nil {
			t.Fatal(err)
		}
		for d := 0; d < 16; d++ {
			a, b := all[i*16+d], one[d]
			if math.IsNaN(float64(a)) || math.Abs(float64(a-b)) > 1e-4 {
				t.Fatalf("image %d dim %d: batched %v, alone %v", i, d, a, b)
			}
		}
	}
}

// A model whose fixed input size differs from image_size is refused.
func TestSessionChecksSize(t *testing.T) {
	orSkip(t)
	m := writeModel(t)(clip.TinyEncoder(clip.Tiny{Size: 16, Grid: 2, Dim: 4}))
	if _, err := NewSession(m, SessionOptions{Backend: "cpu", Size: 224}); err == nil {
		t.Fatal("16x16 model accepted for image_size 224")
	}
}

// Backend cuda on a machine or library without the CUDA provider fails
// with a clear error; auto falls back to the CPU and says so.
func TestCUDABackend(t *testing.T) {
	orSkip(t)
	m := writeModel(t)(clip.TinyEncoder(clip.Tiny{Size: 8, Grid: 2, Dim: 4}))
	s, err := NewSession(m, SessionOptions{Backend: "cuda"})
	if err == nil {
		s.Close()
		t.Skip("this machine has a working CUDA execution provider")
	}
	if !errors.Is(err, ErrNoCUDA) {
		t.Fatalf("cuda error %v does not wrap ErrNoCUDA", err)
	}
	t.Logf("cuda: %v", err)
	var notes []string
	s, err = NewSession(m, SessionOptions{Backend: "auto", Note: func(m string) { notes = append(notes, m) }})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.Provider != "CPU" || len(notes) != 1 {
		t.Fatalf("auto: provider %s, notes %q", s.Provider, notes)
	}
}
