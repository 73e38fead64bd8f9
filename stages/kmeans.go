package stages

// kmeans: distributed k-means over kmeans.dataset, the clustering step of
// SemDeDup that the paper uses to deduplicate LAION-400M.
//
// Rows. Rank r reads the shards ds.Partition(size)[r], a contiguous run of
// global rows; every row's assignment lives on the rank that reads it.
//
// Init (as the paper): a seeded sample of k rows of the whole dataset (a
// lazy Fisher-Yates shuffle of [0, n) drawn from job.seed, so it does not
// depend on the number of ranks). A centre whose cosine similarity to an
// earlier centre exceeds init_dup_threshold (PrefixMax over the normalised
// centres) is replaced by the next row of the shuffle; this repeats until
// no pair exceeds it. The sampled rows are read by the ranks owning them
// and shared with Allgatherv (k rows, never the data).
//
// Iteration t, given centres C(t-1):
//
//	A(t)   = nearest centroid of every row (Backend.NearestCentroid, L2 as
//	         the paper or cosine), with the per-cluster fixed-point sums and
//	         counts of kernels.Accum
//	sums   → Allreduce (int64: exact, so any number of ranks gives the same
//	         bits), with the number of changed assignments
//	C(t)   = the mean of each cluster; an EMPTY cluster keeps its centre
//	ratio  = changed / n (iteration 1 counts every row as changed)
//	stop when ratio < change_lower_bound, nothing changed, or t = max_iter.
//
// The outputs are C(t) and A(t) (A(t) holds each row's nearest centre among
// C(t-1); C(t) is the mean of A(t)).
//
// Kept points. When the backend is a kernels.Keeper (the CUDA backend), the
// first assignment pass hands each block it reads to Keep, and while every
// block of the rank fits (in device memory) the later passes assign the
// kept blocks instead of reading, checking, converting and copying the
// shards again; the results are the same bits (kerneltest checks Kept).
// The first block that does not fit releases them all and the rank streams
// its shards every pass, as without a Keeper.
//
// Checkpoint. After every iteration rank 0 writes kmeans/checkpoint/:
// iter_<t>.npy (float32 [2, k, d]: C(t-1) and C(t)) and then state.json
// (the commit point, naming t). A restarted job reads it, recomputes A(t)
// from C(t-1) (one assignment pass, no sums) and goes on with iteration
// t+1, so its outputs are those of an uninterrupted run, bit for bit.
//
// Outputs: kmeans/centroids.npy, ids.npy and assignments.npy (global row
// order; every rank writes its rows in place), state.json, and done.json
// last (the hash of the parameters and input files: a rerun with nothing
// changed skips).

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"time"

	"hpcrun/collective"
	"hpcrun/dataset"
	"hpcrun/kernels"
)

func init() { registry["kmeans"] = runKMeans }

// kmInitMaxRounds bounds the init's replacement rounds (each round replaces
// every centre too similar to an earlier one).
const kmInitMaxRounds = 1000

// kmeansTestHook, when set, runs on every rank after the assignment pass of
// each iteration and before its allreduce (tests kill a rank there).
var kmeansTestHook func(rank, iter int)

// kmState is kmeans/state.json, and the body of the checkpoint. Everything
// but Run is the same for any number of ranks.
type kmState struct {
	Iterations   int       `json:"iterations"`
	ChangeRatio  []float64 `json:"change_ratio"`
	Empty        []int     `json:"empty_clusters"` // per iteration; they keep their centre
	Seed         int64     `json:"seed"`
	K            int       `json:"k"`
	Dim          int       `json:"dim"`
	Points       int64     `json:"points"`
	Metric       string    `json:"metric"`
	Converged    bool      `json:"converged"`
	InitRounds   int       `json:"init_rounds"`
	InitReplaced int       `json:"init_replaced"`
	Run          kmRunInfo `json:"run"`
}

// kmRunInfo is what differs from run to run: timings and ranks.
type kmRunInfo struct {
	Ranks          int       `json:"ranks"`
	InitSeconds    float64   `json:"init_seconds"`
	SecondsPerIter []float64 `json:"seconds_per_iter"`
	ResumedFrom    int       `json:"resumed_from,omitempty"`
}

// kmCheckpoint is kmeans/checkpoint/state.json.
type kmCheckpoint struct {
	Hash     string  `json:"hash"`
	Finished bool    `json:"finished"` // the loop has ended; only outputs remain
	State    kmState `json:"state"`
}

type kmRun struct {
	env       *Env
	ds        *dataset.Dataset
	rows      rankRows
	k, d      int
	n         int64
	metric    kernels.Metric
	blockRows int
	dir       string
	open      map[int]*dataset.Matrix // shards opened by fetchRows
	ids       [][]int64               // ids of this rank's shards (rows.shards order)
	kept      []kmKept                // every block of this rank, kept by the backend (nil: stream)
	noKeep    bool                    // a block did not fit: stream every pass
}

// kmKept is one block of this rank's rows held by a kernels.Keeper.
type kmKept struct {
	row0 int
	pts  kernels.Kept
}

// release frees the kept blocks.
func (km *kmRun) release() {
	for _, b := range km.kept {
		b.pts.Release()
	}
	km.kept = nil
}

func runKMeans(ctx context.Context, env *Env) (*Result, error) {
	cfg, kc := env.Cfg, env.Cfg.KMeans
	ds, err := OpenDataset(cfg, kc.Dataset)
	if err != nil {
		return nil, fmt.Errorf("kmeans.dataset: %w", err)
	}
	fp, err := filesFingerprint(datasetFiles(ds)...)
	if err != nil {
		return nil, err
	}
	hash := paramHash(struct {
		Dataset        string
		K, MaxIter     int
		Bound, InitDup float64
		Metric         string
		Seed           int64
		Read           dataset.Options
		Files          []string
		Numerics       string `json:",omitempty"`
	}{kc.Dataset, kc.K, kc.MaxIter, kc.ChangeLowerBound, kc.InitDupThreshold, kc.Metric, cfg.Job.Seed, ds.Opts, fp, numerics(env)})
	dir := filepath.Join(cfg.Job.Workdir, "kmeans")
	skip, err := agree(ctx, env.Comm, func() bool { return upToDate(filepath.Join(dir, "done.json"), hash) })
	if err != nil {
		return nil, err
	}
	if skip {
		return &Result{Items: ds.Rows, Skipped: true}, nil
	}
	if int64(kc.K) > ds.Rows {
		return nil, fmt.Errorf("kmeans.k = %d exceeds the %d rows of dataset %s", kc.K, ds.Rows, ds.Name)
	}
	km := &kmRun{env: env, ds: ds, rows: partitionRows(ds, env.Size(), env.Rank()), k: kc.K, d: ds.Dim, n: ds.Rows,
		blockRows: cfg.Runtime.BlockRows, dir: dir, open: map[int]*dataset.Matrix{}}
	defer km.release()
	if kc.Metric == "cosine" {
		km.metric = kernels.Cosine
	}
	for _, s := range km.rows.shards {
		v, err := ds.IDs(s)
		if err != nil {
			return nil, fmt.Errorf("rank %d: %w", env.Rank(), err)
		}
		km.ids = append(km.ids, v)
	}
	if err := checkIDsAcrossShards(ctx, env, ds, km.rows.shards, km.ids); err != nil {
		return nil, err
	}
	st, prev, cur, assign, finished, err := km.start(ctx, hash)
	if err != nil {
		return nil, err
	}
	for !finished {
		if prev, cur, assign, finished, err = km.iterate(ctx, &st, cur, assign); err != nil {
			return nil, err
		}
		if env.Rank() == 0 && kc.CheckpointEveryIter {
			if err := km.checkpoint(hash, finished, &st, prev, cur); err != nil {
				return nil, err
			}
		}
	}
	if err := km.writeOutputs(ctx, &st, cur, assign); err != nil {
		return nil, err
	}
	if env.Rank() == 0 {
		if err := writeDoneMark(filepath.Join(dir, "done.json"), hash,
			[]string{"centroids.npy", "ids.npy", "assignments.npy", "state.json"}); err != nil {
			return nil, err
		}
		os.RemoveAll(filepath.Join(dir, "checkpoint"))
	}
	if err := env.Comm.Barrier(ctx); err != nil {
		return nil, err
	}
	return &Result{Items: km.n, Extra: map[string]any{"iterations": st.Iterations, "converged": st.Converged, "k": km.k}}, nil
}

// start returns the state to go on from: a checkpoint of this very run
// (rank 0 reads it and broadcasts it), or a fresh init.
func (km *kmRun) start(ctx context.Context, hash string) (st kmState, prev, cur []float32, assign []int32, finished bool, err error) {
	env := km.env
	var ckJSON, ckCentres []byte
	if env.Rank() == 0 && env.Cfg.KMeans.CheckpointEveryIter {
		ckJSON, ckCentres = km.loadCheckpoint(hash)
	}
	if ckJSON, err = env.Comm.Bcast(ctx, 0, ckJSON); err != nil {
		return
	}
	if ckCentres, err = env.Comm.Bcast(ctx, 0, ckCentres); err != nil {
		return
	}
	if len(ckJSON) > 0 {
		var ck kmCheckpoint
		if err = json.Unmarshal(ckJSON, &ck); err != nil {
			return
		}
		both, cerr := collective.FromBytes[float32](ckCentres)
		if cerr != nil || len(both) != 2*km.k*km.d {
			err = fmt.Errorf("kmeans checkpoint: centres hold %d bytes, want 2x%dx%d float32", len(ckCentres), km.k, km.d)
			return
		}
		st, finished = ck.State, ck.Finished
		st.Run.Ranks = env.Size()
		st.Run.ResumedFrom = st.Iterations
		prev, cur = both[:km.k*km.d], both[km.k*km.d:]
		if env.Rank() == 0 {
			env.Log.Info("kmeans resumes from checkpoint", "iteration", st.Iterations, "finished", finished)
		}
		// A(t) from C(t-1): the assignments of the checkpointed iteration.
		assign = make([]int32, km.rows.n())
		err = km.assign(prev, nil, assign)
		return
	}
	kc := env.Cfg.KMeans
	st = kmState{Seed: env.Cfg.Job.Seed, K: km.k, Dim: km.d, Points: km.n, Metric: kc.Metric,
		ChangeRatio: []float64{}, Empty: []int{}, Run: kmRunInfo{Ranks: env.Size(), SecondsPerIter: []float64{}}}
	t0 := time.Now()
	cur, st.InitRounds, st.InitReplaced, err = kmInit(env.Backend, func(rows []int64) ([]float32, error) {
		return km.fetchRows(ctx, rows)
	}, km.n, km.k, km.d, kc.InitDupThreshold, env.Cfg.Job.Seed)
	for _, m := range km.open {
		m.Close()
	}
	if err != nil {
		return
	}
	st.Run.InitSeconds = time.Since(t0).Seconds()
	if env.Rank() == 0 {
		env.Log.Info("kmeans init", "k", km.k, "points", km.n, "rounds", st.InitRounds, "replaced", st.InitReplaced,
			"seconds", fmt.Sprintf("%.2f", st.Run.InitSeconds))
	}
	assign = make([]int32, km.rows.n())
	for i := range assign {
		assign[i] = -1
	}
	return
}

// iterate runs one iteration from centres cur and assignments prevA; it
// returns the centres it assigned with, the new centres and assignments,
// and whether the loop is over.
func (km *kmRun) iterate(ctx context.Context, st *kmState, cur []float32, prevA []int32) (used, next []float32, assign []int32, finished bool, err error) {
	env, kc := km.env, km.env.Cfg.KMeans
	t0 := time.Now()
	iter := st.Iterations + 1
	acc := kernels.NewAccum(km.k, km.d)
	assign = make([]int32, len(prevA))
	if err = km.assign(cur, acc, assign); err != nil {
		return
	}
	if kmeansTestHook != nil {
		kmeansTestHook(env.Rank(), iter)
	}
	var changed int64
	for i, a := range assign {
		if a != prevA[i] {
			changed++
		}
	}
	// one allreduce: sums, counts, changed
	buf := make([]int64, 0, len(acc.Sums)+len(acc.Counts)+1)
	buf = append(append(append(buf, acc.Sums...), acc.Counts...), changed)
	if err = collective.Allreduce(ctx, env.Comm, buf, collective.Sum); err != nil {
		return
	}
	kd := km.k * km.d
	copy(acc.Sums, buf[:kd])
	copy(acc.Counts, buf[kd:kd+km.k])
	changed = buf[kd+km.k]
	next = kmUpdate(cur, acc)
	empty := 0
	for _, c := range acc.Counts {
		if c == 0 {
			empty++
		}
	}
	ratio := float64(changed) / float64(km.n)
	st.Iterations = iter
	st.ChangeRatio = append(st.ChangeRatio, ratio)
	st.Empty = append(st.Empty, empty)
	st.Converged = ratio < kc.ChangeLowerBound || changed == 0
	finished = st.Converged || iter >= kc.MaxIter
	sec := time.Since(t0).Seconds()
	st.Run.SecondsPerIter = append(st.Run.SecondsPerIter, sec)
	if env.Rank() == 0 {
		var sum float64
		for _, s := range st.Run.SecondsPerIter {
			sum += s
		}
		eta := time.Duration(sum / float64(len(st.Run.SecondsPerIter)) * float64(kc.MaxIter-iter) * float64(time.Second))
		if finished {
			eta = 0
		}
		env.Log.Info("kmeans iteration", "iter", iter, "of", kc.MaxIter, "change_ratio", fmt.Sprintf("%.3g", ratio),
			"empty", empty, "seconds", fmt.Sprintf("%.2f", sec), "eta_at_most", eta.Round(time.Second).String())
	}
	return cur, next, assign, finished, nil
}

// kmUpdate returns the new centres: the exact mean of every non-empty
// cluster (fixed-point sums rounded once), and the old centre of an empty
// one.
func kmUpdate(old []float32, acc *kernels.Accum) []float32 {
	next := slices.Clone(old)
	acc.Means(next)
	return next
}

// assign writes the nearest centre of each of this rank's rows into out,
// adding the rows to acc when it is not nil.
func (km *kmRun) assign(centres []float32, acc *kernels.Accum, out []int32) error {
	c := kernels.F32Matrix(centres, km.k, km.d)
	rowsErr := func(row0, n int, err error) error {
		return fmt.Errorf("rows %d..%d: %w", km.rows.lo+int64(row0), km.rows.lo+int64(row0+n)-1, err)
	}
	if km.kept != nil {
		for _, b := range km.kept {
			res, err := b.pts.NearestCentroid(c, km.metric, acc)
			if err != nil {
				return fmt.Errorf("rank %d: %w", km.env.Rank(), rowsErr(b.row0, b.pts.Rows(), err))
			}
			copy(out[b.row0:], res.Idx)
		}
		return nil
	}
	keeper, keep := km.env.Backend.(kernels.Keeper)
	keep = keep && !km.noKeep
	var kept []kmKept
	err := km.rows.forEachBlock(km.ds, km.blockRows, km.env.Threads, func(row0 int, b dataset.Block) error {
		m := blockMatrix(b)
		if keep {
			pts, err := keeper.Keep(m)
			switch {
			case err == nil:
				kept = append(kept, kmKept{row0, pts})
				res, err := pts.NearestCentroid(c, km.metric, acc)
				if err != nil {
					return rowsErr(row0, b.Rows, err)
				}
				copy(out[row0:], res.Idx)
				return nil
			case errors.Is(err, kernels.ErrNoRoom):
				km.env.Log.Info("kmeans: points do not fit on the device; streaming them every iteration",
					"rank", km.env.Rank(), "kept_rows", row0, "reason", err.Error())
				for _, k := range kept {
					k.pts.Release()
				}
				kept, keep, km.noKeep = nil, false, true
			default:
				return rowsErr(row0, b.Rows, err)
			}
		}
		res, err := km.env.Backend.NearestCentroid(m, c, km.metric, acc)
		if err != nil {
			return rowsErr(row0, b.Rows, err)
		}
		copy(out[row0:], res.Idx)
		return nil
	})
	if err != nil {
		for _, k := range kept {
			k.pts.Release()
		}
		return fmt.Errorf("rank %d: %w", km.env.Rank(), err)
	}
	if keep && len(kept) > 0 {
		km.kept = kept
		if km.env.Rank() == 0 {
			km.env.Log.Info("kmeans: points kept on the device for the next iterations", "blocks", len(kept))
		}
	}
	return nil
}

// blockMatrix views a dataset block as a kernels matrix (no copy).
func blockMatrix(b dataset.Block) kernels.Matrix {
	if b.F16 != nil {
		return kernels.F16Matrix(b.F16, b.Rows, b.Dim)
	}
	return kernels.F32Matrix(b.F32, b.Rows, b.Dim)
}

// ---------------------------------------------------------------- init

// kmSampler draws rows of [0, n) without replacement, in the order of a
// Fisher-Yates shuffle seeded by seed, remembering only the swaps made so
// far (memory O(draws), not O(n)).
type kmSampler struct {
	n, next int64
	swap    map[int64]int64
	rng     *rand.Rand
}

func newKMSampler(n int64, seed int64) *kmSampler {
	return &kmSampler{n: n, swap: map[int64]int64{}, rng: rand.New(rand.NewPCG(uint64(seed), 0x6b6d65616e73))}
}

func (s *kmSampler) at(i int64) int64 {
	if v, ok := s.swap[i]; ok {
		return v
	}
	return i
}

// draw returns the next row, or false when all n have been drawn.
func (s *kmSampler) draw() (int64, bool) {
	if s.next >= s.n {
		return 0, false
	}
	j := s.next + int64(s.rng.Uint64N(uint64(s.n-s.next)))
	v := s.at(j)
	s.swap[j] = s.at(s.next)
	delete(s.swap, s.next)
	s.next++
	return v, true
}

// kmInit picks the k initial centres: rows drawn by a seeded sampler, where
// every centre whose cosine similarity to an earlier centre exceeds thr is
// replaced by the next draw, round after round, until none is. fetch
// returns the float32 rows asked for (on every rank: it is collective). It
// returns the centres (k x d), the number of rounds and of replacements.
func kmInit(be kernels.Backend, fetch func(rows []int64) ([]float32, error), n int64, k, d int, thr float64, seed int64) ([]float32, int, int, error) {
	s := newKMSampler(n, seed)
	rows := make([]int64, k)
	for i := range rows {
		rows[i], _ = s.draw()
	}
	centres, err := fetch(rows)
	if err != nil {
		return nil, 0, 0, err
	}
	unit := make([]float32, k*d)
	replaced := 0
	for round := 1; ; round++ {
		for i := 0; i < k; i++ {
			src, dst := centres[i*d:(i+1)*d], unit[i*d:(i+1)*d]
			var ss float64
			for _, v := range src {
				ss += float64(v) * float64(v)
			}
			inv := 0.0
			if ss > 0 {
				inv = 1 / math.Sqrt(ss)
			}
			for j, v := range src {
				dst[j] = float32(float64(v) * inv)
			}
		}
		pm, err := be.PrefixMax(kernels.F32Matrix(unit, k, d))
		if err != nil {
			return nil, 0, 0, fmt.Errorf("kmeans init: %w", err)
		}
		var bad []int
		for i, v := range pm.Val {
			if pm.Idx[i] >= 0 && float64(v) > thr {
				bad = append(bad, i)
			}
		}
		if len(bad) == 0 {
			return centres, round, replaced, nil
		}
		if round == kmInitMaxRounds {
			return nil, 0, 0, fmt.Errorf("kmeans init: after %d rounds %d of %d centres still have cosine similarity > init_dup_threshold %g to another; lower kmeans.k or raise kmeans.init_dup_threshold", round, len(bad), k, thr)
		}
		fresh := make([]int64, len(bad))
		for j := range bad {
			r, ok := s.draw()
			if !ok {
				return nil, 0, 0, fmt.Errorf("kmeans init: all %d rows drawn and %d of %d centres still have cosine similarity > init_dup_threshold %g to another; lower kmeans.k or raise kmeans.init_dup_threshold", n, len(bad), k, thr)
			}
			fresh[j] = r
		}
		got, err := fetch(fresh)
		if err != nil {
			return nil, 0, 0, err
		}
		for j, i := range bad {
			copy(centres[i*d:(i+1)*d], got[j*d:(j+1)*d])
		}
		replaced += len(bad)
	}
}

// fetchRows returns the given global rows, in order, as float32 on every
// rank: each rank reads those it owns and all are shared by Allgatherv.
func (km *kmRun) fetchRows(ctx context.Context, rows []int64) ([]float32, error) {
	d := km.d
	rec := 8 + 4*d // int64 position + row
	var mine []byte
	for i, g := range rows {
		if g < km.rows.lo || g >= km.rows.hi {
			continue
		}
		row, err := km.readRow(g)
		if err != nil {
			return nil, fmt.Errorf("rank %d: kmeans init: %w", km.env.Rank(), err)
		}
		mine = append(mine, collective.AsBytes([]int64{int64(i)})...)
		mine = append(mine, collective.AsBytes(row)...)
	}
	parts, err := km.env.Comm.Allgatherv(ctx, mine)
	if err != nil {
		return nil, err
	}
	out := make([]float32, len(rows)*d)
	have := make([]bool, len(rows))
	for r, p := range parts {
		if len(p)%rec != 0 {
			return nil, fmt.Errorf("kmeans init: rank %d sent %d bytes, not whole rows", r, len(p))
		}
		for o := 0; o < len(p); o += rec {
			pos, _ := collective.FromBytes[int64](p[o : o+8])
			v, _ := collective.FromBytes[float32](p[o+8 : o+rec])
			if pos[0] < 0 || int(pos[0]) >= len(rows) {
				return nil, fmt.Errorf("kmeans init: rank %d sent row position %d", r, pos[0])
			}
			copy(out[int(pos[0])*d:], v)
			have[pos[0]] = true
		}
	}
	for i, ok := range have {
		if !ok {
			return nil, fmt.Errorf("kmeans init: no rank holds global row %d", rows[i])
		}
	}
	return out, nil
}

// readRow reads one of this rank's rows as float32, checked and (when the
// dataset says so) normalised as the block reader does.
func (km *kmRun) readRow(g int64) ([]float32, error) {
	sh := km.rows.shards
	i := sort.Search(len(sh), func(i int) bool {
		s := km.ds.Shards[sh[i]]
		return s.Offset+int64(s.Rows) > g
	})
	s := sh[i]
	m := km.open[s]
	if m == nil {
		var err error
		if m, err = km.ds.OpenShard(s); err != nil {
			return nil, err
		}
		km.open[s] = m
	}
	local := int(g - km.ds.Shards[s].Offset)
	raw := make([]byte, km.d*m.DType.Size())
	if err := m.ReadRaw(local, 1, raw); err != nil {
		return nil, err
	}
	row := make([]float32, km.d)
	if m.DType == dataset.Float16 {
		h := make([]uint16, km.d)
		copy(sliceBytes(h), raw)
		dataset.F16ToF32(row, h)
	} else {
		v, _ := collective.FromBytes[float32](raw)
		copy(row, v)
	}
	var ss float64
	for j, v := range row {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			return nil, fmt.Errorf("%s: row %d, column %d is %v", m.Path, local, j, v)
		}
		ss += float64(v) * float64(v)
	}
	if norm := math.Sqrt(ss); km.ds.Opts.Normalize && norm > 0 && math.Abs(norm-1) > dataset.NormTolerance {
		for j := range row {
			row[j] = float32(float64(row[j]) / norm)
		}
	}
	return row, nil
}

// ---------------------------------------------------------------- checkpoint

func (km *kmRun) checkpoint(hash string, finished bool, st *kmState, prev, cur []float32) error {
	dir := filepath.Join(km.dir, "checkpoint")
	name := fmt.Sprintf("iter_%d.npy", st.Iterations)
	both := append(slices.Clone(prev), cur...)
	if err := dataset.WriteFloat32(filepath.Join(dir, name), both, 2, km.k, km.d); err != nil {
		return err
	}
	b, err := json.MarshalIndent(struct {
		kmCheckpoint
		Centres string `json:"centres"`
	}{kmCheckpoint{Hash: hash, Finished: finished, State: *st}, name}, "", "  ")
	if err != nil {
		return err
	}
	if err := dataset.WriteFileAtomic(filepath.Join(dir, "state.json"), append(b, '\n')); err != nil {
		return err
	}
	// older iterations are no longer needed once state.json names this one
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if n := e.Name(); n != name && n != "state.json" && filepath.Ext(n) == ".npy" {
			os.Remove(filepath.Join(dir, n))
		}
	}
	return nil
}

// loadCheckpoint returns the checkpoint's JSON and centres bytes when it
// belongs to this run (same hash) and is whole; nil otherwise.
func (km *kmRun) loadCheckpoint(hash string) ([]byte, []byte) {
	dir := filepath.Join(km.dir, "checkpoint")
	b, err := os.ReadFile(filepath.Join(dir, "state.json"))
	if err != nil {
		return nil, nil
	}
	var ck struct {
		kmCheckpoint
		Centres string `json:"centres"`
	}
	if json.Unmarshal(b, &ck) != nil || ck.Hash != hash || ck.State.Iterations < 1 {
		km.env.Log.Warn("kmeans checkpoint is from other parameters or inputs; starting over", "dir", dir)
		return nil, nil
	}
	c, shape, err := dataset.ReadFloat32(filepath.Join(dir, ck.Centres))
	if err != nil || !slices.Equal(shape, []int{2, km.k, km.d}) {
		km.env.Log.Warn("kmeans checkpoint centres unreadable; starting over", "err", err)
		return nil, nil
	}
	j, _ := json.Marshal(ck.kmCheckpoint)
	return j, collective.AsBytes(c)
}

// ---------------------------------------------------------------- outputs

func (km *kmRun) writeOutputs(ctx context.Context, st *kmState, centres []float32, assign []int32) error {
	env := km.env
	ids := slices.Concat(km.ids...)
	n := int(km.n)
	if err := writeNPYGlobal(ctx, env.Comm, filepath.Join(km.dir, "ids.npy"), dataset.Int64, []int{n}, km.rows.lo, 8, collective.AsBytes(ids)); err != nil {
		return err
	}
	if err := writeNPYGlobal(ctx, env.Comm, filepath.Join(km.dir, "assignments.npy"), dataset.Int32, []int{n}, km.rows.lo, 4, collective.AsBytes(assign)); err != nil {
		return err
	}
	if env.Rank() != 0 {
		return nil
	}
	if err := dataset.WriteFloat32(filepath.Join(km.dir, "centroids.npy"), centres, km.k, km.d); err != nil {
		return err
	}
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	return dataset.WriteFileAtomic(filepath.Join(km.dir, "state.json"), append(b, '\n'))
}
