package main

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
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
