package main

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"strings"
	"testing"

	"hpcrun/kernels/cuda"
)

// The kmeans-iter and dedup bench ops on small shapes: both sides run, and
// the dedup check (same removed count as numpy) passes.
func TestBenchKMeansOps(t *testing.T) {
	t.Setenv("HPCRUN_SCRIPTS", "../../scripts")
	refs := exec.Command("/usr/bin/python3", "-c", "import numpy, faiss").Run() == nil
	if !refs && os.Getenv("HPCRUN_REQUIRE_REFS") == "1" {
		t.Fatal("/usr/bin/python3 with numpy and faiss is required")
	}
	o := &benchOpts{nb: 3000, dim: 32, k: 20, dtype: "float16", threads: 1, host: "test",
		set: map[string]bool{"nb": true, "k": true}}
	ms, err := benchKMeansIter(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	o.nb = 600
	dd, err := benchDedup(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	want := 1
	if refs {
		want = 2
	}
	if len(ms) != want || len(dd) != want {
		t.Fatalf("got %d kmeans-iter and %d dedup measurements, want %d each", len(ms), len(dd), want)
	}
	for _, m := range append(ms, dd...) {
		if m.Seconds <= 0 || m.NB == 0 || m.Dim != 32 {
			t.Fatalf("measurement %+v", m)
		}
	}
	ours := dd[len(dd)-1]
	if ours.Impl != "hpcrun" || (refs && !strings.Contains(ours.Note, "same removed count")) {
		t.Fatalf("dedup: %+v", ours)
	}
	t.Log(ours.Note)
}

// TestBenchBackendCUDA: `hpcrun bench --backend cuda` runs the kernel ops on
// the CUDA backend (here its emulator), reports them as hpcrun-cuda without
// the CPU peak line, and fails with one clear line (exit 1) without a GPU;
// an unknown backend is a usage error.
func TestBenchBackendCUDA(t *testing.T) {
	out := t.TempDir() + "/b.json"
	t.Setenv(cuda.EmulatorEnv, "1")
	code, logs := run(t, "bench", "--backend", "cuda", "--ops", "peak,topk,centroid", "--nq", "40", "--nb", "700",
		"--dim", "32", "--k", "5", "--dtype", "float16", "--threads", "1", "--json", out)
	if code != 0 {
		t.Fatalf("exit %d:\n%s", code, logs)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	var ms []Measurement
	if err := json.Unmarshal(b, &ms); err != nil {
		t.Fatal(err)
	}
	if len(ms) != 2 || ms[0].Op != "topk" || ms[1].Op != "centroid" {
		t.Fatalf("measurements %+v, want topk and centroid (no CPU peak)", ms)
	}
	for _, m := range ms {
		if m.Impl != "hpcrun-cuda" || !strings.Contains(m.Note, "cuda(emulated)") || m.Seconds <= 0 {
			t.Errorf("measurement %+v", m)
		}
	}
	t.Setenv(cuda.EmulatorEnv, "")
	if _, err := cuda.Available(); err == nil {
		t.Skip("a GPU is present: the no-GPU error cannot be checked")
	}
	code, logs = run(t, "bench", "--backend", "cuda", "--ops", "topk", "--nq", "4", "--nb", "50", "--dim", "8")
	if code != 1 || !strings.Contains(logs, "bench --backend cuda: rank 0: kernels/cuda: no CUDA") {
		t.Errorf("without a GPU: exit %d:\n%s", code, logs)
	}
	if code, logs = run(t, "bench", "--backend", "tpu", "--ops", "topk"); code != 2 {
		t.Errorf("--backend tpu: exit %d:\n%s", code, logs)
	}
}
