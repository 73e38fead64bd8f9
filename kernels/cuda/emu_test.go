package cuda

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"hpcrun/kernels"
	"hpcrun/kernels/kerneltest"
)

func newEmulated(t *testing.T, version int, tun tunables) *Backend {
	t.Helper()
	dev, err := newEmuDevice()
	if err != nil {
		t.Fatal(err)
	}
	b, err := newBackend(dev, 2)
	if err != nil {
		t.Fatal(err)
	}
	b.Version = version
	b.tun = tun
	t.Cleanup(func() {
		if err := b.Close(); err != nil {
			t.Errorf("Close: %v", err) // the emulator reports leaked device memory
		}
	})
	return b
}

// smallTunables cross every boundary of the host side on kerneltest's
// shapes: chunks of a few rows, query blocks of 3 queries, one tile per
// grid slice, 8 slots of headroom (so TopK ranges overflow and split).
func smallTunables() tunables {
	return tunables{chunkBytes: 16 * 128, topkHeadroom: 8, topkBytes: 3 * (8*(300+8) + 8*300 + 8 + 4*160), maxGridY: 1, residentFrac: 0.5}
}

// TestEmulatedConformance runs the conformance suites through the whole
// host side on the emulated device: versions 2 to 5 (tensor-core kernel
// names and tiles for float16 inputs: 128x128, and 128x256 for version 5)
// with the default tunables, versions 1 and 5 with tiny ones, and version 5
// on a persistent grid of 3 blocks (the launches' grids are checked).
func TestEmulatedConformance(t *testing.T) {
	for _, c := range []struct {
		version int
		small   bool
		persist int
	}{{2, false, 0}, {3, false, 0}, {4, false, 0}, {5, false, 0}, {5, true, 0}, {5, false, 3}, {7, false, 0}, {7, true, 0}, {7, false, 3}, {6, false, 0}, {6, true, 0}, {1, true, 0}} {
		version, small := c.version, c.small
		{
			t.Run(fmt.Sprintf("v%d,small=%v,persist=%d", version, small, c.persist), func(t *testing.T) {
				tun := defaultTunables
				if small {
					tun = smallTunables()
				}
				tun.persistBlocks = c.persist
				tun.group = c.persist // every launch carries the tunables' tile order
				b := newEmulated(t, version, tun)
				kerneltest.All(t, b)
				d := b.dev.(*emuDevice)
				if n := d.persistent; (n > 0) != (c.persist > 0) {
					t.Errorf("%d launches on a persistent grid", n)
				}
				if len(d.groups) != 1 || d.groups[int64(c.persist)] == 0 {
					t.Errorf("launches by tile order %v, want all %d", d.groups, c.persist)
				}
				if small {
					s := b.stats
					t.Logf("stats: %+v", s)
					if s.splits == 0 || s.queryBlock < 1000 || s.chunks < 10000 || s.selects == 0 {
						t.Errorf("small tunables did not exercise every path: %+v", s)
					}
				}
			})
		}
	}
}

// TestEmulatedLargeK checks k up to 20,000 (the paper's candidate count)
// with chunked base and overflow splits.
func TestEmulatedLargeK(t *testing.T) {
	tun := defaultTunables
	tun.chunkBytes = 4000 * 32 * 2
	b := newEmulated(t, 0, tun)
	q := kerneltest.Gen(1, 3, 24, kerneltest.Gauss, true)
	base := kerneltest.Gen(2, 23000, 24, kerneltest.Gauss, true)
	ck := kerneltest.NewTopKChecker(q.Rows, base.Rows)
	for _, k := range []int{1000, 20000} {
		opt := kernels.TopKOptions{K: k, BaseOffset: 7}
		got, err := b.TopK(q.M, base.M, opt)
		if err != nil {
			t.Fatal(err)
		}
		ck.Check(t, got, opt, false)
	}
	if b.stats.chunks < 6 {
		t.Errorf("base was not streamed in chunks: %+v", b.stats)
	}
}

// TestEmulatedStream runs kerneltest.Stream on the device's own stream
// (room for every query) with chunks of a few rows and 8 slots of headroom,
// so ranges overflow and split inside blocks added after flushes; with the
// exact filter too. Versions 1 (FFMA) and 4.
func TestEmulatedStream(t *testing.T) {
	for _, v := range []int{1, 4} {
		for _, filter := range []bool{false, true} {
			t.Run(fmt.Sprintf("v%d,filter=%v", v, filter), func(t *testing.T) {
				tun := smallTunables()
				tun.topkBytes = defaultTunables.topkBytes
				b := newEmulated(t, v, tun)
				b.Filter = filter
				kerneltest.Stream(t, b)
				if s := b.stats; s.splits == 0 || s.chunks < 1000 {
					t.Errorf("the small tunables did not split ranges: %+v", s)
				}
			})
		}
	}
}

// TestEmulatedStreamRoom: a stream takes its slots when it starts, so the
// next one sees the memory gone and answers kernels.ErrNoRoom (and
// kernels.NewTopKStream falls back to TopK per block) rather than failing
// at its first block; releasing the first makes room again.
func TestEmulatedStreamRoom(t *testing.T) {
	b := newEmulated(t, 4, defaultTunables)
	q := kerneltest.Gen(1, 100, 32, kerneltest.Gauss, true)
	opt := kernels.TopKOptions{K: 10}
	_, slots := b.topkSlots(opt.K)
	one := 100 * (8*slots + 8*opt.K) // the slots of 100 queries
	b.dev.(*emuDevice).free0 = uint64(3 * one)
	s1, native, err := kernels.NewTopKStream(b, q.M, opt)
	if err != nil || !native {
		t.Fatalf("first stream: native %v, %v", native, err)
	}
	if _, err := b.NewTopKStream(q.M, opt); !errors.Is(err, kernels.ErrNoRoom) {
		t.Fatalf("second stream with half the memory taken: %v, want ErrNoRoom", err)
	}
	s2, native, err := kernels.NewTopKStream(b, q.M, opt)
	if err != nil || native {
		t.Fatalf("second stream: native %v, %v; want the fallback", native, err)
	}
	base := kerneltest.Gen(2, 500, 32, kerneltest.Gauss, true)
	var rs []kernels.TopKResult
	for _, s := range []kernels.TopKStream{s1, s2} {
		if err := s.Add(base.M); err != nil {
			t.Fatal(err)
		}
		r, err := s.Flush()
		if err != nil {
			t.Fatal(err)
		}
		rs = append(rs, r)
		s.Release()
	}
	if !reflect.DeepEqual(rs[0], rs[1]) {
		t.Error("the device's stream and the fallback differ")
	}
	s3, native, err := kernels.NewTopKStream(b, q.M, opt)
	if err != nil || !native {
		t.Fatalf("after Release: native %v, %v", native, err)
	}
	s3.Release()
}

// TestEmulatedKernelSeconds: the kernel-only timer launches the real kernel
// names (the emulator checks names, grids and parameters) and reports a
// positive time; bad arguments are errors. Profile counts what ran.
func TestEmulatedKernelSeconds(t *testing.T) {
	b := newEmulated(t, 3, defaultTunables)
	for _, op := range []string{"topk", "centroid"} {
		sec, err := b.KernelSeconds(op, 130, 300, 48, 2)
		if err != nil || !(sec > 0) {
			t.Fatalf("%s: %v s, %v", op, sec, err)
		}
	}
	if _, err := b.KernelSeconds("prefixmax", 1, 1, 1, 1); err == nil {
		t.Error("unknown op accepted")
	}
	if _, err := b.KernelSeconds("topk", 0, 1, 1, 1); err == nil {
		t.Error("empty A accepted")
	}
	b.Profile()
	b.SetProfile(true)
	q := kerneltest.Gen(1, 10, 32, kerneltest.Gauss, true)
	if _, err := b.TopK(q.M, q.M, kernels.TopKOptions{K: 3}); err != nil {
		t.Fatal(err)
	}
	if p := b.Profile(); !strings.Contains(p, "launches 1,") || !strings.Contains(p, "select (TopK)") ||
		!strings.Contains(p, "first chunk") || !strings.Contains(p, "top-k results back") {
		t.Errorf("profile %q", p)
	}
	// without SetProfile: the always-on timings only
	b.SetProfile(false)
	if _, err := b.TopK(q.M, q.M, kernels.TopKOptions{K: 3}); err != nil {
		t.Fatal(err)
	}
	if p := b.Profile(); !strings.Contains(p, "top-k results back") || strings.Contains(p, "select (TopK)") {
		t.Errorf("profile %q", p)
	}
}
