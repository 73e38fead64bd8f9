package stages

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"hpcrun/configs"
	"hpcrun/configs/masks"
	"hpcrun/dataset"
)

// zsPython is Debian's python3 with numpy, or a skip (a failure under
// HPCRUN_REQUIRE_REFS=1).
func zsPython(t testing.TB) string {
	t.Helper()
	const py = "/usr/bin/python3"
	if err := exec.Command(py, "-c", "import numpy").Run(); err != nil {
		if os.Getenv("HPCRUN_REQUIRE_REFS") == "1" {
			t.Fatalf("%s with numpy: %v", py, err)
		}
		t.Skipf("%s with numpy not available: %v", py, err)
	}
	return py
}

// zsWorld writes a class matrix of `classes` unit rows and three labelled
// sets: "plain" (float16, 3 shards, all classes), "sub" (float32, labels
// index the 12-class mask in sub_mask.npy) and "ina" (labels index the
// shipped imagenet-a mask; only when classes == 1000).
func zsWorld(t testing.TB, dir string, classes, dim int) {
	t.Helper()
	rng := rand.New(rand.NewPCG(7, 7))
	unit := func(v []float32) {
		var s float64
		for _, x := range v {
			s += float64(x) * float64(x)
		}
		for i := range v {
			v[i] = float32(float64(v[i]) / math.Sqrt(s))
		}
	}
	cm := make([]float32, classes*dim)
	for i := range cm {
		cm[i] = float32(rng.NormFloat64())
	}
	for c := 0; c < classes; c++ {
		unit(cm[c*dim : (c+1)*dim])
	}
	if err := dataset.WriteFloat32(filepath.Join(dir, "class_matrix.npy"), cm, classes, dim); err != nil {
		t.Fatal(err)
	}
	// near is an image of class c: its row plus noise strong enough to
	// confuse it with others now and then
	near := func(c int) []float32 {
		v := make([]float32, dim)
		for j := range v {
			v[j] = cm[c*dim+j] + float32(0.32*rng.NormFloat64())
		}
		unit(v)
		return v
	}
	write := func(name string, dt dataset.DType, shardRows, n int, classOf func(l int) int, nlab int) {
		var x []float32
		labels := make([]int64, n)
		for i := range labels {
			labels[i] = int64(rng.IntN(nlab))
			x = append(x, near(classOf(int(labels[i])))...)
		}
		w := &dataset.EmbeddingsWriter{Root: filepath.Join(dir, name), DType: dt, Dim: dim, ShardRows: shardRows}
		if err := w.Add(x, labels, nil); err != nil {
			t.Fatal(err)
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
	}
	write("plain", dataset.Float16, 70, 200, func(l int) int { return l }, classes)
	sub := []int64{3, 5, 6, 9, 11, 14, 17, 18, 20, 23, 26, 28}
	if err := dataset.WriteInt64(filepath.Join(dir, "sub_mask.npy"), sub); err != nil {
		t.Fatal(err)
	}
	write("sub", dataset.Float32, 1000, 150, func(l int) int { return int(sub[l]) }, len(sub))
	if classes == 1000 {
		ia, _ := masks.Get("imagenet-a")
		write("ina", dataset.Float16, 50, 120, func(l int) int { return int(ia[l]) }, len(ia))
	}
}

func zsConfig(t testing.TB, dir string, sets ...string) *configs.Config {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "[job]\nname = \"zs\"\nworkdir = %q\n[runtime]\nbackend = \"cpu\"\nranks = 1\nblock_rows = 64\n", filepath.Join(dir, "work"))
	for _, s := range sets {
		fmt.Fprintf(&b, "[datasets.%s]\npath = %q\nlayout = \"embeddings\"\n", s, filepath.Join(dir, s))
	}
	fmt.Fprintf(&b, "[zeroshot]\neval = [%q", sets[0])
	for _, s := range sets[1:] {
		fmt.Fprintf(&b, ", %q", s)
	}
	fmt.Fprintf(&b, "]\nclass_matrix = %q\n[zeroshot.masks]\nsub = %q\n", filepath.Join(dir, "class_matrix.npy"), filepath.Join(dir, "sub_mask.npy"))
	for _, s := range sets {
		if s == "ina" {
			b.WriteString("ina = \"imagenet-a\"\n")
		}
	}
	cfg, err := configs.Parse([]byte(b.String()), "", nil)
	if err != nil {
		t.Fatalf("%v\n%s", err, b.String())
	}
	return cfg
}

// zsNumpy is the reference: scores = X @ C[mask].T in float32, the top 5
// by a stable descending sort (ties to the smaller class, as kernels does).
const zsNumpy = `
import sys, json, glob, os, numpy as np
d = sys.argv[1]
C = np.load(os.path.join(d, "class_matrix.npy")).astype(np.float32)
masks = {"sub": np.load(os.path.join(d, "sub_mask.npy"))}
if "INA_MASK" in os.environ:
    masks["ina"] = np.array(json.loads(os.environ["INA_MASK"]))
out = {}
for name in sys.argv[2:]:
    n = len(glob.glob(os.path.join(d, name, "images", "img_emb_*.npy")))
    X = np.concatenate([np.load(os.path.join(d, name, "images", "img_emb_%d.npy" % i)).astype(np.float32) for i in range(n)])
    y = np.concatenate([np.load(os.path.join(d, name, "labels", "labels_%d.npy" % i)) for i in range(n)])
    W = C[masks[name]] if name in masks else C
    s = X @ W.T
    top = np.argsort(-s, axis=1, kind="stable")[:, :5]
    out[name] = {"top1": float(np.mean(top[:, 0] == y)), "top5": float(np.mean((top == y[:, None]).any(1))), "n": int(len(y)), "classes": int(W.shape[0])}
print(json.dumps(out))
`

// Accuracy equals numpy's on the same arrays, masks included, for 1 and 2
// ranks; an unchanged rerun is skipped.
func TestZeroshotMatchesNumpy(t *testing.T) {
	py := zsPython(t)
	dir := t.TempDir()
	zsWorld(t, dir, 1000, 32)
	ia, _ := masks.Get("imagenet-a")
	iab, _ := json.Marshal(ia)
	cmd := exec.Command(py, "-c", zsNumpy, dir, "plain", "sub", "ina")
	cmd.Env = append(os.Environ(), "INA_MASK="+string(iab))
	ref, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("numpy: %v\n%s", err, ref)
	}
	var want map[string]ZeroshotAccuracy
	if err := json.Unmarshal(ref, &want); err != nil {
		t.Fatalf("%v: %s", err, ref)
	}
	for _, ranks := range []int{1, 2} {
		cfg := zsConfig(t, dir, "plain", "sub", "ina")
		cfg.Job.Workdir = filepath.Join(dir, fmt.Sprintf("work%d", ranks))
		if err := RunInProcess(context.Background(), cfg, ranks, []string{"zeroshot"}, slog.New(slog.DiscardHandler)); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(filepath.Join(cfg.Job.Workdir, "zeroshot", "accuracy.json"))
		if err != nil {
			t.Fatal(err)
		}
		var got map[string]ZeroshotAccuracy
		if err := json.Unmarshal(b, &got); err != nil {
			t.Fatal(err)
		}
		for name, w := range want {
			g := got[name]
			if g.N != w.N || g.Classes != w.Classes || math.Abs(g.Top1-w.Top1) > 1e-12 || math.Abs(g.Top5-w.Top5) > 1e-12 {
				t.Fatalf("ranks %d, %s: got %+v, numpy %+v", ranks, name, g, w)
			}
			if g.Top1 < 0.2 || g.Top1 > 0.98 || g.Top5 <= g.Top1 {
				t.Fatalf("%s: accuracy %+v is not a discriminating test", name, g)
			}
		}
		t.Logf("ranks %d: %s", ranks, b)
		if ranks == 1 { // rerun: skipped
			var logs syncBuf
			if err := RunInProcess(context.Background(), cfg, 1, []string{"zeroshot"}, slog.New(slog.NewTextHandler(&logs, nil))); err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(logs.String(), "skipped") {
				t.Fatalf("rerun not skipped:\n%s", logs.String())
			}
		}
	}
}

// Labels outside the scored classes, a mask naming rows the matrix lacks
// and an unknown mask name are errors naming the culprit.
func TestZeroshotErrors(t *testing.T) {
	dir := t.TempDir()
	zsWorld(t, dir, 30, 8)
	run := func(cfg *configs.Config) error {
		return RunInProcess(context.Background(), cfg, 1, []string{"zeroshot"}, slog.New(slog.DiscardHandler))
	}
	cfg := zsConfig(t, dir, "plain", "sub")
	cfg.Zeroshot.Masks["plain"] = "imagenet-r" // classes up to 988 on a 30-row matrix
	if err := run(cfg); err == nil || !strings.Contains(err.Error(), "outside the class matrix") {
		t.Fatalf("mask beyond the matrix: %v", err)
	}
	cfg = zsConfig(t, dir, "plain", "sub")
	cfg.Zeroshot.Masks["plain"] = "imagenet-z"
	if err := run(cfg); err == nil || !strings.Contains(err.Error(), "imagenet-z") {
		t.Fatalf("unknown mask: %v", err)
	}
	cfg = zsConfig(t, dir, "plain", "sub")
	// sub's labels run to 11: a 5-class mask cannot hold them
	if err := dataset.WriteInt64(filepath.Join(dir, "five.npy"), []int64{0, 1, 2, 3, 4}); err != nil {
		t.Fatal(err)
	}
	cfg.Zeroshot.Masks["sub"] = filepath.Join(dir, "five.npy")
	if err := run(cfg); err == nil || !strings.Contains(err.Error(), "outside the 5 classes") {
		t.Fatalf("labels beyond the mask: %v", err)
	}
}
