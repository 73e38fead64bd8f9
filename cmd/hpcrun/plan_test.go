package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
)

// The plan's work terms follow from the sizes: k-means FLOPs scale with
// n·k·d per iteration, and time falls with the number of ranks.
func TestPlanScales(t *testing.T) {
	dir := t.TempDir()
	cfg := writeConfig(t, dir, `
[job]
name = "p"
workdir = "`+filepath.Join(dir, "w")+`"
[datasets.laion]
path = "/nonexistent"
[kmeans]
dataset = "laion"
k = 1000
max_iter = 10
`)
	plan := func(nodes string) map[string]any {
		old := os.Stdout
		r, w, _ := os.Pipe()
		os.Stdout = w
		code, errOut := run(t, "plan", cfg, "--nodes", nodes, "--points", "1e6", "--dim", "512", "--json")
		w.Close()
		os.Stdout = old
		if code != 0 {
			t.Fatalf("plan: exit %d %s", code, errOut)
		}
		var out map[string]any
		if err := json.NewDecoder(r).Decode(&out); err != nil {
			t.Fatal(err)
		}
		return out
	}
	one, four := plan("1"), plan("4")
	secs := func(p map[string]any) float64 {
		return p["stages"].([]any)[0].(map[string]any)["seconds"].(float64)
	}
	// 10 iterations × 2·1e6·1000·512 FLOP at the assumed 180 GFLOP/s, plus one read of 1 GB at 2 GB/s
	want := 10*2*1e6*1000*512/180e9 + 1e6*512*2/2e9
	if s := secs(one); s < want || s > want*1.05 {
		t.Fatalf("1 node: %.3f s, want about %.3f", s, want)
	}
	if s1, s4 := secs(one), secs(four); s4 > s1/3.5 {
		t.Fatalf("4 nodes (%.3f s) not about 4x faster than 1 (%.3f s)", s4, s1)
	}
	if code, _ := run(t, "plan", cfg); code != 2 {
		t.Fatalf("plan without --nodes: exit %d", code)
	}
}
