package report

// A fixture workdir with every kind of output the report reads, written in
// the SPEC formats with the dataset package, and the numbers it holds so
// tests can check the report against them.

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"hpcrun/configs"
	"hpcrun/dataset"
)

type fixture struct {
	cfg     *configs.Config
	work    string
	nnBase  map[string][]float32 // eval -> top-1 similarity to laion
	nnRef   map[string][]float32 // eval -> top-1 similarity to imagenet-train (the thresholds)
	pruned  map[string][]int64   // eval set or "combined" -> pruned ids
	baseIDs []int64              // base ids prune looked at
	sizes   []int64              // k-means cluster sizes
	kept    map[string]int64     // relative file -> ids kept
}

var fixtureEvals = []string{"imagenet-val", "imagenet-sketch"}

const fixtureConfig = `
[job]
name = "fixture"
workdir = "work"
seed = 7

[datasets.laion]
path = "data/laion"
layout = "clip-retrieval"
id_column = "image_path"
[datasets.imagenet-train]
path = "data/imagenet-train"
[datasets.imagenet-val]
path = "data/imagenet-val"
[datasets.imagenet-sketch]
path = "data/imagenet-sketch"

[kmeans]
dataset = "laion"
k = 6
max_iter = 10
change_lower_bound = 1e-3

[dedup]
eps = 0.1

[sims]
base = ["laion", "imagenet-train"]
eval = ["imagenet-val", "imagenet-sketch"]
k = 5

[prune]
base = "laion"
reference = "imagenet-train"
eval = ["imagenet-val", "imagenet-sketch"]
random_sizes = [10, 40]
near_far_sizes = [10]

[zeroshot]
eval = ["imagenet-val", "imagenet-sketch"]
class_matrix = "data/class_matrix.npy"
`

// loadConfig writes body as dir/exp.toml and loads it (paths are relative
// to dir).
func loadConfig(t *testing.T, dir, body string) *configs.Config {
	t.Helper()
	p := filepath.Join(dir, "exp.toml")
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := configs.Load(p, nil)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func writeJSON(t *testing.T, path string, v any) {
	t.Helper()
	b, err := json.MarshalIndent(v, "", "  ")
	must(t, err)
	must(t, os.MkdirAll(filepath.Dir(path), 0o755))
	must(t, os.WriteFile(path, b, 0o644))
}

// newFixture writes the full fixture workdir under dir.
func newFixture(t *testing.T, dir string) *fixture {
	t.Helper()
	f := &fixture{cfg: loadConfig(t, dir, fixtureConfig), nnBase: map[string][]float32{}, nnRef: map[string][]float32{},
		pruned: map[string][]int64{}, kept: map[string]int64{}}
	f.work = f.cfg.Job.Workdir
	at := func(rel ...string) string {
		p := filepath.Join(append([]string{f.work}, rel...)...)
		must(t, os.MkdirAll(filepath.Dir(p), 0o755))
		return p
	}
	rng := rand.New(rand.NewPCG(1, 2))

	// sims: [q, 5] descending rows; imagenet-val has both bases, sketch
	// only laion in sims/ (its reference comes from prune's thresholds)
	for e, ev := range fixtureEvals {
		q := 200 - 50*e
		base, ref := make([]float32, q), make([]float32, q)
		for i := range base {
			base[i] = float32(0.45 + 0.5*rng.Float64())
			ref[i] = float32(0.55 + 0.3*rng.Float64())
		}
		if e == 0 {
			base[0] = 1 // an exact duplicate of an eval image in the base
		}
		f.nnBase[ev], f.nnRef[ev] = base, ref
		must(t, dataset.WriteFloat32(at("sims", "laion", ev, "topk_sims.npy"), topk(base, 5), len(base), 5))
		if e == 0 {
			must(t, dataset.WriteFloat32(at("sims", "imagenet-train", ev, "topk_sims.npy"), topk(ref, 5), len(ref), 5))
		}
		must(t, dataset.WriteFloat32(at("prune", ev, "thresholds.npy"), ref))
	}

	// prune: base ids 0..999 (after dedup); pruned: multiples of 37 / 53
	for i := int64(0); i < 1000; i++ {
		f.baseIDs = append(f.baseIDs, i)
	}
	var all []int64
	for e, ev := range fixtureEvals {
		step := []int64{37, 53}[e]
		var pr []int64
		for i := int64(0); i < 1000; i += step {
			pr = append(pr, i)
		}
		f.pruned[ev] = pr
		all = append(all, pr...)
	}
	slices.Sort(all)
	f.pruned["combined"] = slices.Compact(all)
	for set, pr := range f.pruned {
		keep := difference(f.baseIDs, pr)
		must(t, dataset.WriteInt64(at("prune", set, "prune_ids.npy"), pr))
		must(t, dataset.WriteInt64(at("prune", set, "keep_ids.npy"), keep))
		f.kept[filepath.Join("prune", set, "keep_ids.npy")] = int64(len(keep))
	}
	for name, n := range map[string]int{"random_10": 10, "random_40": 40, "near_imagenet-val_10": 10,
		"far_imagenet-val_10": 10, "near_imagenet-sketch_10": 10, "far_imagenet-sketch_10": 7} {
		must(t, dataset.WriteInt64(at("prune", "subsets", name+".npy"), f.baseIDs[:n]))
		f.kept[filepath.Join("prune", "subsets", name+".npy")] = int64(n)
	}

	// kmeans: 6 clusters of 1020 points, one empty
	f.sizes = []int64{500, 250, 130, 70, 70, 0}
	var asg []int32
	for c, n := range f.sizes {
		for j := int64(0); j < n; j++ {
			asg = append(asg, int32(c))
		}
	}
	rng.Shuffle(len(asg), func(i, j int) { asg[i], asg[j] = asg[j], asg[i] })
	must(t, dataset.WriteInt32(at("kmeans", "assignments.npy"), asg))
	writeJSON(t, at("kmeans", "state.json"), map[string]any{
		"iterations": 6, "change_ratio": []float64{1, 0.31, 0.052, 0.0041, 0.00052, 0}, "empty_clusters": []int{0, 0, 1, 1, 1, 1},
		"seed": 7, "k": 6, "dim": 8, "points": 1020, "metric": "l2", "converged": true})

	// dedup: 20 of 1020 removed, kept 1000 (the ids prune looked at)
	must(t, dataset.WriteInt64(at("dedup", "keep_ids.npy"), f.baseIDs))
	f.kept["dedup/keep_ids.npy"] = 1000
	writeJSON(t, at("dedup", "stats.json"), map[string]any{
		"points": 1020, "kept": 1000, "removed": 20, "eps": 0.1, "threshold": 0.9, "order": "file", "clusters": 6,
		"empty_clusters": 1, "largest_cluster": 500,
		"cluster_size_histogram": []map[string]any{
			{"min": 64, "max": 127, "clusters": 2, "points": 140, "removed": 1},
			{"min": 128, "max": 255, "clusters": 1, "points": 130, "removed": 3},
			{"min": 256, "max": 511, "clusters": 2, "points": 750, "removed": 16},
		}})

	writeJSON(t, at("zeroshot", "accuracy.json"), map[string]any{
		"imagenet-val":    map[string]any{"top1": 0.8125, "top5": 0.96875, "n": 200, "classes": 10},
		"imagenet-sketch": map[string]any{"top1": 0.40666666, "top5": 0.7, "n": 150, "classes": 10},
	})

	// report.json as stages.Run writes it, plus a key of someone else's and
	// a stale report section
	writeJSON(t, at("report.json"), map[string]any{
		"job": "fixture",
		"datasets": map[string]any{
			"laion":          map[string]any{"path": "data/laion", "layout": "clip-retrieval", "rows": 1020, "dim": 8, "dtype": "float16", "shards": 2},
			"imagenet-train": map[string]any{"path": "data/imagenet-train", "layout": "embeddings", "rows": 300, "dim": 8, "dtype": "float16", "shards": 1},
		},
		"stages": map[string]any{
			"kmeans":    map[string]any{"status": "done", "seconds": 3.14159, "items": 1020, "throughput": 324.675, "ranks": 2, "rank_seconds": []float64{3.1, 2.71828}},
			"dedup":     map[string]any{"status": "done", "seconds": 1.5, "items": 1020, "throughput": 680, "ranks": 2},
			"sims":      map[string]any{"status": "skipped", "seconds": 0.01, "items": 1300, "throughput": 130000, "ranks": 2},
			"prune":     map[string]any{"status": "done", "seconds": 0.75, "items": 1000, "throughput": 1333.33, "ranks": 2, "extra": map[string]any{"imagenet-val": map[string]any{"approx_pruned": 26, "approx_missed": 1}, "combined": map[string]any{"approx_pruned": 44, "approx_missed": 2}}},
			"subsample": map[string]any{"status": "not-built", "ranks": 2},
			"zeroshot":  map[string]any{"status": "done", "seconds": 0.02, "items": 350, "throughput": 17500, "ranks": 2},
		},
		"someone_else": map[string]any{"keep": "me", "n": 42},
		"report":       map[string]any{"stale": true},
	})
	// a figure an earlier report drew that this one does not
	must(t, os.WriteFile(at("report", "sims_objectnet.png"), []byte("old"), 0o644))
	return f
}

// topk makes descending [q, k] rows whose first column is top1.
func topk(top1 []float32, k int) []float32 {
	out := make([]float32, 0, len(top1)*k)
	for _, v := range top1 {
		for j := 0; j < k; j++ {
			out = append(out, v-float32(j)*0.01)
		}
	}
	return out
}

// difference is a minus b (both sorted).
func difference(a, b []int64) []int64 {
	out := []int64{}
	for _, x := range a {
		if _, found := slices.BinarySearch(b, x); !found {
			out = append(out, x)
		}
	}
	return out
}

// median is the nearest-rank median, computed the obvious way.
func median(v []float32) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	return float64(s[(len(s)+1)/2-1])
}

func closer(base, ref []float32) int64 {
	n := int64(0)
	for i := range base {
		if base[i] > ref[i] {
			n++
		}
	}
	return n
}

func (f *fixture) String() string { return fmt.Sprintf("fixture at %s", f.work) }
