package cuda

import (
	"errors"
	"math"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"testing"

	"hpcrun/kernels"
)

// TestNoGPU: on a machine without a driver or a device, Available and New
// fail with one clear line wrapping ErrNoDriver or ErrNoDevice (what a
// caller checks before falling back to the CPU backend).
func TestNoGPU(t *testing.T) {
	t.Setenv(EmulatorEnv, "")
	desc, err := Available()
	if err == nil {
		t.Skipf("a CUDA device is present: %s", desc)
	}
	if !errors.Is(err, ErrNoDriver) && !errors.Is(err, ErrNoDevice) {
		t.Fatalf("Available: %v: wraps neither ErrNoDriver nor ErrNoDevice", err)
	}
	msg := err.Error()
	if !strings.Contains(msg, "libcuda.so.1 not found") && !strings.Contains(msg, "no CUDA device") &&
		!strings.Contains(msg, "no CUDA driver") {
		t.Errorf("Available: unclear error %q", msg)
	}
	if strings.Contains(msg, "\n") {
		t.Errorf("Available: error is not one line: %q", msg)
	}
	if _, statErr := os.Stat("/dev/nvidiactl"); statErr != nil && !strings.Contains(msg, "libcuda.so.1 not found") && !errors.Is(err, ErrNoDevice) {
		t.Errorf("no driver here, but the error does not say so: %q", msg)
	}
	if n, err := DeviceCount(); err == nil && n > 0 {
		t.Errorf("DeviceCount = %d where Available fails", n)
	}
	b, err2 := New(0, 1)
	if err2 == nil {
		b.Close()
		t.Fatal("New succeeded where Available failed")
	}
	if err2.Error() != msg {
		t.Errorf("New: %q, Available: %q", err2, msg)
	}
	t.Logf("without a GPU: %v", err2)
}

// TestEmulatorEnv: HPCRUN_CUDA_EMULATOR=1 gives a working Backend without
// a GPU (reference semantics through the public API).
func TestEmulatorEnv(t *testing.T) {
	t.Setenv(EmulatorEnv, "1")
	desc, err := Available()
	if err != nil || !strings.Contains(desc, "emulated") {
		t.Fatalf("Available: %q, %v", desc, err)
	}
	b, err := New(0, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	q := kernels.F32Matrix([]float32{1, 0, 0, 1}, 2, 2)
	base := kernels.F32Matrix([]float32{0.5, 0.5, -1, 0, 0, 2}, 3, 2)
	got, err := b.TopK(q, base, kernels.TopKOptions{K: 2})
	if err != nil {
		t.Fatal(err)
	}
	if want := []int64{0, 2, 2, 0}; !slices.Equal(got.Idx, want) || got.Val[0] != 0.5 || got.Val[2] != 2 {
		t.Fatalf("TopK: %v %v, want indices %v", got.Val, got.Idx, want)
	}
	if !strings.Contains(b.Name(), "emulated") {
		t.Errorf("Name %q does not say emulated", b.Name())
	}
}

// TestKeys: key order is the ops' order (larger value, then smaller index),
// -0 ties with +0, keys round-trip, and no real key is 0.
func TestKeys(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	vals := []float32{0, float32(math.Copysign(0, -1)), 1, -1, 65504, -65504, math.SmallestNonzeroFloat32,
		-math.SmallestNonzeroFloat32, math.MaxFloat32, -math.MaxFloat32, float32(math.Inf(-1)), 0.5, -0.5}
	for i := 0; i < 200; i++ {
		vals = append(vals, float32(r.NormFloat64()), math.Float32frombits(r.Uint32()&0xff7fffff))
	}
	for _, v := range vals {
		for _, w := range vals {
			for _, ij := range [][2]int64{{0, 1}, {5, 5}, {1 << 30, 3}, {2, 1<<31 - 2}} {
				i, j := ij[0], ij[1]
				ki, kj := makeKey(v, i), makeKey(w, j)
				better := v > w || (v == w && i < j)
				if (ki > kj) != better {
					t.Fatalf("key(%v,%d) > key(%v,%d) is %v, want %v", v, i, w, j, ki > kj, better)
				}
			}
		}
		k := makeKey(v, 12345)
		if k == 0 || keyIndex(k) != 12345 || keyValue(k) != v {
			t.Fatalf("key of %v: %#x decodes to (%v, %d)", v, k, keyValue(k), keyIndex(k))
		}
	}
}

// TestPack checks the device layout: padding to ld with zeros, exact
// float16 -> float32, negation, and NaN/Inf reported with the row.
func TestPack(t *testing.T) {
	f := []float32{1, -2, 0.5, 3, 4, -0.25, 7, 8, 9}
	h := make([]uint16, len(f))
	kernels.F32ToF16(h, f)
	for _, c := range []struct {
		m   kernels.Matrix
		l   layout
		neg bool
	}{
		{kernels.F32Matrix(f, 3, 3), layoutOf(3, kernels.F32Matrix(f, 3, 3)), false},
		{kernels.F16Matrix(h, 3, 3), layoutOf(3, kernels.F16Matrix(h, 3, 3)), true},
		{kernels.F16Matrix(h, 3, 3), layoutOf(3, kernels.F16Matrix(h, 3, 3), kernels.F32Matrix(f, 3, 3)), true},
	} {
		if c.l.ld != 32 {
			t.Fatalf("ld %d, want 32", c.l.ld)
		}
		dst := make([]byte, 2*c.l.rowBytes()) // rows 1..2
		for i := range dst {
			dst[i] = 0xff
		}
		if err := pack(dst, c.m, 1, 3, c.l, c.neg, "x", 2); err != nil {
			t.Fatal(err)
		}
		for r := 0; r < 2; r++ {
			for k := 0; k < 32; k++ {
				var got float32
				if c.l.f16 {
					got = kernels.F16Value(uint16(dst[2*(r*32+k)]) | uint16(dst[2*(r*32+k)+1])<<8)
				} else {
					got = f32s(dst)[r*32+k]
				}
				want := float32(0)
				if k < 3 {
					want = f[(r+1)*3+k]
					if c.neg {
						want = -want
					}
				}
				if got != want {
					t.Fatalf("%s neg=%v: row %d col %d = %v, want %v", c.l.dtypeShort, c.neg, r, k, got, want)
				}
			}
		}
		bad := kernels.F32Matrix(append([]float32(nil), f...), 3, 3)
		bad.F32[7] = float32(math.NaN())
		hb := append([]uint16(nil), h...)
		hb[7] = 0x7c00
		for _, m := range []kernels.Matrix{bad, kernels.F16Matrix(hb, 3, 3)} {
			err := pack(make([]byte, 3*128), m, 0, 3, layoutOf(3, m), false, "base", 2)
			if !errors.Is(err, kernels.ErrNonFinite) || !strings.Contains(err.Error(), "base row 2") {
				t.Fatalf("NaN/Inf in row 2: %v", err)
			}
		}
	}
}

// TestGroupEnv: HPCRUN_CUDA_GROUP sets the v5 engine's tile order; a bad
// value fails the backend's creation with the variable's name.
func TestGroupEnv(t *testing.T) {
	for _, c := range []struct {
		env  string
		want int
		bad  bool
	}{{"", defaultTunables.group, false}, {"0", 0, false}, {"8", 8, false}, {"65536", 65536, false}, {"-1", 0, true}, {"65537", 0, true}, {"x", 0, true}} {
		t.Setenv(GroupEnv, c.env)
		dev, err := newEmuDevice()
		if err != nil {
			t.Fatal(err)
		}
		b, err := newBackend(dev, 1)
		if c.bad {
			if err == nil || !strings.Contains(err.Error(), GroupEnv) {
				t.Errorf("%s=%q: error %v, want one naming %s", GroupEnv, c.env, err, GroupEnv)
			}
			if b != nil {
				b.Close()
			}
			continue
		}
		if err != nil {
			t.Fatalf("%s=%q: %v", GroupEnv, c.env, err)
		}
		if b.tun.group != c.want {
			t.Errorf("%s=%q: group %d, want %d", GroupEnv, c.env, b.tun.group, c.want)
		}
		b.Close()
	}
}
