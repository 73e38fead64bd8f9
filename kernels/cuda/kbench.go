package cuda

import (
	"fmt"
	"math"
	"time"

	"hpcrun/kernels"
)

// KernelSeconds times one similarity kernel alone, on device-resident
// float16 data (no host packing, no copies, no selection, no decoding):
// nA x dim rows against nB x dim rows, reps launches after one warm-up,
// the wall time between two stream synchronisations divided by reps. It
// gives the kernel's own TFLOP/s (2·nA·nB·dim flops per launch) beside the
// end-to-end op times, for the benchmark (cmd/cudabench).
//
//	op "topk":     topk_kernelN with every threshold +Inf (the GEMM tile and
//	               the compare epilogue; no candidate is written)
//	op "centroid": centroid_kernelN, L2 bias, argmax epilogue with atomics
func (e *Backend) KernelSeconds(op string, nA, nB, dim, reps int) (float64, error) {
	if nA < 1 || nB < 1 || dim < 1 || reps < 1 {
		return 0, fmt.Errorf("kernels/cuda: KernelSeconds: nA %d nB %d dim %d reps %d", nA, nB, dim, reps)
	}
	if op != "topk" && op != "centroid" {
		return 0, fmt.Errorf("kernels/cuda: KernelSeconds: op %q (want topk or centroid)", op)
	}
	done, err := e.begin()
	if err != nil {
		return 0, err
	}
	defer done()
	A, B := kernels.RandomUnit(1, nA, dim, true, e.threads), kernels.RandomUnit(2, nB, dim, true, e.threads)
	l := e.layoutOf(dim, A, B)
	ad, err := e.upload(A, l.forRole(0), false, "A")
	if err != nil {
		return 0, err
	}
	defer e.dev.free(ad)
	bd, err := e.upload(B, l.forRole(1), false, "B")
	if err != nil {
		return 0, err
	}
	defer e.dev.free(bd)
	a := simArgs{A: ad, B: bd, NA: int64(nA), NB: int64(nB), LD: int64(l.ld)}
	var bufs []dptr
	defer func() {
		for _, p := range bufs {
			e.dev.free(p)
		}
	}()
	buf := func(bytes int) (dptr, error) {
		p, err := e.dev.alloc(bytes)
		if err == nil {
			bufs = append(bufs, p)
		}
		return p, err
	}
	if op == "topk" {
		if a.Thr, err = buf(4 * nA); err != nil {
			return 0, err
		}
		if a.Count, err = buf(4 * nA); err != nil {
			return 0, err
		}
		if a.Keys, err = buf(8 * nA); err != nil {
			return 0, err
		}
		a.Cap = 1
		if err := e.dev.memsetD32(a.Thr, math.Float32bits(float32(math.Inf(1))), nA, e.compute); err != nil {
			return 0, err
		}
		if err := e.dev.memsetD32(a.Count, 0, nA, e.compute); err != nil {
			return 0, err
		}
	} else {
		if a.Bias, err = buf(4 * nB); err != nil {
			return 0, err
		}
		if a.Best, err = buf(8 * nA); err != nil {
			return 0, err
		}
		if err := e.dev.memsetD32(a.Bias, math.Float32bits(-0.5), nB, e.compute); err != nil {
			return 0, err
		}
		if err := e.dev.memsetD32(a.Best, 0, 2*nA, e.compute); err != nil {
			return 0, err
		}
	}
	v := e.version(l)
	_, tb := tiles(v)
	if ceilDiv(nB, tb) > e.tun.maxGridY {
		return 0, fmt.Errorf("kernels/cuda: KernelSeconds: nB %d is more than one launch (%d rows)", nB, e.tun.maxGridY*tb)
	}
	name := kernelName(op, v, l)
	launch := func() error {
		return e.launchSim(name, v, &a)
	}
	if err := launch(); err != nil { // warm-up
		return 0, err
	}
	if err := e.dev.sync(e.compute); err != nil {
		return 0, err
	}
	t0 := time.Now()
	for r := 0; r < reps; r++ {
		if err := launch(); err != nil {
			return 0, err
		}
	}
	if err := e.dev.sync(e.compute); err != nil {
		return 0, err
	}
	return time.Since(t0).Seconds() / float64(reps), nil
}
