package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"hpcrun/kernels/cuda"
	"hpcrun/synth"
)

func run(t *testing.T, args ...string) (int, string) {
	t.Helper()
	var stderr bytes.Buffer
	old := stderrW
	r, w, _ := os.Pipe()
	stderrW = w
	code := mainExit(args, &stderr)
	w.Close()
	stderrW = old
	logs := new(bytes.Buffer)
	logs.ReadFrom(r)
	return code, stderr.String() + logs.String()
}

func writeConfig(t *testing.T, dir, body string) string {
	t.Helper()
	p := filepath.Join(dir, "exp.toml")
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// tinyWorld writes synth's tiny world into a new temporary folder and
// returns the folder and the world's path in it.
func tinyWorld(t *testing.T) (dir, world string) {
	t.Helper()
	dir = t.TempDir()
	world = filepath.Join(dir, "world")
	if _, err := synth.Write(world, synth.Presets["tiny"], 1); err != nil {
		t.Fatal(err)
	}
	return dir, world
}

func tinyConfig(world, workdir string) string {
	return `
[job]
name = "tiny"
workdir = "` + workdir + `"
[datasets.laion]
path = "` + world + `/laion"
layout = "clip-retrieval"
[datasets.imagenet-train]
path = "` + world + `/imagenet-train"
[datasets.imagenet-val]
path = "` + world + `/imagenet-val"
`
}

func TestExitCodes(t *testing.T) {
	dir := t.TempDir()
	if code, _ := run(t, "version"); code != 0 {
		t.Fatalf("version: exit %d", code)
	}
	if code, out := run(t, "frobnicate"); code != 2 || !strings.Contains(out, `unknown command "frobnicate"`) {
		t.Fatalf("unknown command: exit %d, %q", code, out)
	}
	cfg := writeConfig(t, dir, "[job]\nname = \"x\"\nworkdir = \"w\"\n[kmeans]\ndataset = \"a\"\nkk = 1\n")
	code, out := run(t, "config", cfg)
	if code != 2 || !strings.HasPrefix(out, "hpcrun: config "+cfg+":6: key \"kmeans.kk\": unknown key") {
		t.Fatalf("unknown key: exit %d, %q", code, out)
	}
	if code, out := run(t, "run", cfg, "--only", "nope"); code != 2 || !strings.Contains(out, "unknown key") {
		// the config is checked before --only
		t.Fatalf("run with bad config: exit %d, %q", code, out)
	}
	if code, out := run(t, "synth"); code != 2 || !strings.Contains(out, "--out DIR is required") {
		t.Fatalf("synth without --out: exit %d %q", code, out)
	}
	if code, out := run(t, "config", "quickstart.toml", "--bogus"); code != 2 || !strings.Contains(out, "flag provided but not defined: -bogus") {
		t.Fatalf("bad flag: exit %d %q", code, out)
	}
}

func TestRunOnTinyWorld(t *testing.T) {
	dir, world := tinyWorld(t)
	work := filepath.Join(dir, "work")
	cfg := writeConfig(t, dir, tinyConfig(world, work))
	code, out := run(t, "run", cfg, "--ranks", "1")
	if code != 0 {
		t.Fatalf("run: exit %d\n%s", code, out)
	}
	if !strings.Contains(out, "[rank 0] ") {
		t.Fatalf("logs are not prefixed with the rank:\n%s", out)
	}
	b, err := os.ReadFile(filepath.Join(work, "report.json"))
	if err != nil {
		t.Fatal(err)
	}
	var rep struct {
		Datasets map[string]struct{ Rows int64 }
	}
	if err := json.Unmarshal(b, &rep); err != nil || rep.Datasets["laion"].Rows == 0 {
		t.Fatalf("report.json: %v %s", err, b)
	}

	// a truncated shard fails the run, names the file, and writes nothing
	shard := filepath.Join(world, "laion", "img_emb", "img_emb_1.npy")
	data, _ := os.ReadFile(shard)
	os.WriteFile(shard, data[:len(data)-100], 0o644)
	work2 := filepath.Join(dir, "work2")
	cfg2 := writeConfig(t, dir, tinyConfig(world, work2))
	code, out = run(t, "run", cfg2, "--ranks", "1")
	if code != 1 || !strings.Contains(strings.SplitN(out, "\n", 2)[0], shard+": truncated") {
		t.Fatalf("truncated shard: exit %d\n%s", code, out)
	}
	if _, err := os.Stat(filepath.Join(work2, "report.json")); err == nil {
		t.Fatal("a failed run left report.json behind")
	}
}

func TestConfigPrintsDefaults(t *testing.T) {
	old := os.Stdout
	r, w, _ := os.Pipe()
	os.Stdout = w
	code, _ := run(t, "config", "../../configs/quickstart.toml", "--set", "kmeans.k=9")
	w.Close()
	os.Stdout = old
	var out bytes.Buffer
	out.ReadFrom(r)
	if code != 0 || !strings.Contains(out.String(), "k = 9") || !strings.Contains(out.String(), "block_rows = 16384") {
		t.Fatalf("exit %d\n%s", code, out.String())
	}
}

// buildBinary compiles hpcrun once per test binary run.
func buildBinary(t *testing.T) string {
	t.Helper()
	binOnce.Do(func() {
		dir, err := os.MkdirTemp("", "hpcrun-test-bin-")
		if err != nil {
			binErr = err
			return
		}
		binPath = filepath.Join(dir, "hpcrun")
		out, err := exec.Command("go", "build", "-o", binPath, ".").CombinedOutput()
		if err != nil {
			binErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binPath
}

var (
	binOnce sync.Once
	binPath string
	binErr  error
)

// TestRunLaunchesRankProcesses runs `hpcrun run --ranks 3`: three processes
// of the binary meet on rank 0's embedded NATS server.
func TestRunLaunchesRankProcesses(t *testing.T) {
	bin := buildBinary(t)
	dir, world := tinyWorld(t)
	work := filepath.Join(dir, "work")
	cfg := writeConfig(t, dir, tinyConfig(world, work))
	cmd := exec.Command(bin, "run", cfg, "--ranks", "3")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("run --ranks 3: %v\n%s", err, out)
	}
	for _, want := range []string{"[rank 0] ", "embedded NATS server started"} {
		if !strings.Contains(string(out), want) {
			t.Fatalf("output lacks %q:\n%s", want, out)
		}
	}
	if _, err := os.Stat(filepath.Join(work, "report.json")); err != nil {
		t.Fatal(err)
	}
	// the secret never shows up in the output
	for _, line := range strings.Split(string(out), "\n") {
		if strings.Contains(strings.ToLower(line), "secret=") {
			t.Fatalf("secret logged: %s", line)
		}
	}
}

// runtime.backend = "cuda" without a GPU fails with one clear line; auto
// falls back to the CPU and says so.
func TestBackendChoice(t *testing.T) {
	if _, err := cuda.Available(); err == nil {
		t.Skip("a CUDA device answers here; this checks the machine without one")
	}
	dir, world := tinyWorld(t)
	cfg := writeConfig(t, dir, tinyConfig(world, filepath.Join(dir, "work")))
	code, out := run(t, "run", cfg, "--ranks", "1", "--set", `runtime.backend="cuda"`)
	if first := strings.SplitN(out, "\n", 2)[0]; code != 1 || !strings.Contains(first, `runtime.backend = "cuda": kernels/cuda: no CUDA driver`) {
		t.Fatalf("cuda without a GPU: exit %d, first line %q", code, first)
	}
	code, out = run(t, "run", cfg, "--ranks", "1", "--set", `runtime.backend="auto"`)
	if code != 0 || !strings.Contains(out, "backend auto: using cpu") || !strings.Contains(out, "no CUDA driver") {
		t.Fatalf("auto without a GPU: exit %d\n%s", code, out)
	}
}

// TestGPUPrecision: runtime.gpu_precision reaches the CUDA backend (here
// its emulator), is logged, and is part of every stage's up-to-date hash:
// switching it redoes the stages whose kernels round (kmeans, dedup, sims,
// prune), running again with the same setting skips them, and an unknown
// value is a config error naming the key.
func TestGPUPrecision(t *testing.T) {
	t.Setenv(cuda.EmulatorEnv, "1")
	dir, world := tinyWorld(t)
	work := filepath.Join(dir, "work")
	cfg := writeConfig(t, dir, tinyConfig(world, work)+`
[kmeans]
dataset = "laion"
k = 8
max_iter = 3
[dedup]
eps = 0.124
[sims]
base = ["laion", "imagenet-train"]
eval = ["imagenet-val"]
k = 10
[prune]
base = "laion"
reference = "imagenet-train"
eval = ["imagenet-val"]
random_sizes = [100]
near_far_sizes = [100]
`)
	statuses := func(prec string) map[string]string {
		t.Helper()
		code, out := run(t, "run", cfg, "--ranks", "1", "--set", `runtime.backend="cuda"`, "--set", `runtime.gpu_precision="`+prec+`"`)
		if code != 0 || !strings.Contains(out, "gpu_precision="+prec) {
			t.Fatalf("gpu_precision %s: exit %d\n%s", prec, code, out)
		}
		b, err := os.ReadFile(filepath.Join(work, "report.json"))
		if err != nil {
			t.Fatal(err)
		}
		var rep struct {
			Stages map[string]struct{ Status string }
		}
		if err := json.Unmarshal(b, &rep); err != nil {
			t.Fatal(err)
		}
		st := map[string]string{}
		for name, s := range rep.Stages {
			st[name] = s.Status
		}
		return st
	}
	rounded := []string{"kmeans", "dedup", "sims", "prune"}
	for i, step := range []struct {
		prec, want string
	}{{"float16", "done"}, {"float16", "skipped"}, {"float16x2", "done"}, {"float16x2", "skipped"}, {"float32", "done"}, {"float32", "skipped"}} {
		st := statuses(step.prec)
		for _, name := range rounded {
			if st[name] != step.want {
				t.Errorf("run %d (gpu_precision %s): stage %s %q, want %q (all: %v)", i+1, step.prec, name, st[name], step.want, st)
			}
		}
	}
	code, out := run(t, "config", cfg, "--set", `runtime.gpu_precision="bf16"`)
	if code != 2 || !strings.Contains(out, "runtime.gpu_precision") {
		t.Errorf("bf16: exit %d\n%s", code, out)
	}
}

// TestKMeansKeptPoints: on the CUDA backend (here its emulator) k-means
// keeps its points on the device after the first pass and says so; with
// HPCRUN_CUDA_KEEP=0 it streams them every iteration; the outputs are the
// same bytes either way.
func TestKMeansKeptPoints(t *testing.T) {
	t.Setenv(cuda.EmulatorEnv, "1")
	dir, world := tinyWorld(t)
	outputs := func(work, keep string) map[string][]byte {
		t.Helper()
		t.Setenv(cuda.KeepEnv, keep)
		cfg := writeConfig(t, dir, tinyConfig(world, work)+`
[kmeans]
dataset = "laion"
k = 8
max_iter = 4
`)
		code, out := run(t, "run", cfg, "--ranks", "1", "--set", `runtime.backend="cuda"`, "--set", "runtime.block_rows=700")
		if code != 0 {
			t.Fatalf("HPCRUN_CUDA_KEEP=%q: exit %d\n%s", keep, code, out)
		}
		kept, streamed := strings.Contains(out, "points kept on the device"), strings.Contains(out, "streaming them every iteration")
		if kept != (keep != "0") || streamed != (keep == "0") {
			t.Errorf("HPCRUN_CUDA_KEEP=%q: kept %v, streamed %v:\n%s", keep, kept, streamed, out)
		}
		files := map[string][]byte{}
		for _, f := range []string{"centroids.npy", "assignments.npy", "ids.npy"} {
			b, err := os.ReadFile(filepath.Join(work, "kmeans", f))
			if err != nil {
				t.Fatal(err)
			}
			files[f] = b
		}
		return files
	}
	a, b := outputs(filepath.Join(dir, "kept"), ""), outputs(filepath.Join(dir, "streamed"), "0")
	for f := range a {
		if !bytes.Equal(a[f], b[f]) {
			t.Errorf("kmeans/%s differs between kept and streamed points", f)
		}
	}
}

// TestGPUFilter: runtime.gpu_filter reaches the CUDA backend (here its
// emulator) and is logged, on when not set (the default) and off when set
// false; with it, k-means (NearestCentroid on float16
// points against float32 centroids, its points kept on the device), dedup
// (PrefixMax, MaxArg), sims and prune (TopK of float32 eval embeddings over
// float16 rows, MaxArg) run through the exact filter and write the same
// .npy bytes as the CPU backend.
func TestGPUFilter(t *testing.T) {
	t.Setenv(cuda.EmulatorEnv, "1")
	dir, world := tinyWorld(t)
	outputs := func(work, wantLog string, args ...string) map[string][]byte {
		t.Helper()
		cfg := writeConfig(t, dir, tinyConfig(world, work)+`
[kmeans]
dataset = "laion"
k = 8
max_iter = 4
[dedup]
eps = 0.124
[sims]
base = ["laion", "imagenet-train"]
eval = ["imagenet-val"]
k = 10
[prune]
base = "laion"
reference = "imagenet-train"
eval = ["imagenet-val"]
random_sizes = [100]
near_far_sizes = [100]
`)
		code, out := run(t, append([]string{"run", cfg, "--ranks", "1"}, args...)...)
		if code != 0 {
			t.Fatalf("%v: exit %d\n%s", args, code, out)
		}
		if wantLog != "" && !strings.Contains(out, wantLog) {
			t.Errorf("%v: %s not logged:\n%s", args, wantLog, out)
		}
		files := map[string][]byte{}
		for _, stage := range []string{"kmeans", "dedup", "sims", "prune"} {
			err := filepath.WalkDir(filepath.Join(work, stage), func(p string, d fs.DirEntry, err error) error {
				if err != nil || d.IsDir() || !strings.HasSuffix(p, ".npy") {
					return err
				}
				b, err := os.ReadFile(p)
				files[strings.TrimPrefix(p, work)] = b
				return err
			})
			if err != nil {
				t.Fatal(err)
			}
		}
		if len(files) < 10 {
			t.Fatalf("only %d .npy outputs: %v", len(files), slices.Collect(maps.Keys(files)))
		}
		return files
	}
	cpu := outputs(filepath.Join(dir, "cpu"), "", "--set", `runtime.backend="cpu"`)
	for _, c := range []struct{ name, log, set string }{
		{"gpu", "gpu_filter=true", ""},                               // the default
		{"nofilter", "gpu_filter=false", "runtime.gpu_filter=false"}, // the FFMA kernels
	} {
		args := []string{"--set", `runtime.backend="cuda"`}
		if c.set != "" {
			args = append(args, "--set", c.set)
		}
		gpu := outputs(filepath.Join(dir, c.name), c.log, args...)
		for f := range cpu {
			if !bytes.Equal(cpu[f], gpu[f]) {
				t.Errorf("%s: %s differs between the CPU backend and the GPU", c.name, f)
			}
		}
		if len(gpu) != len(cpu) {
			t.Errorf("%s: %d outputs on the GPU, %d on the CPU", c.name, len(gpu), len(cpu))
		}
	}
	t.Logf("%d .npy outputs, byte-identical", len(cpu))
}
