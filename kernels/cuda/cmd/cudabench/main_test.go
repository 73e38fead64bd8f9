package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"hpcrun/kernels/cuda"
)

// The test binary is cudabench itself when this is set (TestBenchEmulated
// re-executes it with flags).
const mainEnv = "HPCRUN_CUDABENCH_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(mainEnv) == "1" {
		os.Args = append([]string{"cudabench"}, os.Args[1:]...)
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func bench(t *testing.T, args ...string) (string, []measurement) {
	t.Helper()
	js := filepath.Join(t.TempDir(), "out.json")
	cmd := exec.Command(os.Args[0], append(args, "-json", js)...)
	cmd.Env = append(os.Environ(), mainEnv+"=1", cuda.EmulatorEnv+"=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("cudabench %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	data, err := os.ReadFile(js)
	if err != nil {
		t.Fatal(err)
	}
	var ms []measurement
	if err := json.Unmarshal(data, &ms); err != nil {
		t.Fatalf("%s: %v", js, err)
	}
	return string(out), ms
}

// TestBenchEmulated runs the GPU check's benchmark commands (gpucheck/run.sh)
// on the Go emulator at tiny shapes: every op a GPU lease will time runs,
// and centroid-kept times each tensor-core setting on kept points.
func TestBenchEmulated(t *testing.T) {
	small := []string{"-nq", "32", "-nb", "2000", "-dim", "64", "-k", "10", "-centroids", "16", "-prefix-rows", "300"}
	out, ms := bench(t, append([]string{"-ops", "topk,topk-stream,centroid,kernel-topk,kernel-centroid,maxarg,shiftedmax,prefixmax", "-version", "4", "-block", "300"}, small...)...)
	got := map[string]int{}
	for _, m := range ms {
		got[m.Op]++
		if m.Seconds <= 0 || m.GFLOPS <= 0 || m.Impl != "hpcrun-cuda" || m.Dim != 64 {
			t.Errorf("%s: %+v", m.Op, m)
		}
	}
	for _, op := range []string{"topk", "topk-stream", "centroid", "kernel-topk", "kernel-centroid", "maxarg", "shiftedmax", "prefixmax"} {
		if got[op] != 1 {
			t.Errorf("%s: %d measurements, want 1\n%s", op, got[op], out)
		}
	}
	// the stream: one query upload, one flush (7 blocks of 300 rows)
	if i := strings.Index(out, "topk-stream"); i < 0 || !strings.Contains(out[i:], "query blocks 1") {
		t.Errorf("topk-stream: not one session\n%s", out)
	}

	// run.sh's kept bench: float32 centroids on kept points, the two
	// tensor-core settings, versions 4 and 5 (float16 queries asked: the
	// centroids stay float32, k-means' case)
	out, ms = bench(t, append([]string{"-ops", "centroid-kept", "-precision", "float16,filter", "-version", "4,5"}, small...)...)
	type key struct {
		version int
		filter  bool
	}
	seen := map[key]bool{}
	for _, m := range ms {
		if m.Op != "centroid-kept" || m.DType != "float32xfloat16" || m.K != 16 || m.NB != 2000 || m.GFLOPS <= 0 {
			t.Errorf("kept: %+v", m)
		}
		if !strings.Contains(m.Note, "kept on the device") {
			t.Errorf("kept: note %q", m.Note)
		}
		seen[key{m.Version, strings.Contains(m.Note, "gpu_filter")}] = true
	}
	for _, k := range []key{{4, false}, {5, false}, {4, true}, {5, true}} {
		if !seen[k] {
			t.Errorf("kept: no measurement for version %d filter %v\n%s", k.version, k.filter, out)
		}
	}
	if n := strings.Count(out, "kept 2000 points on the device"); n != 4 {
		t.Errorf("kept: %d uploads, want one per setting (4)\n%s", n, out)
	}
}
