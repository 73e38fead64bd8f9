package stages

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"hpcrun/collective"
	"hpcrun/configs"
	"hpcrun/dataset"
	"hpcrun/kernels"
	"hpcrun/synth"
)

// ---------------------------------------------------------------- helpers

var tinyWorld struct {
	once  sync.Once
	dir   string
	truth *synth.Truth
	err   error
}

// tiny returns the tiny synthetic world (written once per test binary).
func tiny(t testing.TB) (string, *synth.Truth) {
	t.Helper()
	tinyWorld.once.Do(func() {
		dir, err := os.MkdirTemp("", "hpcrun-stages-tiny-")
		if err != nil {
			tinyWorld.err = err
			return
		}
		tinyWorld.dir = dir
		tinyWorld.truth, tinyWorld.err = synth.Write(dir, synth.Presets["tiny"], 7)
	})
	if tinyWorld.err != nil {
		t.Fatal(tinyWorld.err)
	}
	return tinyWorld.dir, tinyWorld.truth
}

func TestMain(m *testing.M) {
	code := m.Run()
	if tinyWorld.dir != "" {
		os.RemoveAll(tinyWorld.dir)
	}
	os.Exit(code)
}

// tinyConfig is a kmeans+dedup experiment on the tiny world in workdir;
// extra is appended to the TOML (later keys of a section go in sets).
func tinyConfig(t testing.TB, workdir string, sets ...string) *configs.Config {
	t.Helper()
	world, _ := tiny(t)
	toml := fmt.Sprintf(`
[job]
name = "test"
workdir = %q
seed = 11
[runtime]
timeout = "20s"
block_rows = 500
[datasets.laion]
path = %q
layout = "clip-retrieval"
[kmeans]
dataset = "laion"
k = 12
max_iter = 20
[dedup]
eps = 0.124
`, workdir, filepath.Join(world, "laion"))
	cfg, err := configs.Parse([]byte(toml), "", sets)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func testLog(t testing.TB) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	return quietLog()
}

func runJob(t testing.TB, cfg *configs.Config, ranks int, only ...string) {
	t.Helper()
	if err := RunInProcess(context.Background(), cfg, ranks, only, testLog(t)); err != nil {
		t.Fatal(err)
	}
}

func readFile(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// withoutRun drops the "run" object (timings, ranks) from a JSON file.
func withoutRun(t testing.TB, path string) string {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(readFile(t, path), &m); err != nil {
		t.Fatal(err)
	}
	delete(m, "run")
	b, _ := json.Marshal(m)
	return string(b)
}

// sameOutputs fails unless the two workdirs hold byte-identical arrays and
// state files equal but for their "run" objects.
func sameOutputs(t *testing.T, a, b string, arrays []string, states []string) {
	t.Helper()
	for _, f := range arrays {
		x, y := readFile(t, filepath.Join(a, f)), readFile(t, filepath.Join(b, f))
		if !bytes.Equal(x, y) {
			t.Errorf("%s differs (%d vs %d bytes)", f, len(x), len(y))
		}
	}
	for _, f := range states {
		if x, y := withoutRun(t, filepath.Join(a, f)), withoutRun(t, filepath.Join(b, f)); x != y {
			t.Errorf("%s differs:\n%s\n%s", f, x, y)
		}
	}
}

var kmArrays = []string{"kmeans/centroids.npy", "kmeans/ids.npy", "kmeans/assignments.npy"}

func readKMState(t testing.TB, workdir string) kmState {
	t.Helper()
	var st kmState
	if err := json.Unmarshal(readFile(t, filepath.Join(workdir, "kmeans", "state.json")), &st); err != nil {
		t.Fatal(err)
	}
	return st
}

// ---------------------------------------------------------------- unit tests

func TestKMSamplerIsSeededPermutation(t *testing.T) {
	const n = 1000
	a, b := newKMSampler(n, 5), newKMSampler(n, 5)
	seen := map[int64]bool{}
	for i := 0; i < n; i++ {
		x, ok := a.draw()
		y, _ := b.draw()
		if !ok || x != y || x < 0 || x >= n || seen[x] {
			t.Fatalf("draw %d: %d (%v), %d; seen %v", i, x, ok, y, seen[x])
		}
		seen[x] = true
	}
	if _, ok := a.draw(); ok {
		t.Fatal("drew more than n rows")
	}
	c := newKMSampler(n, 6)
	same := 0
	a = newKMSampler(n, 5)
	for i := 0; i < 50; i++ {
		x, _ := a.draw()
		y, _ := c.draw()
		if x == y {
			same++
		}
	}
	if same > 5 {
		t.Fatalf("seeds 5 and 6 agree on %d of 50 draws", same)
	}
}

// A dataset of 20 points in 10 near-duplicate pairs: the init must replace
// every centre too similar to an earlier one, and the result must be the
// same whatever rows the fetch is asked for at once.
func TestKMInitReplacesNearDuplicates(t *testing.T) {
	const d, pairs = 16, 10
	x := make([]float32, 2*pairs*d)
	for p := 0; p < pairs; p++ {
		for c := 0; c < 2; c++ {
			row := x[(2*p+c)*d : (2*p+c+1)*d]
			row[p] = 1
			row[pairs+c%6] = 0.05 // the copy differs a little
			norm(row)
		}
	}
	fetches := 0
	fetch := func(rows []int64) ([]float32, error) {
		fetches++
		out := make([]float32, 0, len(rows)*d)
		for _, r := range rows {
			out = append(out, x[r*d:(r+1)*d]...)
		}
		return out, nil
	}
	const k = 8
	c, rounds, replaced, err := kmInit(kernels.NewCPU(1), fetch, 2*pairs, k, d, 0.9, 3)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < k; i++ {
		for j := 0; j < i; j++ {
			if s := cosine(c[i*d:(i+1)*d], c[j*d:(j+1)*d]); s > 0.9 {
				t.Fatalf("centres %d and %d have cosine %.4f > 0.9", i, j, s)
			}
		}
	}
	if replaced == 0 || rounds < 2 || fetches != rounds {
		t.Fatalf("rounds %d, replaced %d, fetches %d: the seed should have drawn a pair", rounds, replaced, fetches)
	}
	// every centre is a row of x
	for i := 0; i < k; i++ {
		found := false
		for r := 0; r < 2*pairs && !found; r++ {
			found = slices.Equal(c[i*d:(i+1)*d], x[r*d:(r+1)*d])
		}
		if !found {
			t.Fatalf("centre %d is not a data row", i)
		}
	}
	// more centres than distinct directions: a clear error
	if _, _, _, err := kmInit(kernels.NewCPU(1), fetch, 2*pairs, pairs+1, d, 0.9, 3); err == nil || !strings.Contains(err.Error(), "init_dup_threshold") {
		t.Fatalf("want an init_dup_threshold error, got %v", err)
	}
}

func norm(v []float32) {
	var s float64
	for _, x := range v {
		s += float64(x) * float64(x)
	}
	for i := range v {
		v[i] = float32(float64(v[i]) / math.Sqrt(s))
	}
}

func cosine(a, b []float32) float64 {
	var ab, aa, bb float64
	for i := range a {
		ab += float64(a[i]) * float64(b[i])
		aa += float64(a[i]) * float64(a[i])
		bb += float64(b[i]) * float64(b[i])
	}
	return ab / math.Sqrt(aa*bb)
}

// An empty cluster keeps its centre; the others become their exact mean.
func TestKMUpdateEmptyClusterKeepsCentre(t *testing.T) {
	const d = 3
	old := []float32{1, 0, 0, 0, 1, 0, 0, 0, 1}
	acc := kernels.NewAccum(3, d)
	add := func(c int, x ...float32) {
		acc.Counts[c]++
		for k, v := range x {
			acc.Sums[c*d+k] += kernels.ToFixed(v)
		}
	}
	add(0, 0.5, 0.5, 0)
	add(0, 0.25, 0, 0.75)
	add(2, 0.1, 0.2, 0.3)
	got := kmUpdate(old, acc)
	want := []float32{0.375, 0.25, 0.375, 0, 1, 0, float32(kernels.FromFixed(kernels.ToFixed(0.1))), float32(kernels.FromFixed(kernels.ToFixed(0.2))), float32(kernels.FromFixed(kernels.ToFixed(0.3)))}
	if !slices.Equal(got, want) {
		t.Fatalf("update: got %v, want %v", got, want)
	}
	if old[4] != 1 {
		t.Fatal("update changed its input")
	}
}

// ---------------------------------------------------------------- stage tests

// The stage against a plain reference: the centroids are the means of the
// points of each cluster as assigned, and (converged) every point's
// assignment is its nearest centroid, except for float32 near-ties.
func TestKMeansAgainstReference(t *testing.T) {
	work := t.TempDir()
	cfg := tinyConfig(t, work)
	runJob(t, cfg, 2, "kmeans")
	st := readKMState(t, work)
	if !st.Converged || st.Iterations < 2 || st.ChangeRatio[0] != 1 || len(st.ChangeRatio) != st.Iterations {
		t.Fatalf("state: %+v", st)
	}
	world, _ := tiny(t)
	ds, err := dataset.Open("laion", filepath.Join(world, "laion"), dataset.Options{Layout: dataset.ClipRetrieval})
	if err != nil {
		t.Fatal(err)
	}
	x, err := ds.ReadAll(1000)
	if err != nil {
		t.Fatal(err)
	}
	wantIDs, _ := ds.AllIDs()
	ids, err := dataset.ReadInt64(filepath.Join(work, "kmeans", "ids.npy"))
	if err != nil || !slices.Equal(ids, wantIDs) {
		t.Fatalf("ids.npy: %v (%d ids, want %d)", err, len(ids), len(wantIDs))
	}
	assign, err := dataset.ReadInt32(filepath.Join(work, "kmeans", "assignments.npy"))
	if err != nil {
		t.Fatal(err)
	}
	c, shape, err := dataset.ReadFloat32(filepath.Join(work, "kmeans", "centroids.npy"))
	if err != nil {
		t.Fatal(err)
	}
	k, d := cfg.KMeans.K, ds.Dim
	if !slices.Equal(shape, []int{k, d}) || len(assign) != int(ds.Rows) {
		t.Fatalf("shapes: centroids %v, %d assignments", shape, len(assign))
	}
	// means
	sum := make([]float64, k*d)
	cnt := make([]int, k)
	for i, a := range assign {
		cnt[a]++
		for j := 0; j < d; j++ {
			sum[int(a)*d+j] += float64(x[i*d+j])
		}
	}
	for ci := 0; ci < k; ci++ {
		if cnt[ci] == 0 {
			t.Fatalf("cluster %d empty on the tiny world", ci)
		}
		for j := 0; j < d; j++ {
			if m := sum[ci*d+j] / float64(cnt[ci]); math.Abs(m-float64(c[ci*d+j])) > 1e-6 {
				t.Fatalf("centroid %d[%d] = %g, mean of its points %g", ci, j, c[ci*d+j], m)
			}
		}
	}
	// nearest centroid (L2): argmax x·c - |c|²/2 in float64
	ties := 0
	for i := range assign {
		best, second, arg := math.Inf(-1), math.Inf(-1), -1
		for ci := 0; ci < k; ci++ {
			var dot, cc float64
			for j := 0; j < d; j++ {
				dot += float64(x[i*d+j]) * float64(c[ci*d+j])
				cc += float64(c[ci*d+j]) * float64(c[ci*d+j])
			}
			if s := dot - cc/2; s > best {
				best, second, arg = s, best, ci
			} else if s > second {
				second = s
			}
		}
		if arg != int(assign[i]) {
			if best-second > 1e-5 {
				t.Fatalf("row %d assigned %d, nearest is %d by %g", i, assign[i], arg, best-second)
			}
			ties++
		}
	}
	t.Logf("%d iterations, ratios %v, %d near-ties", st.Iterations, st.ChangeRatio, ties)
}

// 1 and 3 ranks (and cosine) give the same bytes; a finished stage skips.
func TestKMeansSameForAnyRanks(t *testing.T) {
	for _, metric := range []string{"l2", "cosine"} {
		one, three := t.TempDir(), t.TempDir()
		set := []string{"kmeans.metric=" + metric, "kmeans.max_iter=6"}
		runJob(t, tinyConfig(t, one, set...), 1, "kmeans")
		// other ranks, threads (2 vs 1) and blocks: the same bytes
		runJob(t, tinyConfig(t, three, append(set, "runtime.block_rows=333")...), 3, "kmeans")
		sameOutputs(t, one, three, kmArrays, []string{"kmeans/state.json"})
		if st := readKMState(t, three); st.Metric != metric || st.Run.Ranks != 3 {
			t.Fatalf("state: %+v", st)
		}
		if metric == "l2" {
			// nothing changed: skipped, outputs untouched
			before, _ := os.Stat(filepath.Join(three, "kmeans", "assignments.npy"))
			runJob(t, tinyConfig(t, three, append(set, "runtime.block_rows=333")...), 2, "kmeans")
			after, _ := os.Stat(filepath.Join(three, "kmeans", "assignments.npy"))
			var rep Report
			json.Unmarshal(readFile(t, filepath.Join(three, "report.json")), &rep)
			if rep.Stages["kmeans"].Status != "skipped" || !after.ModTime().Equal(before.ModTime()) {
				t.Fatalf("rerun: status %q, assignments rewritten: %v", rep.Stages["kmeans"].Status, !after.ModTime().Equal(before.ModTime()))
			}
			// a changed parameter reruns
			runJob(t, tinyConfig(t, three, "kmeans.metric=l2", "kmeans.max_iter=5"), 2, "kmeans")
			if st := readKMState(t, three); st.Iterations > 5 {
				t.Fatalf("rerun with max_iter=5 ran %d iterations", st.Iterations)
			}
		}
	}
}

// runKilled runs the job on 3 in-process ranks and kills rank 1 in the
// given iteration; it returns the job's error.
func runKilled(t *testing.T, cfg *configs.Config, only []string, killIter int) error {
	t.Helper()
	const ranks = 3
	net := collective.NewNetwork(ranks, collective.NetworkOptions{Timeout: cfg.Runtime.Timeout.Duration})
	defer net.Close()
	comms := net.Comms()
	kmeansTestHook = func(rank, iter int) {
		if rank == 1 && iter == killIter {
			net.Kill(1)
		}
	}
	defer func() { kmeansTestHook = nil }()
	errs := make([]error, ranks)
	var wg sync.WaitGroup
	for r := 0; r < ranks; r++ {
		wg.Add(1)
		go func(r int) {
			defer wg.Done()
			env := &Env{Cfg: cfg, Log: testLog(t).With("rank", r), Comm: comms[r], Threads: 1}
			errs[r] = Run(context.Background(), env, only)
			if errs[r] != nil {
				comms[r].Abort(errs[r])
			}
		}(r)
	}
	wg.Wait()
	return firstErr(errs)
}

func firstErr(errs []error) error {
	for r, err := range errs {
		if err != nil {
			return fmt.Errorf("rank %d: %w", r, err)
		}
	}
	return nil
}

// A rank killed in k-means iteration 3: the job fails; started again it
// resumes from the checkpoint of iteration 2 and ends (kmeans and dedup)
// with exactly the outputs of an uninterrupted run.
func TestKMeansKilledRankResumes(t *testing.T) {
	clean, killed := t.TempDir(), t.TempDir()
	set := []string{"kmeans.max_iter=8", "kmeans.change_lower_bound=0"}
	runJob(t, tinyConfig(t, clean, set...), 3)
	cfg := tinyConfig(t, killed, set...)
	cfg.Runtime.Timeout = configs.Duration{Duration: 2e9}
	if err := runKilled(t, cfg, nil, 3); err == nil {
		t.Fatal("the job with a killed rank succeeded")
	}
	if _, err := os.Stat(filepath.Join(killed, "kmeans", "centroids.npy")); err == nil {
		t.Fatal("a failed run left centroids.npy")
	}
	var ck kmCheckpoint
	if err := json.Unmarshal(readFile(t, filepath.Join(killed, "kmeans", "checkpoint", "state.json")), &ck); err != nil || ck.State.Iterations != 2 {
		t.Fatalf("checkpoint after the kill: %v, iteration %d (want 2)", err, ck.State.Iterations)
	}
	var seen []int
	var mu sync.Mutex
	kmeansTestHook = func(rank, iter int) {
		if rank == 0 {
			mu.Lock()
			seen = append(seen, iter)
			mu.Unlock()
		}
	}
	defer func() { kmeansTestHook = nil }()
	runJob(t, tinyConfig(t, killed, set...), 3)
	if len(seen) == 0 || seen[0] != 3 {
		t.Fatalf("restart ran iterations %v, want 3 onwards", seen)
	}
	sameOutputs(t, clean, killed, append(slices.Clone(kmArrays), ddArrays...), []string{"kmeans/state.json", "dedup/stats.json"})
	if st := readKMState(t, killed); st.Run.ResumedFrom != 2 {
		t.Fatalf("resumed_from = %d", st.Run.ResumedFrom)
	}
	if _, err := os.Stat(filepath.Join(killed, "kmeans", "checkpoint")); err == nil {
		t.Fatal("checkpoint left behind after a finished run")
	}
}
