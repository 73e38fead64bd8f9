package kernels

// Tunables of the blocked driver and the epilogues, in one place (FAISS
// style). Chosen by measurement on a 2-core Sapphire Rapids (AVX-512,
// 48 KiB L1d, 2 MiB L2 per core); see kernels_test.go benchmarks.
var (
	// mcBlock is the number of A rows (queries for TopK, base rows for
	// MaxArg/ShiftedMax, points for NearestCentroid) per task: one packed
	// A block (mcBlock x d floats) stays in L2 while a B block streams past.
	// Multiple of mr.
	mcBlock = 8 * mr

	// ncBlock is the number of B rows packed per phase; a C tile is
	// mcBlock x ncBlock floats. Multiple of nr.
	ncBlock = 16 * nr

	// aPackBytes bounds the packed A super-block (float32 copy of the A rows
	// processed against all of B before moving on).
	aPackBytes = 64 << 20

	// bPackBytes: when all of B packs into this many bytes (e.g. k-means
	// centroids) it is packed once and reused by every A super-block.
	bPackBytes = 64 << 20

	// topkStateBytes bounds the TopK candidate reservoirs of one A
	// super-block (k large => fewer queries in flight).
	topkStateBytes = 256 << 20

	// topkSlack is the minimum extra reservoir room beyond k: a reservoir
	// holds up to k + max(k, topkSlack) candidates before a selection
	// shrinks it back to k and raises the acceptance threshold.
	topkSlack = 256

	// mcAMX is the number of A rows per task in engine 2 (amx.go): a
	// multiple of both mr (exact micro-kernel panels) and 32 (AMX row
	// blocks). Engine 2's tiles are mcAMX x ncBlock.
	mcAMX = 16 * mr

	// amxMaxNorm: rows with a larger norm (or a non-finite one) are never
	// filtered by engine 2 (bf16 products could overflow).
	amxMaxNorm = 0x1p40

	// amxMinDim: below this dimension engine 2 does not pay; engine 1 runs.
	amxMinDim = 32
)
