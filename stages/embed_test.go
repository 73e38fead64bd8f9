package stages

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"hpcrun/clip"
	"hpcrun/clip/ort"
	"hpcrun/configs"
	"hpcrun/synth"
)

// embedOrSkip loads ONNX Runtime or skips (fails under HPCRUN_REQUIRE_REFS=1).
func embedOrSkip(t testing.TB) {
	t.Helper()
	if _, err := ort.Init(); err != nil {
		if os.Getenv("HPCRUN_REQUIRE_REFS") == "1" {
			t.Fatal(err)
		}
		t.Skip(err)
	}
}

const embedTestSize = 32

// embedWorld writes a small labelled image folder (synth's generator), the
// real test images of clip/testdata in class 1, and a truncated JPEG in
// class 2; it returns the folder of the world.
func embedWorld(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	s := synth.ImageSpec{Name: "imgs", Classes: 5, PerClass: 6, MinSide: 40, MaxSide: 120, ImageSize: embedTestSize, Grid: 4}
	const dim = 16
	centres := make([]float32, s.Classes*dim)
	for c := 0; c < s.Classes; c++ {
		centres[c*dim+c] = 1
	}
	if err := synth.WriteImages(dir, s, 11, centres, dim); err != nil {
		t.Fatal(err)
	}
	root := filepath.Join(dir, "images", "imgs")
	fixtures, _ := filepath.Glob(filepath.Join("..", "clip", "testdata", "*.*"))
	for _, f := range fixtures {
		if strings.HasSuffix(f, ".py") {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, "n00000001", "real_"+filepath.Base(f)), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	good, err := os.ReadFile(filepath.Join(root, "n00000002", "img_000.jpg"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "n00000002", "img_001b.jpg"), good[:len(good)/3], 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

func embedConfig(t testing.TB, world, work string, extra string) *configs.Config {
	t.Helper()
	doc := fmt.Sprintf(`
[job]
name = "embed-test"
workdir = %q
[runtime]
backend = "cpu"
ranks = 1
[embed.imgs]
model = %q
input = %q
image_size = %d
batch_size = 4
shard_size = 7
%s
`, work, filepath.Join(world, synth.ModelFile), filepath.Join(world, "images", "imgs"), embedTestSize, extra)
	cfg, err := configs.Parse([]byte(doc), "", nil)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// syncBuf is a log sink for several goroutines.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func runEmbedRanks(t testing.TB, cfg *configs.Config, ranks int) (string, error) {
	t.Helper()
	var logs syncBuf
	err := RunInProcess(context.Background(), cfg, ranks, []string{"embed"}, slog.New(slog.NewTextHandler(&logs, nil)))
	return logs.String(), err
}

// readEmbedded reads the set's embeddings, labels and paths.
func readEmbedded(t testing.TB, cfg *configs.Config, name string) ([]float32, []int64, []string, int) {
	t.Helper()
	ds, err := OpenDataset(cfg, name)
	if err != nil {
		t.Fatal(err)
	}
	x, err := ds.ReadAll(1000)
	if err != nil {
		t.Fatal(err)
	}
	labels, err := ds.AllLabels()
	if err != nil {
		t.Fatal(err)
	}
	var paths []string
	for i := range ds.Shards {
		p, err := ds.Paths(i)
		if err != nil {
			t.Fatal(err)
		}
		paths = append(paths, p...)
	}
	return x, labels, paths, ds.Dim
}

// The stage's embeddings equal the model run directly (a plain session,
// one image at a time) on tensors made by the plain PreprocessRef; labels
// and order are torchvision's ImageFolder's; the truncated JPEG is skipped,
// named in the log and in failed.json, and the run succeeds.
func TestEmbedMatchesReference(t *testing.T) {
	embedOrSkip(t)
	world := embedWorld(t)
	cfg := embedConfig(t, world, filepath.Join(t.TempDir(), "work"), "")
	logs, err := runEmbedRanks(t, cfg, 1)
	if err != nil {
		t.Fatalf("%v\n%s", err, logs)
	}
	x, labels, paths, dim := readEmbedded(t, cfg, "imgs")
	root := cfg.Embed["imgs"].Input

	// torchvision's order, listed independently
	var want []string
	var wantLabels []int64
	classes, _ := os.ReadDir(root)
	for ci, c := range classes {
		files, _ := os.ReadDir(filepath.Join(root, c.Name()))
		for _, f := range files { // ReadDir sorts by name
			rel := c.Name() + "/" + f.Name()
			if rel == "n00000002/img_001b.jpg" {
				continue
			}
			want = append(want, rel)
			wantLabels = append(wantLabels, int64(ci))
		}
	}
	if strings.Join(paths, ",") != strings.Join(want, ",") {
		t.Fatalf("paths\n%v\nwant\n%v", paths, want)
	}
	for i := range want {
		if labels[i] != wantLabels[i] {
			t.Fatalf("%s: label %d, want %d", want[i], labels[i], wantLabels[i])
		}
	}
	if !strings.Contains(logs, "img_001b.jpg") {
		t.Fatalf("the corrupt image is not named in the log:\n%s", logs)
	}
	var failed []embedFailure
	b, _ := os.ReadFile(filepath.Join(cfg.Job.Workdir, "embed", "imgs", "failed.json"))
	if err := json.Unmarshal(b, &failed); err != nil || len(failed) != 1 || failed[0].Path != "n00000002/img_001b.jpg" {
		t.Fatalf("failed.json = %s (%v)", b, err)
	}

	// the reference: plain preprocessing, a plain session, one image a run
	sess, err := ort.NewSession(cfg.Embed["imgs"].Model, ort.SessionOptions{Backend: "cpu", Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	var worst float64
	for i, rel := range want {
		data, err := os.ReadFile(filepath.Join(root, rel))
		if err != nil {
			t.Fatal(err)
		}
		pic, err := clip.Decode(data)
		if err != nil {
			t.Fatalf("%s: %v", rel, err)
		}
		y, err := sess.Run(clip.PreprocessRef(pic, embedTestSize), 1, nil)
		if err != nil {
			t.Fatal(err)
		}
		var n float64
		for _, v := range y {
			n += float64(v) * float64(v)
		}
		for d := 0; d < dim; d++ {
			diff := math.Abs(float64(y[d])/math.Sqrt(n) - float64(x[i*dim+d]))
			worst = math.Max(worst, diff)
		}
	}
	t.Logf("%d images, max |stage - reference| = %.2g", len(want), worst)
	if worst > 1e-4 {
		t.Fatalf("embeddings differ from the reference by %g", worst)
	}

	// the second run is skipped
	logs, err = runEmbedRanks(t, cfg, 1)
	if err != nil {
		t.Fatal(err)
	}
	var rep Report
	b, _ = os.ReadFile(filepath.Join(cfg.Job.Workdir, "report.json"))
	if json.Unmarshal(b, &rep) != nil || rep.Stages["embed"].Status != "skipped" {
		t.Fatalf("second run: report %s\n%s", b, logs)
	}
}

// embedFiles reads every output file of the set.
func embedFiles(t testing.TB, dir string) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	for _, sub := range []string{"images", "labels", "paths"} {
		files, _ := filepath.Glob(filepath.Join(dir, sub, "*.npy"))
		for _, f := range files {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			out[sub+"/"+filepath.Base(f)] = b
		}
	}
	return out
}

func sameFiles(t testing.TB, a, b map[string][]byte, what string) {
	t.Helper()
	if len(a) == 0 || len(a) != len(b) {
		t.Fatalf("%s: %d files vs %d", what, len(a), len(b))
	}
	for k, v := range a {
		if !bytes.Equal(v, b[k]) {
			t.Fatalf("%s: %s differs", what, k)
		}
	}
}

// Any rank count writes the same bytes (float16 here); an interrupted run
// resumes from its finished chunks and ends with the same bytes.
func TestEmbedRanksAndResume(t *testing.T) {
	embedOrSkip(t)
	world := embedWorld(t)
	var outs []map[string][]byte
	for _, ranks := range []int{1, 3} {
		cfg := embedConfig(t, world, filepath.Join(t.TempDir(), "work"), `dtype = "float16"`)
		if logs, err := runEmbedRanks(t, cfg, ranks); err != nil {
			t.Fatalf("ranks %d: %v\n%s", ranks, err, logs)
		}
		outs = append(outs, embedFiles(t, filepath.Join(cfg.Job.Workdir, "embed", "imgs")))
	}
	sameFiles(t, outs[0], outs[1], "--ranks 1 vs 3")
	if len(outs[0]) != 3*6 { // 41 images in shards of 7
		t.Fatalf("%d output files, want 18", len(outs[0]))
	}

	cfg := embedConfig(t, world, filepath.Join(t.TempDir(), "work"), `dtype = "float16"`)
	var mu sync.Mutex
	calls := 0
	embedTestHook = func(chunk int) error {
		mu.Lock()
		defer mu.Unlock()
		calls++
		if calls == 4 {
			return fmt.Errorf("killed after chunk %d", chunk)
		}
		return nil
	}
	defer func() { embedTestHook = nil }()
	if _, err := runEmbedRanks(t, cfg, 2); err == nil || !strings.Contains(err.Error(), "killed") {
		t.Fatalf("interrupted run: %v", err)
	}
	calls = -1000
	if logs, err := runEmbedRanks(t, cfg, 2); err != nil {
		t.Fatalf("resumed run: %v\n%s", err, logs)
	}
	// 42 files in chunks of one batch (4): 11 chunks, 4 written before the kill
	if redone := calls + 1000; redone > 7 {
		t.Fatalf("the resumed run embedded %d of 11 chunks again", redone)
	}
	sameFiles(t, outs[0], embedFiles(t, filepath.Join(cfg.Job.Workdir, "embed", "imgs")), "resumed run")
}

// fail_on_corrupt turns the skipped image into an error naming it; a cuda
// backend without CUDA is a clear error.
func TestEmbedErrors(t *testing.T) {
	embedOrSkip(t)
	world := embedWorld(t)
	cfg := embedConfig(t, world, filepath.Join(t.TempDir(), "work"), "fail_on_corrupt = true")
	_, err := runEmbedRanks(t, cfg, 2)
	if err == nil || !strings.Contains(err.Error(), "n00000002/img_001b.jpg") {
		t.Fatalf("fail_on_corrupt: %v", err)
	}
	cfg = embedConfig(t, world, filepath.Join(t.TempDir(), "work"), "")
	cfg.Runtime.Backend = "cuda"
	_, err = runEmbedRanks(t, cfg, 1)
	if err == nil || !strings.Contains(err.Error(), "CUDA") {
		t.Fatalf("backend cuda: %v", err)
	}
	t.Log(err)
}

// Webdataset tars (.jpg/.png/.webp + .cls) embed to the same rows as the
// same images in a folder.
func TestEmbedWebdataset(t *testing.T) {
	embedOrSkip(t)
	world := embedWorld(t)
	root := filepath.Join(world, "images", "imgs")
	os.Remove(filepath.Join(root, "n00000002", "img_001b.jpg"))
	ref := embedConfig(t, world, filepath.Join(t.TempDir(), "work"), "")
	if logs, err := runEmbedRanks(t, ref, 1); err != nil {
		t.Fatalf("%v\n%s", err, logs)
	}
	want, wantLabels, paths, dim := readEmbedded(t, ref, "imgs")

	// the same images in order, 15 samples per tar, keys in file order
	tars := filepath.Join(world, "tars")
	os.MkdirAll(tars, 0o755)
	var tw *tar.Writer
	var f *os.File
	for i, rel := range paths {
		if i%15 == 0 {
			if tw != nil {
				tw.Close()
				f.Close()
			}
			f, _ = os.Create(filepath.Join(tars, fmt.Sprintf("%05d.tar", i/15)))
			tw = tar.NewWriter(f)
		}
		data, _ := os.ReadFile(filepath.Join(root, rel))
		ext := strings.TrimPrefix(filepath.Ext(rel), ".")
		key := fmt.Sprintf("%09d", i)
		for _, m := range []struct {
			name string
			b    []byte
		}{{key + "." + ext, data}, {key + ".cls", []byte(fmt.Sprint(wantLabels[i]))}, {key + ".txt", []byte("caption")}} {
			tw.WriteHeader(&tar.Header{Name: m.name, Mode: 0o644, Size: int64(len(m.b))})
			tw.Write(m.b)
		}
	}
	tw.Close()
	f.Close()
	cfg := embedConfig(t, world, filepath.Join(t.TempDir(), "work"), "")
	cfg.Embed["imgs"].Input, cfg.Embed["imgs"].InputLayout = tars, "webdataset"
	if logs, err := runEmbedRanks(t, cfg, 2); err != nil {
		t.Fatalf("%v\n%s", err, logs)
	}
	got, labels, gpaths, _ := readEmbedded(t, cfg, "imgs")
	if len(got) != len(want) || gpaths[0] != "00000.tar/000000000."+strings.TrimPrefix(filepath.Ext(paths[0]), ".") {
		t.Fatalf("%d values vs %d; first path %q", len(got), len(want), gpaths[0])
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("value %d (row %d): tar %v, folder %v", i, i/dim, got[i], want[i])
		}
	}
	for i := range labels {
		if labels[i] != wantLabels[i] {
			t.Fatalf("row %d: label %d, want %d", i, labels[i], wantLabels[i])
		}
	}
}
