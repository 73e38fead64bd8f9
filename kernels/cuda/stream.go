package cuda

import (
	"fmt"

	"hpcrun/kernels"
)

// NewTopKStream implements kernels.TopKStreamer: one topkSession (ops.go)
// for all the queries, kept on the device until Release. Its slots are
// allocated here, so the next stream sees the memory taken; the queries
// are uploaded at the first Add (the first block's dtype picks the layout
// and the exact filter, as TopK's base does). An error wrapping
// kernels.ErrNoRoom when the queries' state would not fit at once (TopK
// would cut them into query blocks, each streaming the whole base).
func (e *Backend) NewTopKStream(q kernels.Matrix, opt kernels.TopKOptions) (kernels.TopKStream, error) {
	if err := checkMatrix(q, "queries"); err != nil {
		return nil, err
	}
	if opt.K < 1 {
		return nil, fmt.Errorf("kernels: TopK: k=%d < 1", opt.K)
	}
	if err := checkFinite(q, "queries", e.threads); err != nil {
		return nil, err
	}
	st := &topkStream{e: e, q: q, opt: opt}
	if q.Rows == 0 {
		return st, nil
	}
	done, err := e.begin()
	if err != nil {
		return nil, err
	}
	defer done()
	if err := e.topkRoom(q, opt); err != nil {
		return nil, err
	}
	if st.s, err = e.newTopkSlots(q.Rows, opt.K); err != nil {
		return nil, err
	}
	return st, nil
}

// topkRoom: an error wrapping kernels.ErrNoRoom unless one query block
// holds every query of q, whatever the base's dtype (float32 rows and the
// exact filter's copy counted).
func (e *Backend) topkRoom(q kernels.Matrix, opt kernels.TopKOptions) error {
	_, slots := e.topkSlots(opt.K)
	qb, err := e.topkQueries(q.Rows, topkPerQuery(opt.K, slots, layoutOf(q.Dim, kernels.Matrix{}), true))
	if err != nil {
		return err
	}
	if qb < q.Rows {
		return fmt.Errorf("%w: the top-k state of %d queries (k=%d) needs %d query blocks on %s",
			kernels.ErrNoRoom, q.Rows, opt.K, ceilDiv(q.Rows, qb), e.Name())
	}
	return nil
}

type topkStream struct {
	e   *Backend
	q   kernels.Matrix
	opt kernels.TopKOptions
	s   *topkSession // the slots from NewTopKStream on (queries bound at the first block); nil: no queries, or released
	f16 bool         // the first block's dtype, every block's
}

func (st *topkStream) Add(b kernels.Matrix) error {
	e, q := st.e, st.q
	if err := checkPair(q, b, "queries", "base"); err != nil {
		return err
	}
	if q.Rows == 0 || b.Rows == 0 {
		return checkFinite(b, "base", e.threads)
	}
	done, err := e.begin()
	if err != nil {
		return err
	}
	defer done()
	if st.s == nil {
		return fmt.Errorf("kernels/cuda: TopK stream used after Release")
	}
	if st.s.qd == 0 {
		// the first block: its dtype picks the layout (and the exact filter)
		t, _, err := e.planTopK(q, b, st.opt)
		if err != nil {
			return err
		}
		if err := st.s.bind(q, 0, t); err != nil {
			return err
		}
		st.f16 = b.F16 != nil
	} else if f16 := b.F16 != nil; f16 != st.f16 {
		return fmt.Errorf("kernels/cuda: TopK stream: a %s base block after %s ones (one dtype per stream)", dtypeName(f16), dtypeName(st.f16))
	}
	return st.s.add(b)
}

func (st *topkStream) Flush() (kernels.TopKResult, error) {
	res := newTopKResult(st.q.Rows, st.opt)
	if st.q.Rows == 0 {
		return res, nil
	}
	if st.s == nil {
		return kernels.TopKResult{}, fmt.Errorf("kernels/cuda: TopK stream used after Release")
	}
	if st.s.qd == 0 {
		return res, nil // nothing added yet
	}
	done, err := st.e.begin()
	if err != nil {
		return kernels.TopKResult{}, err
	}
	defer done()
	if err := st.s.flush(res, 0); err != nil {
		return kernels.TopKResult{}, err
	}
	return res, nil
}

func (st *topkStream) Release() {
	if st.s == nil {
		return
	}
	if done, err := st.e.begin(); err == nil {
		st.s.free()
		done()
	}
	st.s = nil
}

func dtypeName(f16 bool) string {
	if f16 {
		return "float16"
	}
	return "float32"
}
