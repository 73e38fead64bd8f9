package kernels

// SetSmallBlocks (streaming: all of B packed once, else per block) shrinks the driver's tunables so that small test inputs
// cross every block boundary (several B blocks, A super-blocks, reservoir
// shrinks); it returns a function restoring the defaults.
func SetSmallBlocks(streaming bool) (restore func()) {
	mc, nc, ap, bp, ts, sl, ma := mcBlock, ncBlock, aPackBytes, bPackBytes, topkStateBytes, topkSlack, mcAMX
	mcBlock, ncBlock, aPackBytes, topkStateBytes, topkSlack, mcAMX = 2*mr, 2*nr, 1, 1, 1, 16*mr
	if streaming {
		bPackBytes = 64 << 20
	} else {
		bPackBytes = 0
	}
	return func() {
		mcBlock, ncBlock, aPackBytes, bPackBytes, topkStateBytes, topkSlack, mcAMX = mc, nc, ap, bp, ts, sl, ma
	}
}

// WithoutAVX512 switches the AVX-512 (and AMX) paths off, as on a CPU with
// AVX2+FMA only (kern5), and reports whether that path exists here; the
// returned function restores the features.
func WithoutAVX512() (ok bool, restore func()) {
	saved := cpuFeat
	cpuFeat.avx512, cpuFeat.amx = false, false
	return cpuFeat.avx2 && cpuFeat.fma && haveAsmKernel, func() { cpuFeat = saved }
}
