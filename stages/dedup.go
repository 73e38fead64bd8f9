package stages

// dedup: semantic deduplication inside each k-means cluster (SemDeDup, as
// the paper uses it to take LAION-400M to about 200M).
//
// Rule (the paper's): within a cluster, put the points in order; a point is
// REMOVED when its cosine similarity to some EARLIER point of the order
// exceeds 1 - eps, even when that earlier point was itself removed. That is
// SemDeDup's max over the strict upper triangle of the similarity matrix,
// so the keep/remove set is a function of the order alone (no cascade):
//
//	keep x_i  ⇔  max_{j<i} x_i·x_j ≤ float32(1 - eps)     (x_0 is kept)
//
// Orders (dedup.order): "file" (as the paper) is global row order; "hard"
// and "easy" sort by distance to the cluster's centroid (squared Euclidean
// for metric l2, 1 - cosine for cosine), descending and ascending, ties by
// id then row; "random" sorts by a hash of (job.seed, id), ties by id then
// row. Every order is independent of the number of ranks.
//
// Steps:
//  1. Cluster shuffle (shuffle.go): each cluster's rows and ids in one
//     contiguous run of its owner's files, in global row order.
//  2. Each owner dedups its clusters in turn, streaming each in blocks of
//     dedupBlockRows points (memory O(block·d) whatever the cluster size):
//     PrefixMax inside a block, MaxArg of every earlier block against it.
//     Keep flags go to shuffle/owner_<o>.keep and owner_<o>.progress.json
//     records how many clusters are done, so a restarted job goes on from
//     there (and skips the shuffle when it finished).
//  3. Each owner writes its sorted keep and remove ids to parts/; rank 0
//     merges them into dedup/keep_ids.npy and dedup/remove_ids.npy (int64,
//     sorted), writes dedup/stats.json, done.json last, and removes the
//     shuffle files.

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"math/bits"
	"os"
	"path/filepath"
	"slices"
	"time"

	"hpcrun/collective"
	"hpcrun/dataset"
	"hpcrun/kernels"
)

func init() { registry["dedup"] = runDedup }

// Tunables.
var (
	// dedupBlockRows is the number of a cluster's points per kernel call:
	// the tile of the stream (two blocks of float32 rows are in memory).
	dedupBlockRows = 8192
	// dedupProgressEvery is how often an owner records its progress.
	dedupProgressEvery = 2 * time.Second
	// dedupLogEvery is how often rank 0 logs its progress.
	dedupLogEvery = 10 * time.Second
)

// dedupTestHook, when set, runs on every owner before each cluster; an
// error stops the stage there (tests interrupt a run with it).
var dedupTestHook func(rank, cluster int) error

// dedupStats is dedup/stats.json.
type dedupStats struct {
	Points         int64          `json:"points"`
	Kept           int64          `json:"kept"`
	Removed        int64          `json:"removed"`
	Eps            float64        `json:"eps"`
	Threshold      float32        `json:"threshold"` // keep when max similarity to an earlier point <= this
	Order          string         `json:"order"`
	Clusters       int            `json:"clusters"`
	EmptyClusters  int            `json:"empty_clusters"`
	LargestCluster int64          `json:"largest_cluster"`
	ClusterSizes   []dedupSizeBin `json:"cluster_size_histogram"` // non-empty clusters by size, powers of 2
	Run            dedupRunInfo   `json:"run"`
}

type dedupSizeBin struct {
	Min      int64 `json:"min"` // sizes in [Min, Max]
	Max      int64 `json:"max"`
	Clusters int   `json:"clusters"`
	Points   int64 `json:"points"`
	Removed  int64 `json:"removed"`
}

type dedupRunInfo struct {
	Ranks          int     `json:"ranks"`
	ShuffleSeconds float64 `json:"shuffle_seconds"`
	DedupSeconds   float64 `json:"dedup_seconds"`
	ShuffleSkipped bool    `json:"shuffle_skipped,omitempty"`
	ResumedAt      []int   `json:"resumed_at,omitempty"` // clusters already done per rank, when resumed
}

// dedupOwnerProgress is shuffle/owner_<o>.progress.json.
type dedupOwnerProgress struct {
	Hash    string  `json:"hash"`
	Done    int     `json:"done"`    // clusters of the owner's list finished
	Removed []int64 `json:"removed"` // removed points of each finished cluster
}

func runDedup(ctx context.Context, env *Env) (*Result, error) {
	cfg, dc, kc := env.Cfg, env.Cfg.Dedup, env.Cfg.KMeans
	ds, err := OpenDataset(cfg, kc.Dataset)
	if err != nil {
		return nil, fmt.Errorf("kmeans.dataset: %w", err)
	}
	kmDir := filepath.Join(cfg.Job.Workdir, "kmeans")
	kmFiles := []string{filepath.Join(kmDir, "centroids.npy"), filepath.Join(kmDir, "ids.npy"), filepath.Join(kmDir, "assignments.npy")}
	for _, f := range kmFiles {
		if _, err := os.Stat(f); err != nil {
			return nil, fmt.Errorf("dedup needs %s: run the kmeans stage first", f)
		}
	}
	fp, err := filesFingerprint(append(datasetFiles(ds), kmFiles...)...)
	if err != nil {
		return nil, err
	}
	hash := paramHash(struct {
		Eps      float64
		Order    string
		Seed     int64
		Metric   string
		Read     dataset.Options
		Files    []string
		Numerics string `json:",omitempty"`
	}{dc.Eps, dc.Order, cfg.Job.Seed, kc.Metric, ds.Opts, fp, numerics(env)})
	dir := filepath.Join(cfg.Job.Workdir, "dedup")
	skip, err := agree(ctx, env.Comm, func() bool { return upToDate(filepath.Join(dir, "done.json"), hash) })
	if err != nil {
		return nil, err
	}
	if skip {
		return &Result{Items: ds.Rows, Skipped: true}, nil
	}
	centroids, shape, err := dataset.ReadFloat32(kmFiles[0])
	if err != nil {
		return nil, err
	}
	if len(shape) != 2 || shape[1] != ds.Dim {
		return nil, fmt.Errorf("%s: shape %v, want [k, %d]", kmFiles[0], shape, ds.Dim)
	}
	k := shape[0]
	rows := partitionRows(ds, env.Size(), env.Rank())
	assign, err := readNPYRows[int32](kmFiles[2], dataset.Int32, ds.Rows, rows.lo, rows.n())
	if err != nil {
		return nil, fmt.Errorf("rank %d: %w", env.Rank(), err)
	}
	ids, err := readNPYRows[int64](kmFiles[1], dataset.Int64, ds.Rows, rows.lo, rows.n())
	if err != nil {
		return nil, fmt.Errorf("rank %d: %w", env.Rank(), err)
	}

	t0 := time.Now()
	shuffleHash := paramHash(struct {
		Ranks int
		DType dataset.DType
		Read  dataset.Options
		Files []string
	}{env.Size(), shuffleDType(ds), ds.Opts, fp})
	sh, err := clusterShuffle(ctx, env, ds, rows, assign, ids, k, filepath.Join(dir, "shuffle"), shuffleHash)
	if err != nil {
		return nil, err
	}
	assign, ids = nil, nil
	run := dedupRunInfo{Ranks: env.Size(), ShuffleSeconds: time.Since(t0).Seconds(), ShuffleSkipped: sh.reused}
	if env.Rank() == 0 {
		env.Log.Info("dedup shuffle done", "clusters", k, "seconds", fmt.Sprintf("%.2f", run.ShuffleSeconds))
	}

	t1 := time.Now()
	dd := &dedupOwner{env: env, sh: sh, centroids: centroids, hash: hash, thr: float32(1 - dc.Eps)}
	removedPer, resumedAt, err := dd.run(ctx)
	if err != nil {
		return nil, fmt.Errorf("rank %d: %w", env.Rank(), err)
	}
	if err := dd.writeParts(filepath.Join(dir, "parts")); err != nil {
		return nil, fmt.Errorf("rank %d: %w", env.Rank(), err)
	}
	// per-cluster removed counts and where each rank resumed: small metadata
	red := append(removedPer, int64(resumedAt))
	perRank := make([]int64, env.Size())
	perRank[env.Rank()] = int64(resumedAt)
	red = append(red, perRank...)
	if err := collective.Allreduce(ctx, env.Comm, red, collective.Sum); err != nil {
		return nil, err
	}
	run.DedupSeconds = time.Since(t1).Seconds()
	if red[k] > 0 {
		for _, v := range red[k+1:] {
			run.ResumedAt = append(run.ResumedAt, int(v))
		}
	}
	if env.Rank() == 0 {
		st := dedupStatsOf(sh.plan.total, red[:k], dc.Eps, dd.thr, dc.Order)
		st.Run = run
		if err := dedupFinish(dir, sh, st); err != nil {
			return nil, err
		}
		if err := writeDoneMark(filepath.Join(dir, "done.json"), hash,
			[]string{"keep_ids.npy", "remove_ids.npy", "stats.json"}); err != nil {
			return nil, err
		}
		os.RemoveAll(filepath.Join(dir, "shuffle"))
		os.RemoveAll(filepath.Join(dir, "parts"))
		env.Log.Info("dedup done", "points", st.Points, "kept", st.Kept, "removed", st.Removed)
	}
	if err := env.Comm.Barrier(ctx); err != nil {
		return nil, err
	}
	return &Result{Items: ds.Rows}, nil
}

// ---------------------------------------------------------------- one owner

// dedupOwner dedups the clusters one rank owns.
type dedupOwner struct {
	env       *Env
	sh        *shuffled
	centroids []float32
	hash      string
	thr       float32
}

// run dedups every cluster of this rank not done yet and returns the
// removed count of every cluster (zero for the clusters of other ranks)
// and how many clusters were already done.
func (dd *dedupOwner) run(ctx context.Context) ([]int64, int, error) {
	env, sh := dd.env, dd.sh
	p, me := sh.plan, env.Rank()
	removed := make([]int64, p.k)
	mine := p.clusters[me]
	if p.ownerRows[me] == 0 {
		return removed, 0, nil
	}
	progPath := sh.path(me, "progress.json")
	var prog dedupOwnerProgress
	if b, err := os.ReadFile(progPath); err == nil && json.Unmarshal(b, &prog) == nil && prog.Hash == dd.hash &&
		prog.Done <= len(mine) && len(prog.Removed) == prog.Done {
		if prog.Done > 0 {
			env.Log.Info("dedup resumes", "clusters_done", prog.Done, "of", len(mine))
		}
	} else {
		prog = dedupOwnerProgress{Hash: dd.hash}
	}
	resumedAt := prog.Done
	emb, err := os.Open(sh.path(me, "emb"))
	if err != nil {
		return nil, 0, err
	}
	defer emb.Close()
	idf, err := os.Open(sh.path(me, "ids"))
	if err != nil {
		return nil, 0, err
	}
	defer idf.Close()
	keepF, err := os.OpenFile(sh.path(me, "keep"), os.O_RDWR, 0)
	if err != nil {
		return nil, 0, err
	}
	defer keepF.Close()
	save := func() error {
		if err := keepF.Sync(); err != nil {
			return err
		}
		b, _ := json.Marshal(prog)
		return dataset.WriteFileAtomic(progPath, b)
	}
	var pairsAll, pairsDone float64
	for _, c := range mine {
		m := float64(p.total[c])
		pairsAll += m * m / 2
	}
	for _, c := range mine[:prog.Done] {
		m := float64(p.total[c])
		pairsDone += m * m / 2
	}
	t0, lastSave, lastLog := time.Now(), time.Now(), time.Now()
	pairs0 := pairsDone
	for i := prog.Done; i < len(mine); i++ {
		if err := ctx.Err(); err != nil {
			return nil, 0, err
		}
		c := mine[i]
		if dedupTestHook != nil {
			if err := dedupTestHook(me, c); err != nil {
				return nil, 0, err
			}
		}
		keep, err := dd.cluster(c, emb, idf)
		if err != nil {
			return nil, 0, fmt.Errorf("cluster %d: %w", c, err)
		}
		var rem int64
		flags := make([]byte, len(keep))
		for j, k := range keep {
			if k {
				flags[j] = 1
			} else {
				rem++
			}
		}
		if _, err := keepF.WriteAt(flags, p.start[c]); err != nil {
			return nil, 0, err
		}
		prog.Done++
		prog.Removed = append(prog.Removed, rem)
		m := float64(p.total[c])
		pairsDone += m * m / 2
		if time.Since(lastSave) >= dedupProgressEvery || i == len(mine)-1 {
			if err := save(); err != nil {
				return nil, 0, err
			}
			lastSave = time.Now()
		}
		if me == 0 && (time.Since(lastLog) >= dedupLogEvery || i == len(mine)-1) {
			lastLog = time.Now()
			frac := pairsDone / max(pairsAll, 1)
			var eta time.Duration
			if pairsDone > pairs0 {
				eta = time.Duration(float64(time.Since(t0)) * (pairsAll - pairsDone) / (pairsDone - pairs0))
			}
			env.Log.Info("dedup progress (rank 0)", "clusters", fmt.Sprintf("%d/%d", i+1, len(mine)),
				"pairs", fmt.Sprintf("%.1f%%", 100*frac), "eta", eta.Round(time.Second).String())
		}
	}
	for i, c := range mine[:prog.Done] {
		removed[c] = prog.Removed[i]
	}
	return removed, resumedAt, nil
}

// cluster returns the keep flag of each point of cluster c, in the order of
// the owner's files (global row order).
func (dd *dedupOwner) cluster(c int, emb, idf *os.File) ([]bool, error) {
	sh := dd.sh
	m := int(sh.plan.total[c])
	s := sh.plan.start[c]
	ids := make([]int64, m)
	if err := readAtFull(idf, sliceBytes(ids), s*8); err != nil {
		return nil, err
	}
	rd := &clusterReader{f: emb, sh: sh, base: s}
	var perm []int
	order := dd.env.Cfg.Dedup.Order
	if order != "file" {
		var key []float64
		if order == "hard" || order == "easy" {
			var err error
			if key, err = rd.centroidDistances(dd.centroids[c*sh.d:(c+1)*sh.d], m, dd.env.Cfg.KMeans.Metric); err != nil {
				return nil, err
			}
		}
		perm = dedupOrder(order, ids, key, dd.env.Cfg.Job.Seed)
		rd.perm = perm
	}
	best, err := dedupPrefixMax(dd.env.Backend, m, dedupBlockRows, rd.read)
	if err != nil {
		return nil, err
	}
	keep := make([]bool, m)
	for j, v := range best {
		i := j
		if perm != nil {
			i = perm[j]
		}
		keep[i] = v <= dd.thr
	}
	return keep, nil
}

// dedupOrder returns the order of a cluster's points (perm[j] = index, in
// file order, of the j-th point) for "hard", "easy" (key = distance to the
// centroid) and "random" (key = hash of seed and id); ties by id, then index.
func dedupOrder(order string, ids []int64, dist []float64, seed int64) []int {
	perm := make([]int, len(ids))
	for i := range perm {
		perm[i] = i
	}
	tie := func(a, b int) int {
		if c := cmp.Compare(ids[a], ids[b]); c != 0 {
			return c
		}
		return cmp.Compare(a, b)
	}
	switch order {
	case "hard":
		slices.SortFunc(perm, func(a, b int) int {
			if c := cmp.Compare(dist[b], dist[a]); c != 0 {
				return c
			}
			return tie(a, b)
		})
	case "easy":
		slices.SortFunc(perm, func(a, b int) int {
			if c := cmp.Compare(dist[a], dist[b]); c != 0 {
				return c
			}
			return tie(a, b)
		})
	case "random":
		key := make([]uint64, len(ids))
		for i, id := range ids {
			key[i] = splitmix64(uint64(seed) ^ splitmix64(uint64(id)))
		}
		slices.SortFunc(perm, func(a, b int) int {
			if c := cmp.Compare(key[a], key[b]); c != 0 {
				return c
			}
			return tie(a, b)
		})
	}
	return perm
}

func splitmix64(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}

// ---------------------------------------------------------------- the streamed prefix max

// dedupPrefixMax returns, for each of m ordered points, its largest
// similarity to an earlier point (-Inf for the first): per block of B
// points, PrefixMax inside the block, then MaxArg of every earlier block
// against it. read(lo, hi, slot) returns points [lo, hi) of the order,
// in buffer slot 0 or 1. Memory: two blocks. Each value is the same float32
// as one PrefixMax over all m points would give (every dot product is the
// same FMA chain, whatever tile it is in).
func dedupPrefixMax(be kernels.Backend, m, B int, read func(lo, hi, slot int) (kernels.Matrix, error)) ([]float32, error) {
	best := make([]float32, m)
	for b0 := 0; b0 < m; b0 += B {
		b1 := min(m, b0+B)
		cur, err := read(b0, b1, 0)
		if err != nil {
			return nil, err
		}
		pm, err := be.PrefixMax(cur)
		if err != nil {
			return nil, err
		}
		copy(best[b0:b1], pm.Val)
		for e0 := 0; e0 < b0; e0 += B {
			earlier, err := read(e0, min(b0, e0+B), 1)
			if err != nil {
				return nil, err
			}
			r, err := be.MaxArg(earlier, cur)
			if err != nil {
				return nil, err
			}
			for i, v := range r.Val {
				best[b0+i] = max(best[b0+i], v)
			}
		}
	}
	return best, nil
}

// dedupRef is the plain reference: SemDeDup's full-matrix rule on the
// ordered points x (m x d), dot products in float64. keep[i] says whether
// point i of the order is kept, best[i] is its largest similarity to an
// earlier point.
func dedupRef(x []float32, m, d int, eps float64) (keep []bool, best []float64) {
	thr := float32(1 - eps)
	keep = make([]bool, m)
	best = make([]float64, m)
	for i := 0; i < m; i++ {
		b := math.Inf(-1)
		for j := 0; j < i; j++ {
			var s float64
			for k := 0; k < d; k++ {
				s += float64(x[i*d+k]) * float64(x[j*d+k])
			}
			b = max(b, s)
		}
		keep[i], best[i] = float32(b) <= thr, b
	}
	return keep, best
}

// clusterReader reads points of one cluster from an owner's .emb file,
// in file order or through perm.
type clusterReader struct {
	f    *os.File
	sh   *shuffled
	base int64 // the cluster's first row in the file
	perm []int
	raw  [2][]byte
	f16  [2][]uint16
	f32  [2][]float32
}

func (r *clusterReader) read(lo, hi, slot int) (kernels.Matrix, error) {
	n, d, rb := hi-lo, r.sh.d, r.sh.rowBytes
	var buf []byte
	if r.sh.dt == dataset.Float16 {
		r.f16[slot] = slices.Grow(r.f16[slot][:0], n*d)[:n*d]
		buf = sliceBytes(r.f16[slot])
	} else {
		r.f32[slot] = slices.Grow(r.f32[slot][:0], n*d)[:n*d]
		buf = sliceBytes(r.f32[slot])
	}
	if r.perm == nil {
		if err := readAtFull(r.f, buf, (r.base+int64(lo))*int64(rb)); err != nil {
			return kernels.Matrix{}, err
		}
	} else {
		// runs of consecutive rows are read at once
		for j := lo; j < hi; {
			e := j + 1
			for e < hi && r.perm[e] == r.perm[e-1]+1 {
				e++
			}
			if err := readAtFull(r.f, buf[(j-lo)*rb:(e-lo)*rb], (r.base+int64(r.perm[j]))*int64(rb)); err != nil {
				return kernels.Matrix{}, err
			}
			j = e
		}
	}
	if r.sh.dt == dataset.Float16 {
		return kernels.F16Matrix(r.f16[slot], n, d), nil
	}
	return kernels.F32Matrix(r.f32[slot], n, d), nil
}

// centroidDistances streams the cluster in file order and returns each
// point's distance to the centroid (float64; squared Euclidean for l2,
// 1 - cosine for cosine).
func (r *clusterReader) centroidDistances(c []float32, m int, metric string) ([]float64, error) {
	var cc float64
	for _, v := range c {
		cc += float64(v) * float64(v)
	}
	out := make([]float64, m)
	row := make([]float32, r.sh.d)
	save := r.perm
	r.perm = nil
	defer func() { r.perm = save }()
	for b0 := 0; b0 < m; b0 += dedupBlockRows {
		b1 := min(m, b0+dedupBlockRows)
		x, err := r.read(b0, b1, 0)
		if err != nil {
			return nil, err
		}
		for i := 0; i < x.Rows; i++ {
			if x.F16 != nil {
				dataset.F16ToF32(row, x.F16[i*x.Dim:(i+1)*x.Dim])
			} else {
				copy(row, x.F32[i*x.Dim:(i+1)*x.Dim])
			}
			var dist, dot, xx float64
			for k, v := range row {
				diff := float64(v) - float64(c[k])
				dist += diff * diff
				dot += float64(v) * float64(c[k])
				xx += float64(v) * float64(v)
			}
			if metric == "cosine" {
				dist = 1
				if xx > 0 && cc > 0 {
					dist = 1 - dot/math.Sqrt(xx*cc)
				}
			}
			out[b0+i] = dist
		}
	}
	return out, nil
}

// ---------------------------------------------------------------- outputs

// writeParts writes this rank's sorted keep and remove ids to
// parts/keep_<rank>.npy and parts/remove_<rank>.npy.
func (dd *dedupOwner) writeParts(dir string) error {
	sh, me := dd.sh, dd.env.Rank()
	n := sh.plan.ownerRows[me]
	var keep, remove []int64
	if n > 0 {
		ids := make([]int64, n)
		flags := make([]byte, n)
		for _, f := range []struct {
			ext string
			buf []byte
		}{{"ids", sliceBytes(ids)}, {"keep", flags}} {
			fh, err := os.Open(sh.path(me, f.ext))
			if err != nil {
				return err
			}
			err = readAtFull(fh, f.buf, 0)
			fh.Close()
			if err != nil {
				return err
			}
		}
		for i, id := range ids {
			if flags[i] == 1 {
				keep = append(keep, id)
			} else {
				remove = append(remove, id)
			}
		}
		slices.Sort(keep)
		slices.Sort(remove)
	}
	if err := dataset.WriteInt64(filepath.Join(dir, fmt.Sprintf("keep_%d.npy", me)), keep); err != nil {
		return err
	}
	return dataset.WriteInt64(filepath.Join(dir, fmt.Sprintf("remove_%d.npy", me)), remove)
}

// dedupFinish merges the parts into the sorted outputs and writes stats.
func dedupFinish(dir string, sh *shuffled, st dedupStats) error {
	for _, name := range []string{"keep", "remove"} {
		var parts []string
		for r := 0; r < sh.plan.size; r++ {
			parts = append(parts, filepath.Join(dir, "parts", fmt.Sprintf("%s_%d.npy", name, r)))
		}
		n, err := mergeSortedInt64(filepath.Join(dir, name+"_ids.npy"), parts)
		if err != nil {
			return err
		}
		if want := map[string]int64{"keep": st.Kept, "remove": st.Removed}[name]; n != want {
			return fmt.Errorf("dedup: %s parts hold %d ids, the owners counted %d", name, n, want)
		}
	}
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	return dataset.WriteFileAtomic(filepath.Join(dir, "stats.json"), append(b, '\n'))
}

// mergeSortedInt64 merges sorted 1-d int64 .npy files into one at out
// (atomically), streaming, and returns its length.
func mergeSortedInt64(out string, parts []string) (int64, error) {
	var srcs []*int64Stream
	for _, p := range parts {
		f, hd, err := dataset.OpenNPY(p)
		if err != nil {
			return 0, err
		}
		defer f.Close()
		if hd.DType != dataset.Int64 || len(hd.Shape) != 1 {
			return 0, fmt.Errorf("%s: want 1-d int64, got %s %v", p, hd.DType.Name(), hd.Shape)
		}
		srcs = append(srcs, &int64Stream{r: io.NewSectionReader(f, hd.DataOffset, hd.DataBytes()), name: p})
	}
	return mergeStreams(out, srcs, false)
}

// dedupStatsOf summarises cluster sizes and removed counts; the histogram
// lists the non-empty bins [2^b, 2^(b+1)-1] of non-empty clusters.
func dedupStatsOf(total, removed []int64, eps float64, thr float32, order string) dedupStats {
	st := dedupStats{Eps: eps, Threshold: thr, Order: order, Clusters: len(total), ClusterSizes: []dedupSizeBin{}}
	var bins [64]dedupSizeBin
	for c, m := range total {
		st.Points += m
		st.Removed += removed[c]
		if m == 0 {
			st.EmptyClusters++
			continue
		}
		st.LargestCluster = max(st.LargestCluster, m)
		b := &bins[bits.Len64(uint64(m))-1] // m in [2^b, 2^(b+1))
		b.Clusters++
		b.Points += m
		b.Removed += removed[c]
	}
	for i, b := range bins {
		if b.Clusters > 0 {
			b.Min, b.Max = int64(1)<<i, int64(1)<<i*2-1
			st.ClusterSizes = append(st.ClusterSizes, b)
		}
	}
	st.Kept = st.Points - st.Removed
	return st
}

// readAtFull fills buf from f at off; a short file is an error naming it.
func readAtFull(f *os.File, buf []byte, off int64) error {
	n, err := f.ReadAt(buf, off)
	if n == len(buf) {
		return nil
	}
	if err == nil || err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return fmt.Errorf("%s: reading %d bytes at %d: %w", f.Name(), len(buf), off, err)
}

// DedupCluster applies the dedup rule to one cluster's points x, already in
// order, streamed in blocks of dedupBlockRows as the stage does (memory
// O(block·d) beside x): keep[i] says whether point i is kept. For
// benchmarks and tools.
func DedupCluster(be kernels.Backend, x kernels.Matrix, eps float64) ([]bool, error) {
	d := x.Dim
	read := func(lo, hi, slot int) (kernels.Matrix, error) {
		if x.F16 != nil {
			return kernels.F16Matrix(x.F16[lo*d:hi*d], hi-lo, d), nil
		}
		return kernels.F32Matrix(x.F32[lo*d:hi*d], hi-lo, d), nil
	}
	best, err := dedupPrefixMax(be, x.Rows, dedupBlockRows, read)
	if err != nil {
		return nil, err
	}
	thr := float32(1 - eps)
	keep := make([]bool, len(best))
	for i, v := range best {
		keep[i] = v <= thr
	}
	return keep, nil
}
