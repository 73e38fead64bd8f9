package kernels

// SetSmallBlocks shrinks the driver's tunables so that small test inputs
// cross every block boundary (several B blocks, A super-blocks, reservoir
// shrinks); it returns a function restoring the defaults.
func SetSmallBlocks() (restore func()) {
	mc, nc, ap, ts, sl, cs := mcBlock, ncBlock, aPackBytes, topkStateBytes, topkSlack, centroidSuperRows
	mcBlock, ncBlock, aPackBytes, topkStateBytes, topkSlack, centroidSuperRows = 2*mr, 2*nr, 1, 1, 1, 1
	return func() {
		mcBlock, ncBlock, aPackBytes, topkStateBytes, topkSlack, centroidSuperRows = mc, nc, ap, ts, sl, cs
	}
}
