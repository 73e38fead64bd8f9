package stages

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"hpcrun/configs"
	"hpcrun/dataset"
)

func TestOverlappingShards(t *testing.T) {
	type sp struct {
		s      int
		lo, hi int64
	}
	get := func(x sp) (int, int64, int64) { return x.s, x.lo, x.hi }
	for _, c := range []struct {
		spans []sp
		want  []int
	}{
		{nil, []int{}},
		{[]sp{{0, 0, 9}, {1, 10, 19}, {2, 20, 29}}, []int{}},         // consecutive, clip-retrieval style
		{[]sp{{2, 20, 29}, {0, 0, 9}, {1, 10, 19}}, []int{}},         // any order
		{[]sp{{0, 0, 10}, {1, 10, 19}, {2, 20, 29}}, []int{0, 1}},    // touching ends share id 10
		{[]sp{{0, 0, 100}, {1, 2, 3}, {2, 5, 6}}, []int{0, 1, 2}},    // nested in one wide shard
		{[]sp{{0, 0, 9}, {1, 20, 29}, {2, 25, 40}}, []int{1, 2}},     // one overlapping pair
		{[]sp{{0, -5, -1}, {1, -3, 2}, {2, 3, 3}}, []int{0, 1}},      // negative ids
		{[]sp{{0, 0, 50}, {1, 10, 60}, {2, 55, 70}}, []int{0, 1, 2}}, // a chain
	} {
		got := overlappingShards(slices.Clone(c.spans), get)
		if !slices.Equal(got, c.want) {
			t.Errorf("%v: %v, want %v", c.spans, got, c.want)
		}
	}
}

// A LAION-style base whose shards share an id: kmeans, sims and prune each
// fail on every rank count with an error naming the id and both metadata
// files, and write no outputs; shards whose id ranges overlap without a
// shared id (interleaved ids) pass.
func TestIDsUniqueAcrossShards(t *testing.T) {
	world, _ := tiny(t)
	base := t.TempDir()
	if err := os.CopyFS(base, os.DirFS(filepath.Join(world, "laion"))); err != nil {
		t.Fatal(err)
	}
	meta := func(n int) string { return filepath.Join(base, "metadata", "metadata_"+string(rune('0'+n))+".parquet") }
	ids := make([][]int64, 3)
	for s := range ids {
		v, err := dataset.ReadIDColumn(meta(s), "image_path")
		if err != nil {
			t.Fatal(err)
		}
		ids[s] = v
	}
	write := func(s int, v []int64) {
		rows := make([]dataset.MetadataRow, len(v))
		for i, id := range v {
			rows[i] = dataset.MetadataRow{ImagePath: id}
		}
		if err := dataset.WriteMetadata(meta(s), rows); err != nil {
			t.Fatal(err)
		}
	}
	cfgFor := func(workdir string) *configs.Config {
		toml := `
[job]
name = "ids"
workdir = "` + workdir + `"
[runtime]
timeout = "20s"
[datasets.laion]
path = "` + base + `"
layout = "clip-retrieval"
[datasets.val]
path = "` + filepath.Join(world, "imagenet-val") + `"
layout = "embeddings"
[datasets.train]
path = "` + filepath.Join(world, "imagenet-train") + `"
layout = "embeddings"
[kmeans]
dataset = "laion"
k = 8
max_iter = 3
[sims]
base = ["laion"]
eval = ["val"]
k = 5
[prune]
base = "laion"
reference = "train"
eval = ["val"]
`
		cfg, err := configs.Parse([]byte(toml), "", nil)
		if err != nil {
			t.Fatal(err)
		}
		return cfg
	}

	// shard 2 takes one id of shard 0 (still unique inside shard 2)
	dup := slices.Clone(ids[2])
	dup[len(dup)/2] = ids[0][3]
	write(2, dup)
	for _, stage := range []string{"kmeans", "sims", "prune"} {
		for _, ranks := range []int{1, 2, 3} {
			work := t.TempDir()
			err := RunInProcess(context.Background(), cfgFor(work), ranks, []string{stage}, quietLog())
			if err == nil {
				t.Fatalf("%s, %d ranks: a duplicate id across shards was accepted", stage, ranks)
			}
			for _, want := range []string{"is in two shards", "metadata_0.parquet", "metadata_2.parquet"} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("%s, %d ranks: %v (want %q)", stage, ranks, err, want)
				}
			}
			if _, err := os.Stat(filepath.Join(work, stage, "done.json")); err == nil {
				t.Errorf("%s, %d ranks: done.json written", stage, ranks)
			}
		}
	}

	// interleaved: shard 0 even ids, shard 1 odd ids, shard 2 as it was
	write(2, ids[2])
	ev, od := slices.Clone(ids[0]), slices.Clone(ids[1])
	for i := range ev {
		ev[i] = 2 * int64(i)
	}
	for i := range od {
		od[i] = 2*int64(i) + 1
	}
	write(0, ev)
	write(1, od)
	runJob(t, cfgFor(t.TempDir()), 2, "kmeans")
}
