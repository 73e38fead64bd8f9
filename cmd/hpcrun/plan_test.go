package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
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
	plan := func(nodes string, extra ...string) map[string]any {
		old := os.Stdout
		r, w, _ := os.Pipe()
		os.Stdout = w
		code, errOut := run(t, append([]string{"plan", cfg, "--nodes", nodes, "--points", "1e6", "--dim", "512", "--json"}, extra...)...)
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

	// GPU ranks: k-means' NearestCentroid has float32 centroids, so its rate
	// follows runtime.gpu_precision: the measured tensor-core rate with
	// float16, half of it with float16x2, the FFMA rate with float32 when
	// gpu_filter is off
	gpu := func(prec string) float64 {
		p := plan("1", "--gpus-per-node", "1", "--set", `runtime.gpu_precision="`+prec+`"`, "--set", "runtime.gpu_filter=false")
		rates := p["rates"].(map[string]any)
		if !strings.Contains(p["rates_source"].(string), "gpu_precision "+prec) {
			t.Errorf("rates source %q does not name gpu_precision %s", p["rates_source"], prec)
		}
		return rates["centroid"].(float64)
	}
	if f16, x2, f32 := gpu("float16"), gpu("float16x2"), gpu("float32"); f16 != 255e3 || x2 != f16/2 || f32 != gpuFFMA {
		t.Errorf("centroid rates: float16 %g, float16x2 %g, float32 %g", f16, x2, f32)
	}
	// runtime.gpu_filter (the default): float32 operands on the tensor cores (exact)
	p := plan("1", "--gpus-per-node", "1")
	if r := p["rates"].(map[string]any)["centroid"].(float64); r != 255e3*gpuFilterShare["centroid"] || !strings.Contains(p["rates_source"].(string), "gpu_filter") {
		t.Errorf("gpu_filter: centroid rate %g, source %q", r, p["rates_source"])
	}
}
