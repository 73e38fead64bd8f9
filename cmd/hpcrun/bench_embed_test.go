package main

import (
	"context"
	"os"
	"strings"
	"testing"

	"hpcrun/clip/ort"
)

// The embed bench returns the stage's rate beside pure inference, on a
// one-layer ViT so the test stays quick.
func TestBenchEmbedOps(t *testing.T) {
	if _, err := ort.Init(); err != nil {
		if os.Getenv("HPCRUN_REQUIRE_REFS") == "1" {
			t.Fatal(err)
		}
		t.Skip(err)
	}
	t.Setenv("HPCRUN_BENCH_EMBED_LAYERS", "1")
	t.Setenv("HPCRUN_BENCH_EMBED_BATCH", "4")
	o := &benchOpts{nq: 10, dim: 64, threads: 1, set: map[string]bool{"nq": true}, host: "test"}
	ms, err := benchEmbed(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != 2 || ms[0].Op != "embed" || ms[1].Op != "ort" {
		t.Fatalf("measurements %+v", ms)
	}
	for _, m := range ms {
		if m.NQ != 10 || m.Dim != 64 || m.Seconds <= 0 || m.GFLOPS <= 0 || m.Host != "test" {
			t.Fatalf("measurement %+v", m)
		}
	}
	if !strings.Contains(ms[0].Note, "% of ort") {
		t.Fatalf("embed note %q", ms[0].Note)
	}
	t.Logf("%s | %s", ms[0].Note, ms[1].Note)
}
