package stages

// Stage "prune": remove from the base every point closer to some eval image
// than that image's nearest reference (ImageNet-train) neighbour; then pick
// subsets of what is kept.
//
// The whole story, in the order the code runs:
//
//  1. Thresholds: thr[q] = the top-1 similarity of eval image q to
//     prune.reference (the sims machinery with k = 1: exact, over all
//     reference rows, sharded across ranks; or column 0 of the sims stage's
//     top-k when it ran on the same inputs, listed in report.json under
//     thresholds_from_sims). Rank 0 broadcasts them.
//  2. One scan of the base (after dedup, when dedup ran on it), with sinks
//     (what the sims stage already computed from the same inputs, each eval
//     image's nearest base point and every base point's maxsim, is read
//     instead; report.json lists those eval sets under from_sims):
//     - the exact rule: Backend.ShiftedMax(eval, block, thr) gives, per base
//     row, max_q (sim(q, row) - thr[q]); the row is pruned for that eval set
//     when it is > 0, i.e. when its similarity to some eval image exceeds
//     that image's threshold. Every base row is tested: nothing is missed;
//     - near/far (when near_far_sizes is set): Backend.MaxArg per eval set,
//     and this rank's n most / least similar rows among those kept;
//     - every eval image's nearest base point (top-1, for the report).
//  3. The paper's approximate rule (top-`prune.candidates` of every eval
//     image, then the threshold), computed exactly from the pruned rows
//     alone (see approxRule for why that is the same set, at a fraction of
//     a k = 20,000 search over the whole base); rank 0 counts how many
//     exactly-pruned ids it misses.
//  4. Each rank writes its sorted id lists (pruned and kept, per eval set
//     and combined) as part files; rank 0 merges them into the outputs.
//  5. Rank 0 writes the subsets (random ones from job.seed; near/far from
//     the merged per-rank candidates), prune/<eval>/thresholds.npy, the
//     report entry and done.json.
//
// The reference is the obvious numpy: S = E·Bᵀ, thr = max(E·Rᵀ), pruned =
// any(S > thr[:, None]) (scripts/sims_ref.py; the tests compare).

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"

	"hpcrun/collective"
	"hpcrun/configs"
	"hpcrun/dataset"
	"hpcrun/kernels"
)

func init() { registry["prune"] = barrierAfter("prune", runPrune) }

// pruneStampOf is what decides whether prune's outputs are up to date.
type pruneStampOf struct {
	Prune  configs.Prune `json:"prune"`
	Seed   int64         `json:"seed"`
	Base   string        `json:"base"`
	Ref    string        `json:"ref"`
	Evals  []string      `json:"evals"`
	Format int           `json:"format"`
	// Numerics: how the backend rounds, when it does (numerics)
	Numerics string `json:"numerics,omitempty"`
}

func runPrune(ctx context.Context, env *Env) (*Result, error) {
	cfg := env.Cfg
	p := cfg.Prune
	dir := filepath.Join(cfg.Job.Workdir, "prune")
	xfer := filepath.Join(dir, ".xfer")
	evals, err := loadEvalSets(cfg, p.Eval)
	if err != nil {
		return nil, err
	}
	scan, err := openBaseScan(env, p.Base, scanBlockRows(env, 1))
	if err != nil {
		return nil, fmt.Errorf("base %s: %w", p.Base, err)
	}
	if err := checkIDsAcrossShards(ctx, env, scan.d, scan.shards, scan.ids); err != nil {
		return nil, fmt.Errorf("base %s: %w", p.Base, err)
	}
	ref, err := openBaseScan(env, p.Reference, scanBlockRows(env, 1))
	if err != nil {
		return nil, fmt.Errorf("reference %s: %w", p.Reference, err)
	}
	st := pruneStampOf{Prune: *p, Seed: cfg.Job.Seed, Base: scan.stamp, Ref: ref.stamp, Format: 1, Numerics: numerics(env)}
	for _, ev := range evals {
		if ev.Name == "combined" || ev.Name == "subsets" {
			return nil, fmt.Errorf("eval set %q: the name is taken by prune/%s/", ev.Name, ev.Name)
		}
		for _, d := range []int{scan.d.Dim, ref.d.Dim} {
			if ev.Q.Dim != d {
				return nil, fmt.Errorf("eval %s has dim %d but base %s has dim %d and reference %s dim %d",
					ev.Name, ev.Q.Dim, p.Base, scan.d.Dim, p.Reference, ref.d.Dim)
			}
		}
		st.Evals = append(st.Evals, ev.Stamp())
	}
	stamp := hashJSON(st)
	var extras []map[string]any
	outs := []string{pruneList("combined", "prune"), pruneList("combined", "keep")}
	for _, ev := range evals {
		outs = append(outs, pruneList(ev.Name, "prune"), pruneList(ev.Name, "keep"))
	}
	for _, n := range p.RandomSizes {
		outs = append(outs, filepath.Join("subsets", fmt.Sprintf("random_%d.npy", n)))
	}
	todo, err := agreeTodo(ctx, env, 1, func(int) (bool, map[string]any) { return readStamp(dir, stamp, outs...) }, &extras)
	if err != nil {
		return nil, err
	}
	nBase, err := scan.totalRows(ctx)
	if err != nil {
		return nil, err
	}
	if len(todo) == 0 {
		return &Result{Items: nBase, Extra: extras[0], Skipped: true}, nil
	}
	if env.Rank() == 0 {
		os.Remove(filepath.Join(dir, "done.json")) // outputs half replaced are never "up to date"
	}

	// 1. thresholds: every eval image's top-1 similarity to the reference
	// (read from the sims stage's top-k when it ran on the same inputs)
	var none []map[string]any
	freshRef, err := agreeTodo(ctx, env, len(evals), func(e int) (bool, map[string]any) {
		return simsPairReusable(cfg, ref, evals[e]), nil
	}, &none)
	if err != nil {
		return nil, err
	}
	thr := make([][]float32, len(evals))
	var sets []topkSet
	for e, ev := range evals {
		if slices.Contains(freshRef, e) {
			sets = append(sets, topkSet{Q: ev.Q, Tag: "ref-" + ev.Name, owner: e})
		} else if env.Rank() == 0 {
			if thr[e], err = readColumn0(filepath.Join(simsPairDir(cfg, "sims", p.Reference, ev.Name), "topk_sims.npy"), ev.Q.Rows); err != nil {
				return nil, err
			}
		}
	}
	err = runTopK(ctx, env, ref, sets, 1, nil, xfer, func(set, _ int, s *topkState) error {
		e := sets[set].owner
		thr[e] = append(thr[e], s.val...)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("reference %s: %w", p.Reference, err)
	}
	if err := bcastThresholds(ctx, env, evals, thr, p.Reference); err != nil {
		return nil, err
	}

	// What the sims stage computed for (base, eval) from the same inputs is
	// read, not computed again: each eval image's nearest base point, and
	// every base point's maxsim (near/far).
	fresh, err := agreeTodo(ctx, env, len(evals), func(e int) (bool, map[string]any) {
		return simsPairReusable(cfg, scan, evals[e]), nil
	}, &none)
	if err != nil {
		return nil, err
	}

	// 2. one scan of the base: exact rule, near/far candidates, nearest base
	// neighbour of every eval image (top-1)
	nmax := 0
	for _, n := range p.NearFarSizes {
		nmax = max(nmax, n)
	}
	ps := newPruneSink(env, evals, thr, nmax)
	nnBase := make([][]float32, len(evals))
	sets = sets[:0]
	for e, ev := range evals {
		if slices.Contains(fresh, e) {
			sets = append(sets, topkSet{Q: ev.Q, Tag: "nn-" + ev.Name, owner: e})
			continue
		}
		if env.Rank() == 0 {
			if nnBase[e], err = readColumn0(filepath.Join(simsPairDir(cfg, "sims", p.Base, ev.Name), "topk_sims.npy"), ev.Q.Rows); err != nil {
				return nil, err
			}
		}
		if nmax > 0 {
			if err := ps.reuseMaxsim(ctx, e, scan, simsPairDir(cfg, "maxsim", p.Base, ev.Name)); err != nil {
				return nil, err
			}
		}
	}
	err = runTopK(ctx, env, scan, sets, 1, []scanSink{ps}, xfer, func(set, _ int, s *topkState) error {
		e := sets[set].owner
		nnBase[e] = append(nnBase[e], s.val...)
		return nil
	})
	ps.closeMaxsim()
	if err != nil {
		return nil, fmt.Errorf("base %s: %w", p.Base, err)
	}
	// the paper's approximate rule, from the pruned rows alone
	k := p.Candidates
	approx := make([][]int64, len(evals))
	over := make([]int, len(evals))
	for e := range evals {
		if approx[e], over[e], err = ps.approxRule(ctx, e, k, xfer); err != nil {
			return nil, err
		}
	}
	ps.pF16, ps.pF32 = nil, nil

	// 3. id lists: per-rank parts, merged on rank 0
	counts, err := ps.writeLists(ctx, dir)
	if err != nil {
		return nil, err
	}
	for e := range evals {
		for _, s := range []*topkState{ps.near[e], ps.far[e]} {
			if s == nil {
				continue
			}
			if err := reduceTopK(ctx, env, xfer, fmt.Sprintf("nearfar-%d-%v", e, s.smallest), s); err != nil {
				return nil, err
			}
		}
	}
	if env.Rank() != 0 {
		return &Result{Items: nBase}, nil
	}

	// 4. rank 0: approximate rule vs exact, subsets, report
	extra := map[string]any{"base": p.Base, "reference": p.Reference, "base_rows": nBase, "candidates": k}
	var reused, reusedRef []string
	for e, ev := range evals {
		if !slices.Contains(fresh, e) {
			reused = append(reused, ev.Name)
		}
		if !slices.Contains(freshRef, e) {
			reusedRef = append(reusedRef, ev.Name)
		}
	}
	extra["from_sims"] = nonNilStrings(reused)
	extra["thresholds_from_sims"] = nonNilStrings(reusedRef)
	approxAll := []int64{}
	for e, ev := range evals {
		exact, err := dataset.ReadInt64(filepath.Join(dir, ev.Name, "prune_ids.npy"))
		if err != nil {
			return nil, err
		}
		a := uniqueSorted(approx[e])
		approxAll = append(approxAll, a...)
		if err := dataset.WriteInt64(filepath.Join(dir, ev.Name, "approx_prune_ids.npy"), a); err != nil {
			return nil, err
		}
		if err := dataset.WriteFloat32(filepath.Join(dir, ev.Name, "thresholds.npy"), thr[e]); err != nil {
			return nil, err
		}
		extra[ev.Name] = map[string]any{
			"queries":                 ev.Q.Rows,
			"pruned":                  counts[pruneList(ev.Name, "prune")],
			"kept":                    counts[pruneList(ev.Name, "keep")],
			"approx_pruned":           len(a),
			"approx_missed":           len(diffSorted(exact, a)),
			"approx_not_exact":        len(diffSorted(a, exact)),
			"queries_over_candidates": over[e],
			"nn_base_quantiles":       quantileMap(nnBase[e]),
			"nn_reference_quantiles":  quantileMap(thr[e]),
		}
	}
	exact, err := dataset.ReadInt64(filepath.Join(dir, "combined", "prune_ids.npy"))
	if err != nil {
		return nil, err
	}
	approxAll = uniqueSorted(approxAll)
	extra["combined"] = map[string]any{
		"pruned":        counts[pruneList("combined", "prune")],
		"kept":          counts[pruneList("combined", "keep")],
		"approx_pruned": len(approxAll),
		"approx_missed": len(diffSorted(exact, approxAll)),
	}
	subsets, err := writeSubsets(cfg, dir, counts[pruneList("combined", "keep")], evals, ps)
	if err != nil {
		return nil, err
	}
	extra["subsets"] = subsets
	if err := writeStamp(dir, stageStamp{Stamp: stamp, Extra: extra}); err != nil {
		return nil, err
	}
	return &Result{Items: nBase, Extra: extra}, nil
}

// Stamp is the eval set's input file stamp.
func (ev *simsEval) Stamp() string { return ev.Name + "=" + ev.stamp }

// bcastThresholds sends rank 0's thresholds to every rank; an eval image
// with no reference neighbour (empty reference) is an error.
func bcastThresholds(ctx context.Context, env *Env, evals []*simsEval, thr [][]float32, ref string) error {
	var all []float32
	if env.Rank() == 0 {
		for e, t := range thr {
			for _, v := range t {
				if math.IsInf(float64(v), 0) {
					return fmt.Errorf("reference %s has no rows: no threshold for eval %s", ref, evals[e].Name)
				}
			}
			all = append(all, t...)
		}
	}
	if env.Size() > 1 {
		b, err := env.Comm.Bcast(ctx, 0, collective.AsBytes(all))
		if err != nil {
			return err
		}
		if all, err = collective.FromBytes[float32](b); err != nil {
			return err
		}
	}
	off := 0
	for e, ev := range evals {
		thr[e] = all[off : off+ev.Q.Rows]
		off += ev.Q.Rows
	}
	return nil
}

// ---------------------------------------------------------------- the exact rule, per rank

// pruneSink applies the exact rule to every scanned base row and keeps this
// rank's near/far candidates.
type pruneSink struct {
	env       *Env
	evals     []*simsEval
	thr       [][]float32
	pruned    [][]int64 // per eval set: ids pruned (this rank)
	kept      []int64   // every id scanned (after dedup)
	near, far []*topkState
	comb      []bool
	cand      []int
	// the pruned rows (for any eval set): the approximate rule's input
	pRows, pIDs []int64
	pF16        []uint16
	pF32        []float32
	// per eval set: the sims stage's maxsim, read instead of computed (nil: compute)
	maxsim []*maxsimReader
}

func newPruneSink(env *Env, evals []*simsEval, thr [][]float32, nmax int) *pruneSink {
	p := &pruneSink{env: env, evals: evals, thr: thr, pruned: make([][]int64, len(evals)),
		near: make([]*topkState, len(evals)), far: make([]*topkState, len(evals)), maxsim: make([]*maxsimReader, len(evals))}
	if nmax > 0 {
		for e := range evals {
			p.near[e] = newTopkState(1, nmax, false)
			p.far[e] = newTopkState(1, nmax, true)
		}
	}
	return p
}

func (p *pruneSink) add(b scanBlock) error {
	be := p.env.Backend
	n := b.M.Rows
	p.comb = slices.Grow(p.comb[:0], n)[:n]
	clear(p.comb)
	for e, ev := range p.evals {
		sm, err := be.ShiftedMax(ev.Q, b.M, p.thr[e])
		if err != nil {
			return err
		}
		for j, v := range sm.Val {
			if v > 0 {
				p.pruned[e] = append(p.pruned[e], b.IDs[j])
				p.comb[j] = true
			}
		}
	}
	p.kept = append(p.kept, b.IDs...)
	d := b.M.Dim
	for j, pruned := range p.comb {
		if !pruned {
			continue
		}
		p.pRows, p.pIDs = append(p.pRows, b.Rows[j]), append(p.pIDs, b.IDs[j])
		if b.M.F16 != nil {
			p.pF16 = append(p.pF16, b.M.F16[j*d:(j+1)*d]...)
		} else {
			p.pF32 = append(p.pF32, b.M.F32[j*d:(j+1)*d]...)
		}
	}
	if len(p.evals) == 0 || p.near[0] == nil {
		return nil
	}
	for e, ev := range p.evals {
		var am kernels.ArgMax
		var err error
		if p.maxsim[e] != nil {
			am.Val, err = p.maxsim[e].next(b.IDs)
		} else {
			am, err = be.MaxArg(ev.Q, b.M)
		}
		if err != nil {
			return err
		}
		p.cand = p.cand[:0]
		for j := 0; j < n; j++ {
			if !p.comb[j] {
				p.cand = append(p.cand, j)
			}
		}
		for _, st := range []*topkState{p.near[e], p.far[e]} {
			slices.SortFunc(p.cand, func(x, y int) int {
				if topkBefore(st.smallest, am.Val[x], b.Rows[x], am.Val[y], b.Rows[y]) {
					return -1
				}
				return 1
			})
			m := min(len(p.cand), st.k)
			vals, rows, ids := make([]float32, m), make([]int64, m), make([]int64, m)
			for i, j := range p.cand[:m] {
				vals[i], rows[i], ids[i] = am.Val[j], b.Rows[j], b.IDs[j]
			}
			st.mergeRow(0, vals, rows, ids, st.scratch())
		}
	}
	return nil
}

// reuseMaxsim makes near/far for eval set e read this rank's rows of the
// sims stage's maxsim (dir/sims.npy, ids.npy: every kept base row in scan
// order, so this rank's rows start after the rows of the ranks before it).
func (p *pruneSink) reuseMaxsim(ctx context.Context, e int, scan *baseScan, dir string) error {
	rows := []int64{scan.rows}
	all, err := p.env.Comm.Allgatherv(ctx, collective.AsBytes(rows))
	if err != nil {
		return err
	}
	var off int64
	for r := 0; r < p.env.Rank(); r++ {
		v, err := collective.FromBytes[int64](all[r])
		if err != nil || len(v) != 1 {
			return fmt.Errorf("row count of rank %d: %d bytes", r, len(all[r]))
		}
		off += v[0]
	}
	m := &maxsimReader{}
	for i, name := range []string{"sims.npy", "ids.npy"} {
		path := filepath.Join(dir, name)
		f, h, err := dataset.OpenNPY(path)
		if err != nil {
			m.close()
			return err
		}
		m.files[i], m.names[i] = f, path
		want := [2]dataset.DType{dataset.Float32, dataset.Int64}[i]
		if len(h.Shape) != 1 || h.DType != want || int64(h.Shape[0]) < off+scan.rows {
			m.close()
			return fmt.Errorf("%s: %s %v, want %s of at least %d rows (rerun sims)", path, h.DType.Name(), h.Shape, want.Name(), off+scan.rows)
		}
		if _, err := f.Seek(h.DataOffset+off*int64(want.Size()), io.SeekStart); err != nil {
			m.close()
			return err
		}
		m.r[i] = bufio.NewReaderSize(f, 1<<20)
	}
	p.maxsim[e] = m
	return nil
}

func (p *pruneSink) closeMaxsim() {
	for _, m := range p.maxsim {
		if m != nil {
			m.close()
		}
	}
}

// maxsimReader streams a rank's rows of maxsim/<base>/<eval>/{sims,ids}.npy.
type maxsimReader struct {
	files [2]*os.File
	names [2]string
	r     [2]*bufio.Reader
	vals  []float32
	ids   []int64
}

// next returns the maxsim of the next len(ids) rows, checking that they
// are these ids.
func (m *maxsimReader) next(ids []int64) ([]float32, error) {
	n := len(ids)
	m.vals = slices.Grow(m.vals[:0], n)[:n]
	m.ids = slices.Grow(m.ids[:0], n)[:n]
	if _, err := io.ReadFull(m.r[0], collective.AsBytes(m.vals)); err != nil {
		return nil, fmt.Errorf("%s: %w", m.names[0], err)
	}
	if _, err := io.ReadFull(m.r[1], collective.AsBytes(m.ids)); err != nil {
		return nil, fmt.Errorf("%s: %w", m.names[1], err)
	}
	if !slices.Equal(m.ids, ids) {
		return nil, fmt.Errorf("%s does not list the base rows this scan sees (rerun sims)", m.names[1])
	}
	return m.vals, nil
}

func (m *maxsimReader) close() {
	for _, f := range m.files {
		if f != nil {
			f.Close()
		}
	}
}

// readColumn0 reads column 0 of a float32 [rows, k] .npy.
func readColumn0(path string, rows int) ([]float32, error) {
	f, h, err := dataset.OpenNPY(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if len(h.Shape) != 2 || h.DType != dataset.Float32 || h.Shape[0] != rows {
		return nil, fmt.Errorf("%s: %s %v, want float32 [%d, k] (rerun sims)", path, h.DType.Name(), h.Shape, rows)
	}
	out := make([]float32, rows)
	var b [4]byte
	for i := range out {
		if _, err := f.ReadAt(b[:], h.DataOffset+int64(i*h.Shape[1])*4); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		out[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[:]))
	}
	return out, nil
}

// approxRule is the paper's approximate rule for eval set e: an id is
// pruned when it is among the top-cand base points of some eval image q and
// its similarity exceeds thr[q]. It is computed from the exactly pruned rows
// alone, with the same result as a top-cand search over the whole base:
// every point ranked above an exceeding point x in q's list also exceeds
// thr[q], hence is pruned, so x's rank in q's list is its rank among q's
// exceeding pruned points (value, then base row, as TopK orders them), and
// the similarities are the same dot products the scan computed. The result
// (on rank 0) is sorted; over counts the eval images with more than cand
// exceeding points, the only ones whose list can miss any.
//
// Each rank finds, for every eval image, its exceeding pruned rows in TopK
// order (at most cand+1 of them: a rank's share of the global top cand is
// within its own top cand); rank 0 merges.
func (p *pruneSink) approxRule(ctx context.Context, e, cand int, dir string) (ids []int64, over int, err error) {
	env := p.env
	ev, thr := p.evals[e], p.thr[e]
	nq, n, d := ev.Q.Rows, len(p.pRows), ev.Q.Dim
	P := kernels.F32Matrix(p.pF32, n, d)
	if p.pF16 != nil {
		P = kernels.F16Matrix(p.pF16, n, d)
	}
	type hit struct {
		v       float32
		row, id int64
	}
	// TopK of every eval image over this rank's pruned rows, with K grown
	// (x8) only for the images whose K best all exceed the threshold; K
	// stops at cand+1 (enough to tell "more than cand").
	lists := make([][]hit, nq)
	pending := make([]int, nq)
	for i := range pending {
		pending[i] = i
	}
	for K := min(n, 64, cand+1); n > 0 && len(pending) > 0; K = min(n, 8*K, cand+1) {
		qc := max(1, (64<<20)/(12*K)) // a TopK result of at most 64 MiB
		var next []int
		for c0 := 0; c0 < len(pending); c0 += qc {
			chunk := pending[c0:min(len(pending), c0+qc)]
			qx := make([]float32, 0, len(chunk)*d)
			for _, q := range chunk {
				qx = append(qx, ev.Q.F32[q*d:(q+1)*d]...)
			}
			r, err := env.Backend.TopK(kernels.F32Matrix(qx, len(chunk), d), P, kernels.TopKOptions{K: K})
			if err != nil {
				return nil, 0, err
			}
			for i, q := range chunk {
				vals, idx := r.Row(i)
				var h []hit
				for j, x := range idx {
					if x < 0 || !(vals[j] > thr[q]) {
						break
					}
					h = append(h, hit{vals[j], p.pRows[x], p.pIDs[x]})
				}
				if len(h) == K && K < min(n, cand+1) {
					next = append(next, q) // saturated: look further
					continue
				}
				lists[q] = h
			}
		}
		pending = next
	}
	// per eval image: its exceeding count, then its best cand hits
	sortHits := func(h []hit) {
		slices.SortFunc(h, func(a, b hit) int {
			if topkBefore(false, a.v, a.row, b.v, b.row) {
				return -1
			}
			return 1
		})
	}
	var buf []byte
	for _, h := range lists {
		buf = binary.LittleEndian.AppendUint64(buf, uint64(len(h))) // at most cand+1
		h = h[:min(len(h), cand)]
		buf = binary.LittleEndian.AppendUint64(buf, uint64(len(h)))
		for _, x := range h {
			buf = binary.LittleEndian.AppendUint32(buf, math.Float32bits(x.v))
			buf = binary.LittleEndian.AppendUint64(buf, uint64(x.row))
			buf = binary.LittleEndian.AppendUint64(buf, uint64(x.id))
		}
	}
	parts, err := gatherBytes(ctx, env, dir, "approx-"+ev.Name, buf)
	if err != nil || env.Rank() != 0 {
		return nil, 0, err
	}
	counts := make([]uint64, nq)
	lists = make([][]hit, nq)
	for r, b := range parts {
		for q := 0; q < nq; q++ {
			if len(b) < 16 {
				return nil, 0, fmt.Errorf("approximate rule: short data from rank %d", r)
			}
			counts[q] += binary.LittleEndian.Uint64(b)
			m := int(binary.LittleEndian.Uint64(b[8:]))
			b = b[16:]
			if len(b) < 20*m {
				return nil, 0, fmt.Errorf("approximate rule: short data from rank %d", r)
			}
			for j := 0; j < m; j++ {
				lists[q] = append(lists[q], hit{math.Float32frombits(binary.LittleEndian.Uint32(b)),
					int64(binary.LittleEndian.Uint64(b[4:])), int64(binary.LittleEndian.Uint64(b[12:]))})
				b = b[20:]
			}
		}
	}
	ids = []int64{}
	for q, h := range lists {
		if counts[q] > uint64(cand) {
			over++
		}
		sortHits(h)
		for _, x := range h[:min(len(h), cand)] {
			ids = append(ids, x.id)
		}
	}
	return uniqueSorted(ids), over, nil
}

// pruneList names an output list: prune/<set>/<kind>_ids.npy.
func pruneList(set, kind string) string { return filepath.Join(set, kind+"_ids.npy") }

// writeLists writes this rank's sorted lists as part files, and rank 0
// merges every list's parts into its output; it returns (on rank 0) the
// number of ids in each output.
func (p *pruneSink) writeLists(ctx context.Context, dir string) (map[string]int64, error) {
	env := p.env
	parts := filepath.Join(dir, ".parts")
	if err := os.MkdirAll(parts, 0o755); err != nil {
		return nil, err
	}
	kept := uniqueSorted(p.kept)
	p.kept = nil
	var names []string
	var comb []int64
	lists := map[string][]int64{}
	for e, ev := range p.evals {
		pr := uniqueSorted(p.pruned[e])
		comb = append(comb, pr...)
		lists[pruneList(ev.Name, "prune")] = pr
		names = append(names, pruneList(ev.Name, "prune"), pruneList(ev.Name, "keep"))
	}
	comb = uniqueSorted(comb)
	lists[pruneList("combined", "prune")] = comb
	names = append(names, pruneList("combined", "prune"), pruneList("combined", "keep"))
	partPath := func(name string, r int) string {
		return filepath.Join(parts, fmt.Sprintf("%s.r%d", filepath.ToSlash(name), r))
	}
	for _, name := range names {
		ids, ok := lists[name]
		if !ok { // keep = kept minus the matching prune list
			ids = diffSorted(kept, lists[filepath.Join(filepath.Dir(name), "prune_ids.npy")])
		}
		pp := partPath(name, env.Rank())
		if err := os.MkdirAll(filepath.Dir(pp), 0o755); err != nil {
			return nil, err
		}
		if err := os.WriteFile(pp, collective.AsBytes(ids), 0o644); err != nil {
			return nil, err
		}
	}
	if err := env.Comm.Barrier(ctx); err != nil {
		return nil, err
	}
	if env.Rank() != 0 {
		return nil, nil
	}
	counts := map[string]int64{}
	for _, name := range names {
		var ps []string
		for r := 0; r < env.Size(); r++ {
			ps = append(ps, partPath(name, r))
		}
		n, err := mergeSortedParts(filepath.Join(dir, name), ps)
		if err != nil {
			return nil, err
		}
		counts[name] = n
	}
	os.RemoveAll(parts)
	return counts, nil
}

// mergeSortedParts merges sorted raw int64 part files into one sorted .npy
// without duplicates, streaming, and returns its length.
func mergeSortedParts(path string, parts []string) (int64, error) {
	var srcs []*int64Stream
	for _, p := range parts {
		f, err := os.Open(p)
		if err != nil {
			return 0, err
		}
		defer f.Close()
		srcs = append(srcs, &int64Stream{r: f, name: p})
	}
	return mergeStreams(path, srcs, true)
}

// ---------------------------------------------------------------- subsets

// writeSubsets writes prune/subsets/: random_<n> (n ids drawn without
// replacement from the combined keep list, seeded from job.seed and n) and
// near_<eval>_<n> / far_<eval>_<n> (the n kept ids most / least similar to
// the eval set, ties by base row). A size above what is available takes
// everything. It returns each subset's size.
func writeSubsets(cfg *configs.Config, dir string, nKeep int64, evals []*simsEval, ps *pruneSink) (map[string]int, error) {
	p := cfg.Prune
	out := map[string]int{}
	sub := filepath.Join(dir, "subsets")
	keepPath := filepath.Join(dir, pruneList("combined", "keep"))
	for _, n := range p.RandomSizes {
		pos := randomPositions(cfg.Job.Seed, n, nKeep)
		ids, err := readPositions(keepPath, pos)
		if err != nil {
			return nil, err
		}
		name := fmt.Sprintf("random_%d", n)
		if err := dataset.WriteInt64(filepath.Join(sub, name+".npy"), ids); err != nil {
			return nil, err
		}
		out[name] = len(ids)
	}
	for e, ev := range evals {
		for _, side := range []struct {
			name string
			st   *topkState
		}{{"near", ps.near[e]}, {"far", ps.far[e]}} {
			for _, n := range p.NearFarSizes {
				var ids []int64
				for j := 0; j < min(n, side.st.k) && side.st.row[j] >= 0; j++ {
					ids = append(ids, side.st.id[j])
				}
				slices.Sort(ids)
				name := fmt.Sprintf("%s_%s_%d", side.name, ev.Name, n)
				if err := dataset.WriteInt64(filepath.Join(sub, name+".npy"), nonNil(ids)); err != nil {
					return nil, err
				}
				out[name] = len(ids)
			}
		}
	}
	return out, nil
}

func nonNilStrings(x []string) []string {
	if x == nil {
		return []string{}
	}
	return x
}

func nonNil(x []int64) []int64 {
	if x == nil {
		return []int64{}
	}
	return x
}

// randomPositions draws min(n, total) distinct positions in [0, total),
// sorted (Floyd's algorithm: O(n) memory, whatever total is), from a PCG
// seeded by (seed, n).
func randomPositions(seed int64, n int, total int64) []int64 {
	if int64(n) >= total {
		pos := make([]int64, total)
		for i := range pos {
			pos[i] = int64(i)
		}
		return pos
	}
	rng := rand.New(rand.NewPCG(uint64(seed), uint64(n)))
	seen := make(map[int64]struct{}, n)
	pos := make([]int64, 0, n)
	for j := total - int64(n); j < total; j++ {
		t := rng.Int64N(j + 1)
		if _, dup := seen[t]; dup {
			t = j
		}
		seen[t] = struct{}{}
		pos = append(pos, t)
	}
	slices.Sort(pos)
	return pos
}

// readPositions reads the elements at sorted positions of a 1-d int64 .npy,
// streaming.
func readPositions(path string, pos []int64) ([]int64, error) {
	f, h, err := dataset.OpenNPY(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if len(h.Shape) != 1 || h.DType != dataset.Int64 {
		return nil, fmt.Errorf("%s: want a 1-d int64 array", path)
	}
	r := &int64Stream{r: io.NewSectionReader(f, h.DataOffset, h.DataBytes()), name: path}
	out := make([]int64, 0, len(pos))
	var at int64 = -1
	for _, p := range pos {
		for at < p {
			ok, err := r.next()
			if err != nil {
				return nil, err
			}
			if !ok {
				return nil, fmt.Errorf("%s: position %d past the end", path, p)
			}
			at++
		}
		out = append(out, r.cur)
	}
	return out, nil
}

// ---------------------------------------------------------------- sorted id sets

// uniqueSorted sorts x in place and drops repeats.
func uniqueSorted(x []int64) []int64 {
	slices.Sort(x)
	return nonNil(slices.Compact(x))
}

// diffSorted is a minus b (both sorted, unique).
func diffSorted(a, b []int64) []int64 {
	out := []int64{}
	j := 0
	for _, v := range a {
		for j < len(b) && b[j] < v {
			j++
		}
		if j < len(b) && b[j] == v {
			continue
		}
		out = append(out, v)
	}
	return out
}
