package kernels_test

import (
	"fmt"
	"testing"

	"hpcrun/kernels"
	"hpcrun/kernels/kerneltest"
)

func TestNaiveConformance(t *testing.T) { kerneltest.All(t, kernels.Naive{}) }

func TestCPUConformance(t *testing.T) {
	for _, threads := range []int{1, 3} {
		t.Run(fmt.Sprintf("threads=%d", threads), func(t *testing.T) {
			kerneltest.All(t, kernels.NewCPU(threads))
		})
	}
}

// TestCPUSmallBlocks runs the suites with tiny tunables so every block,
// super-block and reservoir boundary is crossed.
func TestCPUSmallBlocks(t *testing.T) {
	for _, streaming := range []bool{false, true} {
		t.Run(fmt.Sprintf("streaming=%v", streaming), func(t *testing.T) {
			defer kernels.SetSmallBlocks(streaming)()
			kerneltest.All(t, kernels.NewCPU(2))
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
