package kernels_test

import (
	"fmt"
	"testing"

	"hpcrun/kernels"
	"hpcrun/kernels/kerneltest"
)

func TestNaiveConformance(t *testing.T) { kerneltest.All(t, kernels.Naive{}) }

// TestCPUConformance runs the suites on engine 2 (the AMX filter, where
// the CPU has it) and engine 1 (NoAMX: every entry on the float32
// micro-kernels).
func TestCPUConformance(t *testing.T) {
	for _, threads := range []int{1, 3} {
		for _, noAMX := range []bool{false, true} {
			t.Run(fmt.Sprintf("threads=%d,noamx=%v", threads, noAMX), func(t *testing.T) {
				kerneltest.All(t, &kernels.CPU{Threads: threads, NoAMX: noAMX})
			})
		}
	}
}

// TestCPUSmallBlocks runs the suites with tiny tunables so every block,
// super-block and reservoir boundary is crossed.
func TestCPUSmallBlocks(t *testing.T) {
	for _, streaming := range []bool{false, true} {
		t.Run(fmt.Sprintf("streaming=%v", streaming), func(t *testing.T) {
			defer kernels.SetSmallBlocks(streaming)()
			kerneltest.All(t, kernels.NewCPU(2))
			kerneltest.All(t, &kernels.CPU{Threads: 2, NoAMX: true})
		})
	}
}

// TestCPULargeK checks k up to 20,000 (the paper's candidate count).
func TestCPULargeK(t *testing.T) {
	q := kerneltest.Gen(1, 5, 24, kerneltest.Gauss, false)
	b := kerneltest.Gen(2, 23000, 24, kerneltest.Gauss, true)
	ck := kerneltest.NewTopKChecker(q.Rows, b.Rows)
	for _, k := range []int{1000, 20000} {
		opt := kernels.TopKOptions{K: k}
		got, err := kernels.NewCPU(0).TopK(q.M, b.M, opt)
		if err != nil {
			t.Fatal(err)
		}
		ck.Check(t, got, opt, false)
	}
}

// TestAVX2Conformance runs the conformance suite with AVX-512 (and so AMX)
// switched off: the AVX2 micro-kernel (kern5) end to end.
func TestAVX2Conformance(t *testing.T) {
	ok, restore := kernels.WithoutAVX512()
	defer restore()
	if !ok {
		t.Skip("no AVX2+FMA")
	}
	kerneltest.All(t, kernels.NewCPU(2))
}
