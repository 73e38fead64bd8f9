package kernels

import (
	"errors"
	"fmt"
)

// Backend is the similarity engine contract. CPU (this package) and later a
// CUDA backend implement it; kernels/kerneltest holds the conformance suites
// every implementation must pass. All ops read row-major float32 or float16
// matrices of equal Dim (any Dim >= 0, any Rows >= 0), accumulate in float32,
// never materialise the full similarity matrix, break ties by the smaller
// index, and return an error wrapping ErrNonFinite when an input (including
// thresholds) holds NaN or ±Inf.
type Backend interface {
	Name() string

	// TopK returns, for every query row, the opt.K best similarities q·b
	// over the base rows (largest, or smallest with opt.Smallest), best
	// first, with base indices offset by opt.BaseOffset. Rows with fewer
	// than K base rows are padded with index -1 and value -Inf (+Inf when
	// Smallest). Results of base chunks merge exactly with MergeTopK.
	TopK(q, b Matrix, opt TopKOptions) (TopKResult, error)

	// MaxArg returns, for every base row, max over queries of q·b and the
	// query reaching it (Val -Inf, Idx -1 when there are no queries).
	MaxArg(q, b Matrix) (ArgMax, error)

	// ShiftedMax returns, for every base row, max over queries of
	// (q·b - thr[q]) and the query reaching it: the exact prune rule.
	// len(thr) must equal q.Rows.
	ShiftedMax(q, b Matrix, thr []float32) (ArgMax, error)

	// NearestCentroid assigns every point x to its nearest centroid:
	// Metric L2 maximises x·c - ‖c‖²/2 (squared distance = ‖x‖² - 2·Val),
	// Cosine maximises x·c/‖c‖. When acc is non-nil it also adds each point
	// to acc.Sums[assign] (fixed point, see FixedShift) and acc.Counts.
	NearestCentroid(x, c Matrix, metric Metric, acc *Accum) (ArgMax, error)

	// PrefixMax returns, for every row i of the ordered set x, max over
	// j < i of x_i·x_j and the j reaching it (Val -Inf, Idx -1 for i = 0).
	PrefixMax(x Matrix) (ArgMax, error)
}

// Keeper is implemented by a backend that can hold points in its own memory
// between calls (kernels/cuda: device memory), so that repeated
// NearestCentroid calls on the same points — k-means' iterations — read,
// check, convert and copy them once.
type Keeper interface {
	// Keep copies x (checked as any input: ErrNonFinite) for NearestCentroid
	// against float32 centroids; an error wrapping ErrNoRoom when it would
	// not fit, and the caller goes on passing the points each time.
	Keep(x Matrix) (Kept, error)
}

// Kept is a set of points a Keeper holds.
type Kept interface {
	Rows() int
	// NearestCentroid is Backend.NearestCentroid on the kept points: the
	// same results, bit for bit.
	NearestCentroid(c Matrix, metric Metric, acc *Accum) (ArgMax, error)
	// Release frees the points; the Kept must not be used afterwards.
	Release()
}

// ErrNoRoom is wrapped by Keeper.Keep when the points do not fit, and by
// TopKStreamer.NewTopKStream when the queries' state does not.
var ErrNoRoom = errors.New("kernels: no room in the backend's memory")

// TopKStreamer is implemented by a backend that can keep a top-k search —
// its queries, thresholds and candidates — in its own memory while the
// base arrives block by block (kernels/cuda: on the device), so that a scan
// over many blocks uploads the queries once, carries every query's
// threshold from block to block, and copies back and decodes results only
// when flushed. NewTopKStream (this package) falls back to TopK per block.
type TopKStreamer interface {
	// NewTopKStream starts a stream of the queries q (checked as TopK's):
	// an error wrapping ErrNoRoom when their state would not fit at once.
	NewTopKStream(q Matrix, opt TopKOptions) (TopKStream, error)
}

// TopKStream is the exact top-k of fixed queries over base rows added in
// blocks. Its results merge with MergeTopK, or any exact merge ordering by
// value, then index: MergeTopK over every Flush (indices shifted by the rows
// added before each) equals TopK over all the rows added, bit for bit.
type TopKStream interface {
	// Add searches the rows of b (same Dim as the queries; one dtype for
	// every block of a stream). They are numbered on from the rows added
	// since the last Flush: the first such row is opt.BaseOffset.
	Add(b Matrix) error
	// Flush returns, best first, the entries of the rows added since the
	// last Flush that may still belong to the top-k of all rows added since
	// the stream began — every entry that does is there; the rest of a row
	// is padding (index -1) — and forgets those rows: numbering restarts.
	Flush() (TopKResult, error)
	// Release frees the stream's memory; the stream must not be used after
	// (a second Release does nothing).
	Release()
}

// NewTopKStream returns be's own stream (native) when be is a TopKStreamer
// with room for q, else a stream that runs be.TopK on each block and merges
// on the host — which a caller that flushes after every block never pays
// for, and gains nothing by flushing seldom.
func NewTopKStream(be Backend, q Matrix, opt TopKOptions) (s TopKStream, native bool, err error) {
	if ts, ok := be.(TopKStreamer); ok {
		s, err = ts.NewTopKStream(q, opt)
		if err == nil || !errors.Is(err, ErrNoRoom) {
			return s, err == nil, err
		}
	}
	if err := q.Check("queries"); err != nil {
		return nil, false, err
	}
	if opt.K < 1 {
		return nil, false, fmt.Errorf("kernels: TopK: k=%d < 1", opt.K)
	}
	return &hostTopKStream{be: be, q: q, opt: opt}, false, nil
}

// hostTopKStream is NewTopKStream's fallback: TopK per block, merged.
type hostTopKStream struct {
	be    Backend
	q     Matrix
	opt   TopKOptions
	n     int64 // rows added since the last Flush
	acc   TopKResult
	added bool
}

func (h *hostTopKStream) Add(b Matrix) error {
	opt := h.opt
	opt.BaseOffset += h.n
	r, err := h.be.TopK(h.q, b, opt)
	if err != nil {
		return err
	}
	if h.added {
		if r, err = MergeTopK(h.opt.K, h.acc, r); err != nil {
			return err
		}
	}
	h.acc, h.added = r, true
	h.n += int64(b.Rows)
	return nil
}

func (h *hostTopKStream) Flush() (TopKResult, error) {
	r := h.acc
	if !h.added {
		var err error
		if r, err = h.be.TopK(h.q, Matrix{Dim: h.q.Dim, F32: []float32{}}, h.opt); err != nil {
			return TopKResult{}, err
		}
	}
	h.acc, h.added, h.n = TopKResult{}, false, 0
	return r, nil
}

func (h *hostTopKStream) Release() { h.acc, h.added = TopKResult{}, false }

// TopKOptions selects K, the direction and the global index offset.
type TopKOptions struct {
	K          int   // >= 1
	Smallest   bool  // k smallest instead of k largest
	BaseOffset int64 // added to base indices (global id of base row 0)
}

// TopKResult holds NQ rows of K (value, base index) pairs, best first.
type TopKResult struct {
	NQ, K    int
	Smallest bool
	Val      []float32 // NQ*K
	Idx      []int64   // NQ*K; -1 marks padding
}

// Row returns the values and indices of query row i.
func (r TopKResult) Row(i int) ([]float32, []int64) {
	return r.Val[i*r.K : (i+1)*r.K], r.Idx[i*r.K : (i+1)*r.K]
}

// ArgMax is a per-row maximum and the index reaching it.
type ArgMax struct {
	Val []float32
	Idx []int32
}

// Metric selects the NearestCentroid score.
type Metric int

const (
	L2     Metric = iota // argmax x·c - ‖c‖²/2, i.e. nearest in Euclidean distance
	Cosine               // argmax x·c/‖c‖
)

// Accum holds k-means partial sums: Sums[c*Dim+k] is the fixed-point sum
// (see FixedShift) of coordinate k over the points assigned to centroid c,
// Counts[c] their number. Partials from any split add exactly with Add.
type Accum struct {
	K, Dim int
	Sums   []int64
	Counts []int64
}

// NewAccum returns zeroed sums for k centroids of dimension dim.
func NewAccum(k, dim int) *Accum {
	return &Accum{K: k, Dim: dim, Sums: make([]int64, k*dim), Counts: make([]int64, k)}
}

// Add adds the partial sums o into a (exact, order-independent).
func (a *Accum) Add(o *Accum) {
	for i, v := range o.Sums {
		a.Sums[i] += v
	}
	for i, v := range o.Counts {
		a.Counts[i] += v
	}
}

// Means writes the mean of every non-empty cluster into dst (K*Dim floats,
// rounded once from the exact sum) and returns how many clusters were empty;
// rows of empty clusters are left untouched.
func (a *Accum) Means(dst []float32) (empty int) {
	for c := 0; c < a.K; c++ {
		n := a.Counts[c]
		if n == 0 {
			empty++
			continue
		}
		for k := 0; k < a.Dim; k++ {
			dst[c*a.Dim+k] = float32(FromFixed(a.Sums[c*a.Dim+k]) / float64(n))
		}
	}
	return empty
}
