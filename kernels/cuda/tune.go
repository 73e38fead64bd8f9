package cuda

// tunables of the host side, in one place (FAISS style). Every Backend
// copies defaultTunables; the tests shrink them so that every chunk, split
// and block boundary is crossed on tiny inputs.
type tunables struct {
	// chunkBytes bounds one streamed chunk of packed rows (base rows for
	// TopK/MaxArg/ShiftedMax, points for NearestCentroid, rows of x for
	// PrefixMax). Two device buffers and two page-locked staging buffers of
	// this size exist while an op runs: chunk c is computed while chunk c+1
	// is packed and copied (see stream in pack.go).
	chunkBytes int

	// topkHeadroom is the minimum number of candidate slots per query
	// beyond k; the headroom is max(topkHeadroom, topkHeadroomPerK·k) and
	// the slots k + headroom. A base range of at most headroom rows can
	// never overflow them; ranges double while the fullest query gains at
	// most a quarter of the headroom per range, and halve above a half.
	topkHeadroom     int
	topkHeadroomPerK float64

	// topkBytes bounds the device memory of one query block's candidate
	// slots; more queries than fit are processed in query blocks, each
	// streaming the whole base.
	topkBytes int

	// maxGridY is CUDA's limit on grid.y: one launch covers at most
	// maxGridY*tile B rows; larger B sets are launched in slices.
	maxGridY int

	// selectGlobalOnly makes topk_select read the candidate keys from
	// global memory even when they fit in its shared memory (the tests
	// run both paths).
	selectGlobalOnly bool

	// profile: synchronise after every kernel and time it (Backend.Profile).
	profile bool

	// residentFrac: the sets kept whole on the device (queries, centroids,
	// PrefixMax's x) may take at most this fraction of free device memory.
	residentFrac float64

	// bandCap: the exact filter's candidate slots per row (exact.go); a
	// row with more is recomputed against every B row by one of
	// bandRowBlocks blocks (its grid). A row appends about as many
	// candidates as its running best sets records over the B tiles
	// (≈ ln(tiles) + 1 in random order: 7 for 50,000 centroids) plus its
	// near ties.
	bandCap       int
	bandRowBlocks int

	// persistBlocks > 0: versions 5 and 7 launch at most this many blocks, each
	// taking several tiles with its copies running across them (common.cuh
	// v5_run), instead of one block per tile; newBackend sets it to the
	// GPU's SM count (one 193 KiB block fits per SM) unless PersistEnv=0.
	persistBlocks int

	// group: the order in which the v5 engine (versions 5 and 7) takes its
	// 128 x 256 tiles (common.cuh v5_tile): 0 A tiles fastest (the order
	// of one block per tile), g > 0 the A tiles in groups of g, each
	// group's tiles A fastest, so the blocks running at once share a few A
	// and B tiles in L2. GroupEnv overrides it. Default 8: on an H100
	// (docs/gpu/2026-11-27-h100/run3) NearestCentroid's kernel ran at 491
	// TFLOP/s with group 0 and 501-504 with groups 1 to 32 (top-k's: 592;
	// 481 with group 1, 567-618 with 2 to 32), and runs 2-3 (conformance,
	// the quickstart end to end, the paper's size) ran with 8. The order
	// changes no result: every tile's epilogue is order-free (atomic
	// maxima, candidate sets, fixed-point sums).
	group int
}

var defaultTunables = tunables{
	chunkBytes:       256 << 20,
	topkHeadroom:     4096,
	topkHeadroomPerK: 1,
	topkBytes:        4 << 30,
	maxGridY:         maxGridY,
	residentFrac:     0.5,
	bandCap:          32,
	bandRowBlocks:    1024,
	group:            8,
}
