package stages

// Stage "sims": for every eval image, its exact top-k most similar base
// points (and k least similar when worst = true); for every base point, its
// largest similarity to each eval set and which eval image reaches it.
//
// The whole story, in the order the code runs:
//
//  1. Rank 0 reads each (base, eval) pair's sims/<base>/<eval>/done.json and
//     broadcasts which pairs are out of date (a pair is up to date when its
//     stamp, a hash of k, worst and the sizes and mtimes of every input file,
//     matches); the others are skipped.
//  2. Every rank scans its shards of the base ((*Dataset).Partition), block
//     by block, skipping ids that dedup removed (when [dedup] ran on this
//     base). Every block goes to every sink of the current pass:
//     - a topk sink per chunk of eval queries: Backend.TopK on the block,
//     merged into a running exact top-k ordered by value, then global row
//     (the base's row number in shard order): a total order, so any split
//     of the base over ranks gives the same answer;
//     - a maxsim sink per eval set: Backend.MaxArg on the block, written to
//     this rank's part file (nothing proportional to the base goes through
//     the Comm).
//     q x k is cut into query chunks of at most simsStateBytes of state;
//     each chunk costs one more pass over the base, never memory
//     proportional to the base.
//  3. After a pass the partial top-k lists merge to one exact answer on
//     rank 0: through the Comm (Gatherv) when small, otherwise pairwise in a
//     tree through files. Rank 0 writes the rows; it concatenates the
//     maxsim parts in rank order (= global base order).
//  4. Rank 0 writes the pair's done.json last.
//
// The reference is the obvious loop: sort every eval image's similarities
// to every base point (scripts/sims_ref.py does it in numpy, and the tests
// compare).
//
// The pieces here (baseScan, topkState, runTopK, npyStream, stageStamp) are
// shared with prune.go and subsample.go.

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"

	"hpcrun/collective"
	"hpcrun/configs"
	"hpcrun/dataset"
	"hpcrun/kernels"
)

// ---------------------------------------------------------------- tunables

var (
	// simsStateBytes bounds the running top-k state of one pass over the
	// base on one rank (topkEntryBytes per query x k entry). A larger q x k
	// is cut into query chunks, each one more pass over the base.
	simsStateBytes int64 = 512 << 20

	// simsGatherBytes: when all ranks' partial top-k lists of a query chunk
	// together fit in this many bytes they go to rank 0 through the Comm;
	// larger ones merge pairwise in a tree through files (each rank then
	// holds at most two partials).
	simsGatherBytes int64 = 64 << 20

	// simsScanRows is the fewest base rows handed to the backend at once
	// (runtime.block_rows when larger; at least 2k). Each TopK call starts
	// from an empty candidate list, so small blocks cost more selection
	// work: 16,384 rows ran at 118 GFLOP per CPU-second, 131,072 at 160
	// (nq = 2000, k = 100, d = 512, float16, on this project's 2-core Xeon).
	// Blocks are views of the mapped shard (a copy only when dedup filters
	// rows): 128 MiB at d = 512 float16.
	simsScanRows = 131072

	// simsStreamRows replaces simsScanRows for a backend with its own top-k
	// stream (kernels.TopKStreamer: kernels/cuda). Such a backend copies a
	// block to its memory in chunks (256 MiB on the GPU), each computed
	// while the next is copied, all but the first: four chunks at d = 512
	// float16.
	simsStreamRows = 1 << 20

	// simsStreamWindow: such a backend's streams are flushed (results
	// copied back, decoded and merged on the host) every this many base
	// rows, and at the end of a pass; the pass keeps the rows' numbers and
	// ids until then (16 bytes a row: 256 MiB). Below 1<<32: a stream
	// numbers rows in 32 bits.
	simsStreamWindow = 1 << 24
)

// scanBlockRows is the block size of a scan for top-k with k on env's
// backend.
func scanBlockRows(env *Env, k int) int {
	rows := simsScanRows
	if _, ok := env.Backend.(kernels.TopKStreamer); ok {
		rows = simsStreamRows
	}
	return max(env.Cfg.Runtime.BlockRows, 2*k, rows)
}

// topkEntryBytes is the memory one query x k entry costs during a pass:
// the running state (value, row, id: 20 bytes), the block's TopK result
// (12) and the merge (20).
const topkEntryBytes = 52

// ---------------------------------------------------------------- the stage

func init() { registry["sims"] = barrierAfter("sims", runSims) }

// barrierAfter ends a stage with a barrier: rank 0 writes the merged
// outputs last, and no rank may start the next stage (which reads them)
// before they are there. Then rank 0 removes the stage's transfer folder
// (<stage>/.xfer, when empty): only now is no rank using it.
func barrierAfter(stage string, f StageFunc) StageFunc {
	return func(ctx context.Context, env *Env) (*Result, error) {
		res, err := f(ctx, env)
		if err != nil {
			return nil, err
		}
		if err := env.Comm.Barrier(ctx); err != nil {
			return nil, err
		}
		if env.Rank() == 0 {
			os.Remove(filepath.Join(env.Cfg.Job.Workdir, stage, ".xfer"))
		}
		return res, nil
	}
}

// simsPairStamp is what decides whether a (base, eval) pair is up to date.
type simsPairStamp struct {
	K      int    `json:"k"`
	Worst  bool   `json:"worst"`
	Base   string `json:"base"`
	Eval   string `json:"eval"`
	Inputs string `json:"inputs"` // base, eval and dedup file stamps
	// Numerics: how the backend rounds, when it does (numerics)
	Numerics string `json:"numerics,omitempty"`
}

func runSims(ctx context.Context, env *Env) (*Result, error) {
	cfg := env.Cfg
	sc := cfg.Sims
	evals, err := loadEvalSets(cfg, sc.Eval)
	if err != nil {
		return nil, err
	}
	res := &Result{Extra: map[string]any{}}
	skipped := true
	for _, bname := range sc.Base {
		scan, err := openBaseScan(env, bname, scanBlockRows(env, sc.K))
		if err != nil {
			return nil, fmt.Errorf("base %s: %w", bname, err)
		}
		if err := checkIDsAcrossShards(ctx, env, scan.d, scan.shards, scan.ids); err != nil {
			return nil, fmt.Errorf("base %s: %w", bname, err)
		}
		for _, ev := range evals {
			if ev.Q.Dim != scan.d.Dim {
				return nil, fmt.Errorf("eval %s has dim %d but base %s has dim %d", ev.Name, ev.Q.Dim, bname, scan.d.Dim)
			}
		}
		// 1. which pairs are out of date: rank 0 decides for everyone
		stamps := make([]string, len(evals))
		for i, ev := range evals {
			stamps[i] = hashJSON(simsPairStamp{K: sc.K, Worst: sc.Worst, Base: bname, Eval: ev.Name,
				Inputs: scan.stamp + "|" + ev.stamp, Numerics: numerics(env)})
		}
		var extras []map[string]any
		todo, err := agreeTodo(ctx, env, len(evals), func(i int) (bool, map[string]any) {
			outs := []string{"topk_sims.npy", "topk_ids.npy"}
			if sc.Worst {
				outs = append(outs, "bottomk_sims.npy", "bottomk_ids.npy")
			}
			for _, f := range maxsimNames {
				outs = append(outs, filepath.Join("..", "..", "..", "maxsim", bname, evals[i].Name, f+".npy"))
			}
			return readStamp(simsPairDir(cfg, "sims", bname, evals[i].Name), stamps[i], outs...)
		}, &extras)
		if err != nil {
			return nil, err
		}
		n, err := scan.totalRows(ctx)
		if err != nil {
			return nil, err
		}
		res.Items += n
		baseExtra := map[string]any{"rows": n}
		for i, ev := range evals {
			if !slices.Contains(todo, i) && extras[i] != nil {
				baseExtra[ev.Name] = extras[i]
			}
		}
		res.Extra[bname] = baseExtra
		if len(todo) == 0 {
			continue
		}
		skipped = false
		pe, err := simsPairs(ctx, env, scan, evals, todo, stamps)
		if err != nil {
			return nil, fmt.Errorf("base %s: %w", bname, err)
		}
		for name, e := range pe {
			baseExtra[name] = e
		}
	}
	res.Skipped = skipped
	return res, nil
}

// simsPairs runs the out-of-date pairs (base, evals[i] for i in todo) and
// returns their report entries (on rank 0).
func simsPairs(ctx context.Context, env *Env, scan *baseScan, evals []*simsEval, todo []int, stamps []string) (map[string]map[string]any, error) {
	cfg := env.Cfg
	sc := cfg.Sims
	bname := scan.d.Name
	var sets []topkSet
	type outs struct {
		vals, ids *npyStream
		first     []float32 // top-1 (or bottom-1) of every query
	}
	files := map[int]*outs{} // rank 0: per set
	var first []scanSink
	var maxsims []*maxsimSink
	abort := func() {
		for _, o := range files {
			o.vals.abort()
			o.ids.abort()
		}
		for _, m := range maxsims {
			m.abort()
		}
	}
	for _, i := range todo {
		if env.Rank() == 0 {
			// the old stamp goes first: outputs half replaced are never "up to date"
			os.Remove(filepath.Join(simsPairDir(cfg, "sims", bname, evals[i].Name), "done.json"))
		}
		ev := evals[i]
		sets = append(sets, topkSet{Q: ev.Q, Tag: ev.Name + "-top", owner: i})
		if sc.Worst {
			sets = append(sets, topkSet{Q: ev.Q, Smallest: true, Tag: ev.Name + "-bottom", owner: i})
		}
		m, err := newMaxsimSink(env, simsPairDir(cfg, "maxsim", bname, ev.Name), ev)
		if err != nil {
			abort()
			return nil, err
		}
		maxsims = append(maxsims, m)
		first = append(first, m)
	}
	open := func(set int) (*outs, error) {
		ev := evals[sets[set].owner]
		small := sets[set].Smallest
		dir := simsPairDir(cfg, "sims", bname, ev.Name)
		stem := "topk"
		if small {
			stem = "bottomk"
		}
		o := &outs{}
		var err error
		if o.vals, err = createNPYStream(filepath.Join(dir, stem+"_sims.npy"), dataset.Float32); err != nil {
			return nil, err
		}
		if o.ids, err = createNPYStream(filepath.Join(dir, stem+"_ids.npy"), dataset.Int64); err != nil {
			o.vals.abort()
			return nil, err
		}
		return o, nil
	}
	if env.Rank() == 0 {
		for s := range sets {
			o, err := open(s)
			if err != nil {
				abort()
				return nil, err
			}
			files[s] = o
		}
	}
	onChunk := func(set, q0 int, st *topkState) error {
		o := files[set]
		o.first = append(o.first, st.column0()...)
		if err := o.vals.write(collective.AsBytes(st.val)); err != nil {
			return err
		}
		return o.ids.write(collective.AsBytes(st.id))
	}
	err := runTopK(ctx, env, scan, sets, sc.K, first, filepath.Join(cfg.Job.Workdir, "sims", ".xfer"), onChunk)
	if err != nil {
		abort()
		return nil, err
	}
	for _, m := range maxsims {
		if err := m.finish(ctx); err != nil {
			abort()
			return nil, err
		}
	}
	if env.Rank() != 0 {
		return nil, nil
	}
	extra := map[string]map[string]any{}
	per := 1
	if sc.Worst {
		per = 2
	}
	for j, i := range todo {
		ev := evals[i]
		e := map[string]any{"queries": ev.Q.Rows, "k": sc.K}
		for s := j * per; s < (j+1)*per; s++ {
			o := files[s]
			if err := o.vals.close(ev.Q.Rows, sc.K); err != nil {
				abort()
				return nil, err
			}
			if err := o.ids.close(ev.Q.Rows, sc.K); err != nil {
				abort()
				return nil, err
			}
			key := "top1_quantiles"
			if sets[s].Smallest {
				key = "bottom1_quantiles"
			}
			e[key] = quantileMap(o.first)
		}
		st := stageStamp{Stamp: stamps[i], Extra: e, Inputs: simsPairInputs(scan, ev)}
		if err := writeStamp(simsPairDir(cfg, "sims", bname, ev.Name), st); err != nil {
			return nil, err
		}
		extra[ev.Name] = e
	}
	return extra, nil
}

func simsPairDir(cfg *configs.Config, stage, base, eval string) string {
	return filepath.Join(cfg.Job.Workdir, stage, base, eval)
}

// simsPairInputs stamps what a pair's outputs depend on besides k and
// worst: every input file (base, dedup keep list, eval).
func simsPairInputs(scan *baseScan, ev *simsEval) string {
	return hashJSON([]string{scan.d.Name, scan.stamp, ev.Name, ev.stamp})
}

// simsPairReusable reports whether the sims stage's outputs for (base, ev)
// are there and were made from the same inputs: then prune reads the
// nearest-neighbour similarities and maxsim instead of computing them again.
func simsPairReusable(cfg *configs.Config, scan *baseScan, ev *simsEval) bool {
	dir := simsPairDir(cfg, "sims", scan.d.Name, ev.Name)
	b, err := os.ReadFile(filepath.Join(dir, "done.json"))
	if err != nil {
		return false
	}
	var s stageStamp
	if json.Unmarshal(b, &s) != nil || s.Inputs != simsPairInputs(scan, ev) {
		return false
	}
	for _, p := range []string{filepath.Join(dir, "topk_sims.npy"), filepath.Join(cfg.Job.Workdir, "maxsim", scan.d.Name, ev.Name, "sims.npy"),
		filepath.Join(cfg.Job.Workdir, "maxsim", scan.d.Name, ev.Name, "ids.npy")} {
		if _, err := os.Stat(p); err != nil {
			return false
		}
	}
	return true
}

// ---------------------------------------------------------------- eval sets

// simsEval is a query set held whole in memory (eval sets are small).
type simsEval struct {
	Name  string
	Q     kernels.Matrix // float32 [rows, dim]
	IDs   []int64        // the dataset's ids of the rows
	stamp string         // input file stamps
}

func loadEvalSets(cfg *configs.Config, names []string) ([]*simsEval, error) {
	var out []*simsEval
	for _, n := range names {
		ev, err := loadEvalSet(cfg, n)
		if err != nil {
			return nil, err
		}
		out = append(out, ev)
	}
	return out, nil
}

func loadEvalSet(cfg *configs.Config, name string) (*simsEval, error) {
	d, err := OpenDataset(cfg, name)
	if err != nil {
		return nil, err
	}
	x, err := d.ReadAll(cfg.Runtime.BlockRows)
	if err != nil {
		return nil, fmt.Errorf("eval %s: %w", name, err)
	}
	ids, err := d.AllIDs()
	if err != nil {
		return nil, fmt.Errorf("eval %s: %w", name, err)
	}
	st, err := datasetStamp(d)
	if err != nil {
		return nil, err
	}
	return &simsEval{Name: name, Q: kernels.F32Matrix(x, int(d.Rows), d.Dim), IDs: ids, stamp: st}, nil
}

// ---------------------------------------------------------------- base scan

// scanBlock is a run of kept base rows, in global order.
type scanBlock struct {
	M    kernels.Matrix
	Rows []int64 // global row number of each row (shard offset + row)
	IDs  []int64 // the dataset's id of each row
}

// scanSink consumes every block of a pass over the base, in order.
type scanSink interface {
	add(b scanBlock) error
}

// baseScan is this rank's share of a base dataset: its shards, their ids,
// and the dedup filter when dedup ran on this base.
type baseScan struct {
	env       *Env
	d         *dataset.Dataset
	shards    []int
	ids       [][]int64 // per shard of this rank
	keep      []int64   // sorted ids kept by dedup within this rank's id range (nil: all)
	keepPath  string
	blockRows int
	stamp     string // input file stamps (dataset + dedup keep file)
	rows      int64  // rows this rank scans
	buf16     []uint16
	buf32     []float32
	rowBuf    []int64
	idBuf     []int64
}

// openBaseScan opens dataset name for scanning by this rank in blocks of
// at least blockRows rows.
func openBaseScan(env *Env, name string, blockRows int) (*baseScan, error) {
	d, err := OpenDataset(env.Cfg, name)
	if err != nil {
		return nil, err
	}
	s := &baseScan{env: env, d: d, shards: d.Partition(env.Size())[env.Rank()], blockRows: blockRows}
	if s.stamp, err = datasetStamp(d); err != nil {
		return nil, err
	}
	lo, hi := int64(math.MaxInt64), int64(math.MinInt64)
	for _, sh := range s.shards {
		ids, err := d.IDs(sh)
		if err != nil {
			return nil, err
		}
		for _, id := range ids {
			lo, hi = min(lo, id), max(hi, id)
		}
		s.ids = append(s.ids, ids)
		s.rows += int64(len(ids))
	}
	if s.keepPath, err = dedupKeepFile(env, name); err != nil {
		return nil, err
	}
	if s.keepPath != "" {
		st, err := fileStamps(s.keepPath)
		if err != nil {
			return nil, err
		}
		s.stamp += "|dedup:" + st
		if s.keep, err = readIDRange(s.keepPath, lo, hi); err != nil {
			return nil, err
		}
		s.rows = 0
		for _, ids := range s.ids {
			for _, id := range ids {
				if s.kept(id) {
					s.rows++
				}
			}
		}
	}
	return s, nil
}

// dedupKeepFile is dedup/keep_ids.npy when dedup ran on base name ([dedup]
// configured and kmeans.dataset = name), else "". A missing file is an
// error once the dedup stage exists (running on the whole base would be
// silently wrong), a warning before.
func dedupKeepFile(env *Env, name string) (string, error) {
	cfg := env.Cfg
	if cfg.Dedup == nil || cfg.KMeans == nil || cfg.KMeans.Dataset != name {
		return "", nil
	}
	p := filepath.Join(cfg.Job.Workdir, "dedup", "keep_ids.npy")
	if _, err := os.Stat(p); err == nil {
		return p, nil
	}
	if registry["dedup"] != nil {
		return "", fmt.Errorf("dataset %s is deduplicated ([dedup] is configured) but %s is missing: run the dedup stage first", name, p)
	}
	env.Log.Warn("dedup stage not built: scanning the whole base", "dataset", name, "missing", p)
	return "", nil
}

func (s *baseScan) kept(id int64) bool {
	if s.keepPath == "" {
		return true
	}
	_, ok := slices.BinarySearch(s.keep, id)
	return ok
}

// totalRows is the number of rows scanned by all ranks.
func (s *baseScan) totalRows(ctx context.Context) (int64, error) {
	n := []int64{s.rows}
	if err := collective.Allreduce(ctx, s.env.Comm, n, collective.Sum); err != nil {
		return 0, err
	}
	return n[0], nil
}

// run passes every kept block of this rank's shards to every sink.
func (s *baseScan) run(ctx context.Context, sinks ...scanSink) error {
	chk := s.d.Check()
	chk.Threads = s.env.Threads
	for si, sh := range s.shards {
		m, err := s.d.OpenShard(sh)
		if err != nil {
			return err
		}
		ids := s.ids[si]
		off := s.d.Shards[sh].Offset
		err = m.Blocks(s.blockRows, chk, func(b dataset.Block) error {
			if err := ctx.Err(); err != nil {
				return err
			}
			blk := s.selectRows(b, off, ids)
			if blk.M.Rows == 0 {
				return nil
			}
			for _, k := range sinks {
				if err := k.add(blk); err != nil {
					return fmt.Errorf("%s rows [%d, %d): %w", m.Path, b.Row0, b.Row0+b.Rows, err)
				}
			}
			return nil
		})
		m.Close()
		if err != nil {
			return err
		}
	}
	return nil
}

// selectRows keeps the block's rows that dedup kept: a view when all are,
// a compacted copy otherwise.
func (s *baseScan) selectRows(b dataset.Block, off int64, ids []int64) scanBlock {
	n, d := b.Rows, b.Dim
	s.rowBuf, s.idBuf = s.rowBuf[:0], s.idBuf[:0]
	if s.keepPath == "" {
		for j := 0; j < n; j++ {
			s.rowBuf = append(s.rowBuf, off+int64(b.Row0+j))
		}
		m := kernels.F32Matrix(b.F32, n, d)
		if b.F16 != nil {
			m = kernels.F16Matrix(b.F16, n, d)
		}
		return scanBlock{M: m, Rows: s.rowBuf, IDs: ids[b.Row0 : b.Row0+n]}
	}
	s.buf16, s.buf32 = s.buf16[:0], s.buf32[:0]
	for j := 0; j < n; j++ {
		id := ids[b.Row0+j]
		if !s.kept(id) {
			continue
		}
		s.rowBuf = append(s.rowBuf, off+int64(b.Row0+j))
		s.idBuf = append(s.idBuf, id)
		if b.F16 != nil {
			s.buf16 = append(s.buf16, b.F16[j*d:(j+1)*d]...)
		} else {
			s.buf32 = append(s.buf32, b.F32[j*d:(j+1)*d]...)
		}
	}
	m := kernels.F32Matrix(s.buf32, len(s.rowBuf), d)
	if b.F16 != nil {
		m = kernels.F16Matrix(s.buf16, len(s.rowBuf), d)
	}
	return scanBlock{M: m, Rows: s.rowBuf, IDs: s.idBuf}
}

// readIDRange reads the values in [lo, hi] of a sorted 1-d int64 .npy file,
// streaming, so a rank holds only the ids of its own range.
func readIDRange(path string, lo, hi int64) ([]int64, error) {
	f, h, err := dataset.OpenNPY(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if len(h.Shape) != 1 || h.DType != dataset.Int64 {
		return nil, fmt.Errorf("%s: want a 1-d int64 array, got %s %v", path, h.DType.Name(), h.Shape)
	}
	r := bufio.NewReaderSize(f, 1<<20)
	buf := make([]int64, 1<<16)
	var out []int64
	prev := int64(math.MinInt64)
	for left := h.Shape[0]; left > 0; {
		n := min(left, len(buf))
		if _, err := io.ReadFull(r, collective.AsBytes(buf[:n])); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		for _, v := range buf[:n] {
			if v < prev {
				return nil, fmt.Errorf("%s: ids are not sorted (%d after %d)", path, v, prev)
			}
			prev = v
			if v >= lo && v <= hi {
				out = append(out, v)
			}
		}
		left -= n
	}
	return out, nil
}

// ---------------------------------------------------------------- exact running top-k

// topkState is the exact top-k of nq queries over the base rows seen so
// far, best first: larger value (smaller when smallest), then smaller
// global row. Empty entries (row -1, value ∓Inf, id -1) come last.
type topkState struct {
	nq, k    int
	smallest bool
	val      []float32 // nq*k
	row, id  []int64   // nq*k
	sc       *mergeScratch
}

// mergeScratch is where mergeRow builds a merged list (k entries): one per
// goroutine merging into a state.
type mergeScratch struct {
	v     []float32
	r, id []int64
}

func newMergeScratch(k int) *mergeScratch {
	return &mergeScratch{v: make([]float32, k), r: make([]int64, k), id: make([]int64, k)}
}

// scratch is the state's own mergeScratch, for merges on one goroutine.
func (s *topkState) scratch() *mergeScratch {
	if s.sc == nil {
		s.sc = newMergeScratch(s.k)
	}
	return s.sc
}

func newTopkState(nq, k int, smallest bool) *topkState {
	s := &topkState{nq: nq, k: k, smallest: smallest,
		val: make([]float32, nq*k), row: make([]int64, nq*k), id: make([]int64, nq*k)}
	pad := float32(math.Inf(-1))
	if smallest {
		pad = float32(math.Inf(1))
	}
	for i := range s.val {
		s.val[i], s.row[i], s.id[i] = pad, -1, -1
	}
	return s
}

// topkBefore is the result order: better value first, then smaller row;
// empty entries (row < 0) after everything.
func topkBefore(smallest bool, va float32, ra int64, vb float32, rb int64) bool {
	if ra < 0 {
		return false
	}
	if rb < 0 {
		return true
	}
	if va != vb {
		if smallest {
			return va < vb
		}
		return va > vb
	}
	return ra < rb
}

// mergeRow merges query i's list with another sorted list (bv, br, bi) of
// any length, keeping the best k: a linear merge, exact, built in sc.
func (s *topkState) mergeRow(i int, bv []float32, br, bi []int64, sc *mergeScratch) {
	k := s.k
	av, ar, ai := s.val[i*k:(i+1)*k], s.row[i*k:(i+1)*k], s.id[i*k:(i+1)*k]
	a, b := 0, 0
	for o := 0; o < k; o++ {
		takeA := b >= len(bv) || (a < k && topkBefore(s.smallest, av[a], ar[a], bv[b], br[b]))
		if takeA {
			sc.v[o], sc.r[o], sc.id[o] = av[a], ar[a], ai[a]
			a++
		} else {
			sc.v[o], sc.r[o], sc.id[o] = bv[b], br[b], bi[b]
			b++
		}
	}
	copy(av, sc.v)
	copy(ar, sc.r)
	copy(ai, sc.id)
}

// merge merges another state of the same queries into s.
func (s *topkState) merge(o *topkState) {
	k := o.k
	for i := 0; i < s.nq; i++ {
		s.mergeRow(i, o.val[i*k:(i+1)*k], o.row[i*k:(i+1)*k], o.id[i*k:(i+1)*k], s.scratch())
	}
}

// mergeResult merges a top-k result whose indices number the rows of
// rows/ids (a stream's flush) into the state, queries split over threads.
func (s *topkState) mergeResult(r kernels.TopKResult, rows, ids []int64, threads int) {
	threads = max(1, min(threads, s.nq/64))
	var wg sync.WaitGroup
	for w := 0; w < threads; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sc := newMergeScratch(s.k)
			br, bi := make([]int64, r.K), make([]int64, r.K)
			for i := w * s.nq / threads; i < (w+1)*s.nq/threads; i++ {
				vals, idx := r.Row(i)
				n := 0
				for j, x := range idx {
					if x < 0 {
						break
					}
					br[j], bi[j] = rows[x], ids[x]
					n++
				}
				s.mergeRow(i, vals[:n], br[:n], bi[:n], sc)
			}
		}()
	}
	wg.Wait()
}

// column0 is every query's best value.
func (s *topkState) column0() []float32 {
	out := make([]float32, s.nq)
	for i := range out {
		out[i] = s.val[i*s.k]
	}
	return out
}

func (s *topkState) marshal() []byte {
	b := make([]byte, 0, len(s.val)*20)
	b = append(b, collective.AsBytes(s.val)...)
	b = append(b, collective.AsBytes(s.row)...)
	return append(b, collective.AsBytes(s.id)...)
}

func (s *topkState) unmarshal(b []byte) (*topkState, error) {
	n := s.nq * s.k
	if len(b) != 20*n {
		return nil, fmt.Errorf("partial top-k of %d bytes, want %d", len(b), 20*n)
	}
	o := &topkState{nq: s.nq, k: s.k, smallest: s.smallest}
	var err error
	if o.val, err = collective.FromBytes[float32](b[:4*n]); err != nil {
		return nil, err
	}
	if o.row, err = collective.FromBytes[int64](b[4*n : 12*n]); err != nil {
		return nil, err
	}
	o.id, err = collective.FromBytes[int64](b[12*n:])
	return o, err
}

// reduceTopK merges every rank's partial into rank 0's st (exact, so the
// order of merging does not matter): through the Comm when all partials
// fit simsGatherBytes, else pairwise in a tree through files under dir.
func reduceTopK(ctx context.Context, env *Env, dir, tag string, st *topkState) error {
	size, rank := env.Size(), env.Rank()
	if size == 1 {
		return nil
	}
	bytes := int64(st.nq*st.k) * 20
	if int64(size)*bytes <= simsGatherBytes {
		parts, err := env.Comm.Gatherv(ctx, 0, st.marshal())
		if err != nil || rank != 0 {
			return err
		}
		for r := 1; r < size; r++ {
			o, err := st.unmarshal(parts[r])
			if err != nil {
				return fmt.Errorf("rank %d: %w", r, err)
			}
			st.merge(o)
		}
		return nil
	}
	for step := 1; step < size; step *= 2 {
		path := func(from int) string { return filepath.Join(dir, fmt.Sprintf("%s.s%d.r%d", tag, step, from)) }
		if rank%(2*step) == step {
			if err := dataset.WriteFileAtomic(path(rank), st.marshal()); err != nil {
				return err
			}
		}
		if err := env.Comm.Barrier(ctx); err != nil {
			return err
		}
		if rank%(2*step) == 0 && rank+step < size {
			p := path(rank + step)
			b, err := os.ReadFile(p)
			if err != nil {
				return fmt.Errorf("partial top-k of rank %d: %w", rank+step, err)
			}
			os.Remove(p)
			o, err := st.unmarshal(b)
			if err != nil {
				return fmt.Errorf("%s: %w", p, err)
			}
			st.merge(o)
		}
	}
	return nil
}

// gatherBytes collects every rank's data on rank 0 (nil elsewhere): through
// the Comm when all of it fits simsGatherBytes, else through files under
// dir (on the shared filesystem).
func gatherBytes(ctx context.Context, env *Env, dir, tag string, data []byte) ([][]byte, error) {
	if env.Size() == 1 {
		return [][]byte{data}, nil
	}
	n := []int64{int64(len(data))}
	if err := collective.Allreduce(ctx, env.Comm, n, collective.Sum); err != nil {
		return nil, err
	}
	if n[0] <= simsGatherBytes {
		return env.Comm.Gatherv(ctx, 0, data)
	}
	path := func(r int) string { return filepath.Join(dir, fmt.Sprintf("%s.r%d", tag, r)) }
	if err := dataset.WriteFileAtomic(path(env.Rank()), data); err != nil {
		return nil, err
	}
	if err := env.Comm.Barrier(ctx); err != nil {
		return nil, err
	}
	if env.Rank() != 0 {
		return nil, nil
	}
	out := make([][]byte, env.Size())
	for r := range out {
		b, err := os.ReadFile(path(r))
		if err != nil {
			return nil, fmt.Errorf("data of rank %d: %w", r, err)
		}
		os.Remove(path(r))
		out[r] = b
	}
	return out, nil
}

// topkSet is one query set to search the base with.
type topkSet struct {
	Q        kernels.Matrix
	Smallest bool
	Tag      string // names transfer files
	owner    int    // the caller's index (sims: which eval set)
}

// topkJob is a chunk of one set's queries.
type topkJob struct {
	set, q0, q1 int
	st          *topkState
	q           kernels.Matrix
}

// topkPass is one pass's sink for the jobs packed into it. Jobs of one
// direction and dtype share a kernels.TopKStream (their queries
// concatenated), so each block goes to the backend once per group, not once
// per job: packed and copied once, one kernel over all the queries. What a
// stream flushes is split by job and merged into the jobs' states. The rows
// and ids of the blocks since the last flush decode the streams' indices
// (16 bytes a row): a backend with its own stream (kernels/cuda: queries,
// thresholds and candidates stay on the GPU from block to block) is flushed
// every simsStreamWindow rows, any other after every block.
type topkPass struct {
	groups    []*topkGroup
	window    int
	threads   int
	rows, ids []int64
}

// topkGroup is one stream of a pass and the jobs whose queries it holds,
// the first query of jobs[i] at row offs[i].
type topkGroup struct {
	stream kernels.TopKStream
	jobs   []*topkJob
	offs   []int
}

func (p *topkPass) add(b scanBlock) error {
	p.rows = append(p.rows, b.Rows...)
	p.ids = append(p.ids, b.IDs...)
	for _, g := range p.groups {
		if err := g.stream.Add(b.M); err != nil {
			return err
		}
	}
	if len(p.rows) >= p.window {
		return p.flush()
	}
	return nil
}

func (p *topkPass) flush() error {
	if len(p.rows) == 0 {
		return nil
	}
	for _, g := range p.groups {
		r, err := g.stream.Flush()
		if err != nil {
			return err
		}
		for i, j := range g.jobs {
			o, n := g.offs[i], j.q1-j.q0
			part := kernels.TopKResult{NQ: n, K: r.K, Smallest: r.Smallest, Val: r.Val[o*r.K : (o+n)*r.K], Idx: r.Idx[o*r.K : (o+n)*r.K]}
			j.st.mergeResult(part, p.rows, p.ids, p.threads)
		}
	}
	p.rows, p.ids = p.rows[:0], p.ids[:0]
	return nil
}

func (p *topkPass) release() {
	for _, g := range p.groups {
		g.stream.Release()
	}
	p.groups = nil
}

// newTopkPass starts the jobs' streams on the backend: one per direction
// and dtype, or one per job when a backend's own stream has no room for a
// group's queries at once but may for each job's.
func newTopkPass(be kernels.Backend, jobs []*topkJob, sets []topkSet, k, threads int) (*topkPass, error) {
	p := &topkPass{window: simsStreamWindow, threads: threads}
	type key struct{ smallest, f16 bool }
	byKey := map[key][]*topkJob{}
	var keys []key
	for _, j := range jobs {
		s := sets[j.set]
		j.q = rowsOf(s.Q, j.q0, j.q1)
		j.st = newTopkState(j.q1-j.q0, k, s.Smallest)
		kk := key{s.Smallest, s.Q.F16 != nil}
		if byKey[kk] == nil {
			keys = append(keys, kk)
		}
		byKey[kk] = append(byKey[kk], j)
	}
	// open is a stream of the jobs' queries, concatenated
	open := func(js []*topkJob, smallest bool) (*topkGroup, bool, error) {
		g := &topkGroup{jobs: js, offs: make([]int, len(js))}
		q := js[0].q
		if len(js) > 1 {
			q = kernels.Matrix{Dim: q.Dim}
			for i, j := range js {
				g.offs[i] = q.Rows
				q.Rows += j.q.Rows
				q.F16 = append(q.F16, j.q.F16...)
				q.F32 = append(q.F32, j.q.F32...)
			}
		}
		var native bool
		var err error
		g.stream, native, err = kernels.NewTopKStream(be, q, kernels.TopKOptions{K: k, Smallest: smallest})
		return g, native, err
	}
	_, streamer := be.(kernels.TopKStreamer)
	for _, kk := range keys {
		js := byKey[kk]
		g, native, err := open(js, kk.smallest)
		if err == nil && !native && streamer && len(js) > 1 {
			// no room for the group on the backend: a stream per job
			g.stream.Release()
			native = true
			for _, j := range js {
				gj, n, e := open([]*topkJob{j}, kk.smallest)
				if err = e; err != nil {
					break
				}
				p.groups = append(p.groups, gj)
				native = native && n
			}
		} else if err == nil {
			p.groups = append(p.groups, g)
		}
		if err != nil {
			p.release()
			return nil, err
		}
		if !native {
			p.window = 1
		}
	}
	return p, nil
}

// runTopK finds the exact top-k of every query of every set over the
// scanned base. Queries are cut into chunks so that one pass's state stays
// within simsStateBytes; chunks are packed into passes over the base. The
// sinks in first see the first pass's blocks too. On rank 0, onChunk gets
// every chunk's merged result, sets and chunks in order.
func runTopK(ctx context.Context, env *Env, scan *baseScan, sets []topkSet, k int, first []scanSink, dir string,
	onChunk func(set, q0 int, st *topkState) error) error {
	qChunk := int(max(1, simsStateBytes/int64(k*topkEntryBytes)))
	var jobs []*topkJob
	for si, s := range sets {
		for q0 := 0; q0 < s.Q.Rows; q0 += qChunk {
			jobs = append(jobs, &topkJob{set: si, q0: q0, q1: min(s.Q.Rows, q0+qChunk)})
		}
	}
	be := env.Backend
	pass := 0
	for len(jobs) > 0 || (pass == 0 && len(first) > 0) {
		// pack jobs into this pass
		n, entries := 0, int64(0)
		for n < len(jobs) && (n == 0 || entries+int64((jobs[n].q1-jobs[n].q0)*k) <= simsStateBytes/topkEntryBytes) {
			entries += int64((jobs[n].q1 - jobs[n].q0) * k)
			n++
		}
		batch := jobs[:n]
		jobs = jobs[n:]
		sinks := []scanSink{}
		if pass == 0 {
			sinks = append(sinks, first...)
		}
		tp, err := newTopkPass(be, batch, sets, k, env.Threads)
		if err != nil {
			return err
		}
		err = scan.run(ctx, append(sinks, tp)...)
		if err == nil {
			err = tp.flush()
		}
		tp.release()
		if err != nil {
			return err
		}
		for _, j := range batch {
			tag := fmt.Sprintf("%s.p%d.q%d", sets[j.set].Tag, pass, j.q0)
			if err := reduceTopK(ctx, env, dir, tag, j.st); err != nil {
				return err
			}
			if env.Rank() == 0 {
				if err := onChunk(j.set, j.q0, j.st); err != nil {
					return err
				}
			}
			j.st = nil
		}
		pass++
	}
	return nil
}

// rowsOf is rows [r0, r1) of a float32 or float16 matrix (a view).
func rowsOf(m kernels.Matrix, r0, r1 int) kernels.Matrix {
	d := m.Dim
	if m.F16 != nil {
		return kernels.F16Matrix(m.F16[r0*d:r1*d], r1-r0, d)
	}
	return kernels.F32Matrix(m.F32[r0*d:r1*d], r1-r0, d)
}

// TopKScan returns the exact top-k (bottom-k when smallest) of the queries
// q over dataset name as the sims stage scans it (this rank's shards, after
// dedup, merged over ranks): on rank 0 the values [q.Rows*k], best first,
// and the base ids (-1 pads when the base has fewer than k rows); nil
// elsewhere. Every rank must call it.
func TopKScan(ctx context.Context, env *Env, name string, q kernels.Matrix, k int, smallest bool) ([]float32, []int64, error) {
	if k < 1 {
		return nil, nil, fmt.Errorf("k=%d < 1", k)
	}
	scan, err := openBaseScan(env, name, scanBlockRows(env, k))
	if err != nil {
		return nil, nil, err
	}
	var vals []float32
	var ids []int64
	err = runTopK(ctx, env, scan, []topkSet{{Q: q, Smallest: smallest, Tag: "topkscan"}}, k, nil,
		filepath.Join(env.Cfg.Job.Workdir, ".xfer"), func(_, _ int, st *topkState) error {
			vals = append(vals, st.val...)
			ids = append(ids, st.id...)
			return nil
		})
	return vals, ids, err
}

// ---------------------------------------------------------------- maxsim

// maxsimSink writes, for every scanned base row, its id, its largest
// similarity to the eval set and the eval id reaching it, to this rank's
// part files; finish concatenates the parts on rank 0 in rank order.
type maxsimSink struct {
	env   *Env
	dir   string
	ev    *simsEval
	parts [3]*os.File
	w     [3]*bufio.Writer
	arg   []int64
}

var maxsimNames = [3]string{"ids", "sims", "argmax"}

func newMaxsimSink(env *Env, dir string, ev *simsEval) (*maxsimSink, error) {
	m := &maxsimSink{env: env, dir: dir, ev: ev}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	for i, n := range maxsimNames {
		f, err := os.Create(m.partPath(env.Rank(), n))
		if err != nil {
			m.abort()
			return nil, err
		}
		m.parts[i], m.w[i] = f, bufio.NewWriterSize(f, 1<<20)
	}
	return m, nil
}

func (m *maxsimSink) partPath(rank int, name string) string {
	return filepath.Join(m.dir, fmt.Sprintf(".part-%s.r%d", name, rank))
}

func (m *maxsimSink) add(b scanBlock) error {
	am, err := m.env.Backend.MaxArg(m.ev.Q, b.M)
	if err != nil {
		return err
	}
	m.arg = m.arg[:0]
	for _, q := range am.Idx {
		id := int64(-1)
		if q >= 0 {
			id = m.ev.IDs[q]
		}
		m.arg = append(m.arg, id)
	}
	m.w[0].Write(collective.AsBytes(b.IDs))
	m.w[1].Write(collective.AsBytes(am.Val))
	_, err = m.w[2].Write(collective.AsBytes(m.arg))
	return err
}

func (m *maxsimSink) finish(ctx context.Context) error {
	for i := range m.parts {
		if err := m.w[i].Flush(); err != nil {
			return fmt.Errorf("%s: %w", m.parts[i].Name(), err)
		}
		if err := m.parts[i].Close(); err != nil {
			return err
		}
	}
	if err := m.env.Comm.Barrier(ctx); err != nil {
		return err
	}
	if m.env.Rank() != 0 {
		return nil
	}
	dts := [3]dataset.DType{dataset.Int64, dataset.Float32, dataset.Int64}
	for i, name := range maxsimNames {
		var parts []string
		for r := 0; r < m.env.Size(); r++ {
			parts = append(parts, m.partPath(r, name))
		}
		if err := concatNPY(filepath.Join(m.dir, name+".npy"), dts[i], parts); err != nil {
			return err
		}
	}
	return nil
}

func (m *maxsimSink) abort() {
	for i, f := range m.parts {
		if f != nil {
			f.Close()
			os.Remove(m.partPath(m.env.Rank(), maxsimNames[i]))
		}
	}
}

// concatNPY writes the raw parts, in order, as one 1-d array and removes
// them.
func concatNPY(path string, dt dataset.DType, parts []string) error {
	o, err := createNPYStream(path, dt)
	if err != nil {
		return err
	}
	for _, p := range parts {
		f, err := os.Open(p)
		if err != nil {
			o.abort()
			return err
		}
		_, err = io.Copy(o, f)
		f.Close()
		if err != nil {
			o.abort()
			return fmt.Errorf("%s: %w", p, err)
		}
	}
	if err := o.close(int(o.n / int64(dt.Size()))); err != nil {
		return err
	}
	for _, p := range parts {
		os.Remove(p)
	}
	return nil
}

// ---------------------------------------------------------------- .npy streams

// npyStream writes an array whose shape is known only at close into an
// .npy file that appears atomically: a fixed 128-byte header, patched at
// close.
type npyStream struct {
	f  *dataset.AtomicFile
	w  *bufio.Writer
	dt dataset.DType
	n  int64 // bytes of data written
}

const npyStreamHeader = 128

func createNPYStream(path string, dt dataset.DType) (*npyStream, error) {
	f, err := dataset.CreateAtomic(path)
	if err != nil {
		return nil, err
	}
	w := bufio.NewWriterSize(f, 1<<20)
	w.Write(make([]byte, npyStreamHeader))
	return &npyStream{f: f, w: w, dt: dt}, nil
}

func (o *npyStream) Write(b []byte) (int, error) {
	n, err := o.w.Write(b)
	o.n += int64(n)
	return n, err
}

func (o *npyStream) write(b []byte) error {
	_, err := o.Write(b)
	return err
}

// close checks that the data fills shape, writes the header and commits.
func (o *npyStream) close(shape ...int) error {
	want := int64(o.dt.Size())
	for _, s := range shape {
		want *= int64(s)
	}
	if want != o.n {
		o.abort()
		return fmt.Errorf("writing %s: %d bytes for shape %v", o.f.Name(), o.n, shape)
	}
	if err := o.w.Flush(); err != nil {
		o.abort()
		return fmt.Errorf("writing %s: %w", o.f.Name(), err)
	}
	hdr, err := dataset.NPYHeader(o.dt, shape, npyStreamHeader)
	if err != nil {
		o.abort()
		return fmt.Errorf("writing %s: %w", o.f.Name(), err)
	}
	if _, err := o.f.WriteAt(hdr, 0); err != nil {
		o.abort()
		return err
	}
	return o.f.Commit()
}

func (o *npyStream) abort() {
	if o != nil {
		o.f.Abort()
	}
}

// ---------------------------------------------------------------- stamps: skip what is up to date

// fileStamps is "path:size:mtime" of each file, joined.
func fileStamps(paths ...string) (string, error) {
	var parts []string
	for _, p := range paths {
		st, err := os.Stat(p)
		if err != nil {
			return "", err
		}
		parts = append(parts, fmt.Sprintf("%s:%d:%d", p, st.Size(), st.ModTime().UnixNano()))
	}
	return strings.Join(parts, ";"), nil
}

// datasetStamp stamps every file of a dataset.
func datasetStamp(d *dataset.Dataset) (string, error) {
	var paths []string
	for _, s := range d.Shards {
		for _, p := range []string{s.Emb, s.Meta, s.Labels} {
			if p != "" {
				paths = append(paths, p)
			}
		}
	}
	st, err := fileStamps(paths...)
	return fmt.Sprintf("%s/%s/%s/%v:", d.Opts.Layout, d.Opts.IDColumn, d.Root, d.Opts.Normalize) + st, err
}

func hashJSON(v any) string {
	b, _ := json.Marshal(v)
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// stageStamp is a done.json: the stamp of what made the outputs beside it,
// and their report entry. It is written last.
type stageStamp struct {
	Stamp  string         `json:"stamp"`
	Extra  map[string]any `json:"extra,omitempty"`
	Inputs string         `json:"inputs,omitempty"` // sims pairs: the inputs' stamp alone (prune reuses the pair's outputs when it matches)
}

// readStamp reports whether dir/done.json holds stamp and the outputs
// (paths relative to dir) are all there, and the stamp's extra.
func readStamp(dir, stamp string, outputs ...string) (bool, map[string]any) {
	b, err := os.ReadFile(filepath.Join(dir, "done.json"))
	if err != nil {
		return false, nil
	}
	for _, o := range outputs {
		if _, err := os.Stat(filepath.Join(dir, o)); err != nil {
			return false, nil
		}
	}
	var s stageStamp
	if json.Unmarshal(b, &s) != nil || s.Stamp != stamp {
		return false, nil
	}
	return true, s.Extra
}

func writeStamp(dir string, st stageStamp) error {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	return dataset.WriteFileAtomic(filepath.Join(dir, "done.json"), append(b, '\n'))
}

// agreeTodo has rank 0 check n items with upToDate and broadcasts the
// indices of those that are not, so every rank takes the same decision
// (ranks reading done.json at different times could disagree). extras gets
// the up-to-date items' report entries on rank 0.
func agreeTodo(ctx context.Context, env *Env, n int, upToDate func(i int) (bool, map[string]any), extras *[]map[string]any) ([]int, error) {
	var todo []int
	*extras = make([]map[string]any, n)
	if env.Rank() == 0 {
		for i := 0; i < n; i++ {
			ok, e := upToDate(i)
			if !ok {
				todo = append(todo, i)
			}
			(*extras)[i] = e
		}
	}
	if env.Size() == 1 {
		return todo, nil
	}
	b, _ := json.Marshal(todo)
	b, err := env.Comm.Bcast(ctx, 0, b)
	if err != nil {
		return nil, err
	}
	todo = nil
	err = json.Unmarshal(b, &todo)
	return todo, err
}

// ---------------------------------------------------------------- report helpers

// quantileLevels are the levels report.json gives distributions at.
var quantileLevels = []float64{0, 0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99, 1}

// quantileMap is numpy's default (linear) quantiles of x at quantileLevels,
// keyed "q0", "q0.01", ..., plus the mean; nil for no values (padding
// ±Inf excluded).
func quantileMap(x []float32) map[string]float64 {
	v := make([]float64, 0, len(x))
	var sum float64
	for _, a := range x {
		if !math.IsInf(float64(a), 0) && !math.IsNaN(float64(a)) {
			v = append(v, float64(a))
			sum += float64(a)
		}
	}
	if len(v) == 0 {
		return nil
	}
	sort.Float64s(v)
	out := map[string]float64{"mean": round6(sum / float64(len(v)))}
	for _, p := range quantileLevels {
		pos := p * float64(len(v)-1)
		lo := int(math.Floor(pos))
		hi := min(lo+1, len(v)-1)
		out[fmt.Sprintf("q%g", p)] = round6(v[lo] + (v[hi]-v[lo])*(pos-float64(lo)))
	}
	return out
}

func round6(x float64) float64 { return math.Round(x*1e6) / 1e6 }
