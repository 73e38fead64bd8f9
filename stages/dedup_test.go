package stages

import (
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"hpcrun/dataset"
	"hpcrun/kernels"
)

// python returns a python3 with numpy (skips, or fails when
// HPCRUN_REQUIRE_REFS=1, when there is none).
func python(t testing.TB) string {
	t.Helper()
	for _, p := range []string{os.Getenv("HPCRUN_PYTHON"), "/usr/bin/python3", "python3"} {
		if p != "" && exec.Command(p, "-c", "import numpy").Run() == nil {
			return p
		}
	}
	if os.Getenv("HPCRUN_REQUIRE_REFS") == "1" {
		t.Fatal("python3 with numpy is required (apt-get install python3-numpy)")
	}
	t.Skip("no python3 with numpy (apt-get install python3-numpy)")
	return ""
}

// clusterData makes m unit vectors of dimension d around a few directions,
// with every 5th point a near-copy (cosine about 0.999) of an earlier one.
func clusterData(m, d int, seed uint64) []float32 {
	rng := rand.New(rand.NewPCG(seed, 1))
	x := make([]float32, m*d)
	for i := 0; i < m; i++ {
		row := x[i*d : (i+1)*d]
		if i%5 == 4 {
			src := x[rng.IntN(i)*d:]
			for k := range row {
				row[k] = src[k] + float32(rng.NormFloat64()*0.04/math.Sqrt(float64(d)))
			}
		} else {
			for k := range row {
				row[k] = float32(rng.NormFloat64())
			}
			row[i%3] += 3
		}
		norm(row)
	}
	return x
}

func matrixReader(x []float32, d int) func(lo, hi, slot int) (kernels.Matrix, error) {
	return func(lo, hi, slot int) (kernels.Matrix, error) {
		return kernels.F32Matrix(x[lo*d:hi*d], hi-lo, d), nil
	}
}

// The streamed prefix max equals one PrefixMax over the whole cluster, bit
// for bit, for any block size; and its keep flags equal the plain
// reference's (float64) except within 1e-5 of the threshold.
func TestDedupPrefixMaxStreamed(t *testing.T) {
	const m, d, eps = 500, 24, 0.3
	x := clusterData(m, d, 3)
	be := kernels.NewCPU(2)
	whole, err := be.PrefixMax(kernels.F32Matrix(x, m, d))
	if err != nil {
		t.Fatal(err)
	}
	for _, B := range []int{7, 64, 499, 500, 4096} {
		read := func(lo, hi, slot int) (kernels.Matrix, error) {
			if hi-lo > B || slot < 0 || slot > 1 { // memory: two blocks of at most B points
				t.Fatalf("B=%d: read [%d,%d) into slot %d", B, lo, hi, slot)
			}
			return matrixReader(x, d)(lo, hi, slot)
		}
		got, err := dedupPrefixMax(be, m, B, read)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, whole.Val) {
			t.Fatalf("B=%d: streamed prefix max differs from PrefixMax", B)
		}
	}
	ref, refMax := dedupRef(x, m, d, eps)
	thr := float32(1 - eps)
	removed := 0
	for i, v := range whole.Val {
		keep := v <= thr
		if keep != ref[i] && math.Abs(refMax[i]-float64(thr)) > 1e-5 {
			t.Fatalf("point %d: fast keeps=%v (max %v), reference keeps=%v (max %v)", i, keep, v, ref[i], refMax[i])
		}
		if !keep {
			removed++
		}
	}
	keep, err := DedupCluster(be, kernels.F32Matrix(x, m, d), eps)
	if err != nil {
		t.Fatal(err)
	}
	for i, v := range whole.Val {
		if keep[i] != (v <= thr) {
			t.Fatalf("DedupCluster: point %d keep=%v, max %v", i, keep[i], v)
		}
	}
	if removed < m/5 || removed == m {
		t.Fatalf("%d of %d removed: the data should plant about a fifth", removed, m)
	}
}

// The paper's rule: a point is dropped when it is too similar to an EARLIER
// point, even one that was itself dropped. In the chain a, b, c (a~b, b~c,
// a not ~ c) both b and c go; a rule comparing with kept points only would
// keep c.
func TestDedupEarlierPointEvenIfDropped(t *testing.T) {
	const d = 2
	ang := func(deg float64) []float32 {
		r := deg * math.Pi / 180
		return []float32{float32(math.Cos(r)), float32(math.Sin(r))}
	}
	// cos 10° = 0.985 > 0.95 (eps 0.05), cos 20° = 0.940 < 0.95
	x := slices.Concat(ang(0), ang(10), ang(20))
	want := []bool{true, false, false}
	if got, _ := dedupRef(x, 3, d, 0.05); !slices.Equal(got, want) {
		t.Fatalf("reference keeps %v, want %v", got, want)
	}
	best, err := dedupPrefixMax(kernels.NewCPU(1), 3, 1, matrixReader(x, d))
	if err != nil {
		t.Fatal(err)
	}
	for i, v := range best {
		if keep := v <= float32(0.95); keep != want[i] {
			t.Fatalf("point %d: keep=%v (max %v), want %v", i, keep, v, want[i])
		}
	}
}

func TestDedupOrders(t *testing.T) {
	ids := []int64{40, 10, 30, 20, 10}
	dist := []float64{0.5, 0.5, 0.9, 0.1, 0.2}
	if got := dedupOrder("hard", ids, dist, 1); !slices.Equal(got, []int{2, 1, 0, 4, 3}) {
		t.Fatalf("hard: %v", got)
	}
	if got := dedupOrder("easy", ids, dist, 1); !slices.Equal(got, []int{3, 4, 1, 0, 2}) {
		t.Fatalf("easy: %v", got)
	}
	a, b := dedupOrder("random", ids, nil, 1), dedupOrder("random", ids, nil, 1)
	if !slices.Equal(a, b) {
		t.Fatal("random order is not deterministic")
	}
	sorted := slices.Clone(a)
	slices.Sort(sorted)
	if !slices.Equal(sorted, []int{0, 1, 2, 3, 4}) {
		t.Fatalf("random order is not a permutation: %v", a)
	}
	// the same id sorts by index (the two 10s keep their file order)
	if slices.Index(a, 1) > slices.Index(a, 4) {
		t.Fatalf("random: equal ids out of file order: %v", a)
	}
}

func TestPlanShuffleBalances(t *testing.T) {
	counts := [][]int64{
		{100, 3, 0, 40, 5, 60},
		{0, 2, 0, 50, 5, 40},
	}
	p := planShuffle(counts)
	if !slices.Equal(p.total, []int64{100, 5, 0, 90, 10, 100}) {
		t.Fatalf("totals %v", p.total)
	}
	// by cost: 0 (100) and 5 (100) first, to ranks 0 and 1; then 3 (90) to
	// the lighter (tie: rank 0), ...
	if p.owner[0] == p.owner[5] || p.owner[0] != 0 || p.owner[3] != 0 {
		t.Fatalf("owners %v", p.owner)
	}
	var n int64
	for o := 0; o < 2; o++ {
		var pos int64
		for _, c := range p.clusters[o] {
			if p.owner[c] != o || p.start[c] != pos {
				t.Fatalf("cluster %d: owner %d, start %d, want %d", c, p.owner[c], p.start[c], pos)
			}
			pos += p.total[c]
		}
		if pos != p.ownerRows[o] {
			t.Fatalf("owner %d: %d rows, plan says %d", o, pos, p.ownerRows[o])
		}
		n += pos
	}
	if n != 305 {
		t.Fatalf("%d rows placed, want 305", n)
	}
}

func TestMergeSortedInt64(t *testing.T) {
	dir := t.TempDir()
	parts := [][]int64{{1, 5, 9}, {}, {2, 3, 5, 100}, {-4}}
	var names []string
	var want []int64
	for i, p := range parts {
		n := filepath.Join(dir, fmt.Sprintf("p%d.npy", i))
		if err := dataset.WriteInt64(n, p); err != nil {
			t.Fatal(err)
		}
		names = append(names, n)
		want = append(want, p...)
	}
	slices.Sort(want)
	out := filepath.Join(dir, "out.npy")
	if n, err := mergeSortedInt64(out, names); err != nil || n != int64(len(want)) {
		t.Fatal(n, err)
	}
	got, err := dataset.ReadInt64(out)
	if err != nil || !slices.Equal(got, want) {
		t.Fatalf("merged %v (%v), want %v", got, err, want)
	}
	ref := filepath.Join(dir, "ref.npy")
	dataset.WriteInt64(ref, want)
	if string(readFile(t, ref)) != string(readFile(t, out)) {
		t.Fatal("merged file differs from dataset.WriteInt64's bytes")
	}
}

// ---------------------------------------------------------------- stage tests

var ddArrays = []string{"dedup/keep_ids.npy", "dedup/remove_ids.npy"}

func readDedup(t testing.TB, work string) (keep, remove []int64, st dedupStats) {
	t.Helper()
	var err error
	if keep, err = dataset.ReadInt64(filepath.Join(work, "dedup", "keep_ids.npy")); err != nil {
		t.Fatal(err)
	}
	if remove, err = dataset.ReadInt64(filepath.Join(work, "dedup", "remove_ids.npy")); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(readFile(t, filepath.Join(work, "dedup", "stats.json")), &st); err != nil {
		t.Fatal(err)
	}
	return
}

// On the tiny world: dedup removes exactly the planted near-duplicates,
// keep and remove partition the ids, 1 and 3 ranks give the same bytes,
// and numpy's SemDeDup on the same assignments agrees (at the default eps
// and at a large eps that removes many unplanted points too).
func TestDedupTinyWorld(t *testing.T) {
	world, truth := tiny(t)
	old := dedupBlockRows
	dedupBlockRows = 64 // several blocks per cluster
	defer func() { dedupBlockRows = old }()

	one, three, four := t.TempDir(), t.TempDir(), t.TempDir()
	runJob(t, tinyConfig(t, one), 1)
	runJob(t, tinyConfig(t, three, "runtime.block_rows=333"), 3)
	runJob(t, tinyConfig(t, four, "runtime.block_rows=1000"), 4) // more ranks than shards: one reads nothing
	all := append(slices.Clone(kmArrays), ddArrays...)
	states := []string{"kmeans/state.json", "dedup/stats.json"}
	sameOutputs(t, one, three, all, states)
	sameOutputs(t, one, four, all, states)

	keep, remove, st := readDedup(t, three)
	want, err := dataset.ReadInt64(filepath.Join(world, "truth", "dedup_removed_ids.npy"))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(remove, want) {
		t.Fatalf("removed %d ids, planted %d:\nremoved %v\nplanted %v", len(remove), len(want), remove, want)
	}
	union := slices.Concat(keep, remove)
	slices.Sort(union)
	ids, _ := dataset.ReadInt64(filepath.Join(three, "kmeans", "ids.npy"))
	slices.Sort(ids)
	if !slices.Equal(union, ids) || !slices.IsSorted(keep) {
		t.Fatal("keep and remove do not partition the ids")
	}
	if st.Points != int64(truth.BaseRows) || st.Kept != int64(len(keep)) || st.Removed != int64(len(want)) || st.Clusters != 12 {
		t.Fatalf("stats %+v", st)
	}
	var hist, histRemoved int64
	for _, b := range st.ClusterSizes {
		hist += b.Points
		histRemoved += b.Removed
		if b.Clusters == 0 || b.Points < b.Min*int64(b.Clusters) || b.Points > b.Max*int64(b.Clusters) {
			t.Fatalf("histogram bin %+v", b)
		}
	}
	if hist != st.Points || histRemoved != st.Removed {
		t.Fatalf("histogram holds %d points, %d removed, of %d, %d", hist, histRemoved, st.Points, st.Removed)
	}
	if _, err := os.Stat(filepath.Join(three, "dedup", "shuffle")); err == nil {
		t.Fatal("shuffle files left behind")
	}

	// numpy's SemDeDup on the same assignments, here and with eps = 0.45
	py := python(t)
	check := func(work string, eps float64, remove []int64) {
		t.Helper()
		cmd := exec.Command(py, "../scripts/dedup_ref.py", "check", work, filepath.Join(world, "laion", "img_emb"), fmt.Sprint(eps))
		cmd.Stderr = os.Stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatal(err)
		}
		var ref struct{ Removed, Near []int64 }
		if err := json.Unmarshal(out, &ref); err != nil {
			t.Fatal(err)
		}
		var diff []int64
		for _, id := range symmetricDiff(remove, ref.Removed) {
			if !slices.Contains(ref.Near, id) {
				diff = append(diff, id)
			}
		}
		if len(diff) > 0 {
			t.Fatalf("eps %g: %d ids removed by only one of hpcrun (%d) and numpy (%d): %v", eps, len(diff), len(remove), len(ref.Removed), diff)
		}
		t.Logf("eps %g: hpcrun and numpy remove the same %d ids (%d near the threshold)", eps, len(remove), len(ref.Near))
	}
	check(three, 0.124, remove)
	runJob(t, tinyConfig(t, three, "dedup.eps=0.45"), 2, "dedup")
	_, remove6, _ := readDedup(t, three)
	if len(remove6) < 3*len(remove) {
		t.Fatalf("eps 0.45 removes %d, eps 0.124 %d: want many more", len(remove6), len(remove))
	}
	check(three, 0.45, remove6)
}

func symmetricDiff(a, b []int64) []int64 {
	in := map[int64]int{}
	for _, v := range a {
		in[v] |= 1
	}
	for _, v := range b {
		in[v] |= 2
	}
	var out []int64
	for v, f := range in {
		if f != 3 {
			out = append(out, v)
		}
	}
	slices.Sort(out)
	return out
}

// The other orders against the plain reference on the same shuffle: every
// cluster's points ordered as dedupOrder says, then dedupRef.
func TestDedupOrdersMatchReference(t *testing.T) {
	world, _ := tiny(t)
	work := t.TempDir()
	runJob(t, tinyConfig(t, work), 2, "kmeans")
	ds, err := dataset.Open("laion", filepath.Join(world, "laion"), dataset.Options{Layout: dataset.ClipRetrieval})
	if err != nil {
		t.Fatal(err)
	}
	x, _ := ds.ReadAll(1000)
	ids, _ := dataset.ReadInt64(filepath.Join(work, "kmeans", "ids.npy"))
	assign, _ := dataset.ReadInt32(filepath.Join(work, "kmeans", "assignments.npy"))
	c, _, _ := dataset.ReadFloat32(filepath.Join(work, "kmeans", "centroids.npy"))
	d := ds.Dim
	const eps = 0.45
	for _, order := range []string{"hard", "easy", "random"} {
		runJob(t, tinyConfig(t, work, "dedup.order="+order, fmt.Sprintf("dedup.eps=%g", eps)), 3, "dedup")
		_, remove, st := readDedup(t, work)
		if st.Order != order {
			t.Fatalf("stats order %q", st.Order)
		}
		var want, near []int64
		for ci := 0; ci < 12; ci++ {
			var rows []int
			for i, a := range assign {
				if int(a) == ci {
					rows = append(rows, i)
				}
			}
			cids := make([]int64, len(rows))
			dist := make([]float64, len(rows))
			for j, r := range rows {
				cids[j] = ids[r]
				for k := 0; k < d; k++ {
					diff := float64(x[r*d+k]) - float64(c[ci*d+k])
					dist[j] += diff * diff
				}
			}
			perm := dedupOrder(order, cids, dist, 11)
			xs := make([]float32, 0, len(rows)*d)
			for _, j := range perm {
				xs = append(xs, x[rows[j]*d:(rows[j]+1)*d]...)
			}
			keep, best := dedupRef(xs, len(rows), d, eps)
			for j := range keep {
				if !keep[j] {
					want = append(want, cids[perm[j]])
				}
				if math.Abs(best[j]-float64(float32(1-eps))) < 1e-5 {
					near = append(near, cids[perm[j]])
				}
			}
		}
		slices.Sort(want)
		for _, id := range symmetricDiff(remove, want) {
			if !slices.Contains(near, id) { // float32 vs float64 may differ only at the threshold
				t.Fatalf("order %s: id %d removed by only one of hpcrun (%d) and the reference (%d)", order, id, len(remove), len(want))
			}
		}
		t.Logf("order %s: %d removed", order, len(remove))
	}
}

// A run stopped part way through the dedup resumes: the shuffle is not
// redone, finished clusters are not recomputed, and the outputs equal a
// clean run's.
func TestDedupResumes(t *testing.T) {
	clean, broken := t.TempDir(), t.TempDir()
	runJob(t, tinyConfig(t, clean), 3)
	runJob(t, tinyConfig(t, broken), 3, "kmeans")
	stopped := map[int]bool{}
	dedupTestHook = func(rank, cluster int) error {
		if rank != 1 {
			return nil
		}
		if len(stopped) == 2 {
			return fmt.Errorf("test stop before cluster %d", cluster)
		}
		stopped[cluster] = true
		return nil
	}
	defer func() { dedupTestHook = nil }()
	saved := dedupProgressEvery
	dedupProgressEvery = 0 // record progress after every cluster
	defer func() { dedupProgressEvery = saved }()
	err := RunInProcess(t.Context(), tinyConfig(t, broken), 3, []string{"dedup"}, testLog(t))
	if err == nil || !strings.Contains(err.Error(), "test stop") {
		t.Fatalf("want the test stop, got %v", err)
	}
	if _, err := os.Stat(filepath.Join(broken, "dedup", "keep_ids.npy")); err == nil {
		t.Fatal("an interrupted run left keep_ids.npy")
	}
	var again []int
	dedupTestHook = func(rank, cluster int) error {
		if rank == 1 {
			again = append(again, cluster)
		}
		return nil
	}
	runJob(t, tinyConfig(t, broken), 3, "dedup")
	for _, c := range again {
		if stopped[c] {
			t.Fatalf("cluster %d was done before the stop and was recomputed", c)
		}
	}
	sameOutputs(t, clean, broken, ddArrays, []string{"dedup/stats.json"})
	_, _, st := readDedup(t, broken)
	if !st.Run.ShuffleSkipped || len(st.Run.ResumedAt) != 3 || st.Run.ResumedAt[1] != 2 {
		t.Fatalf("run info %+v: want the shuffle reused and rank 1 resumed at 2 clusters", st.Run)
	}
}
