package cuda

import (
	"fmt"
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
// with the default tunables, versions 1 and 5 with tiny ones.
func TestEmulatedConformance(t *testing.T) {
	for _, c := range []struct {
		version int
		small   bool
	}{{2, false}, {3, false}, {4, false}, {5, false}, {5, true}, {6, false}, {6, true}, {1, true}} {
		version, small := c.version, c.small
		{
			t.Run(fmt.Sprintf("v%d,small=%v", version, small), func(t *testing.T) {
				tun := defaultTunables
				if small {
					tun = smallTunables()
				}
				b := newEmulated(t, version, tun)
				kerneltest.All(t, b)
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
