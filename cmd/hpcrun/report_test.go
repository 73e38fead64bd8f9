package main

import (
	"encoding/json"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"hpcrun/report"
)

// TestRunWritesReport: `hpcrun run` ends with the report (rank 0), from
// the outputs it just wrote; `hpcrun report` writes it again on its own.
func TestRunWritesReport(t *testing.T) {
	dir, world := tinyWorld(t)
	work := filepath.Join(dir, "work")
	cfg := writeConfig(t, dir, tinyConfig(world, work)+`
[kmeans]
dataset = "laion"
k = 8
max_iter = 5
[dedup]
eps = 0.124
`)
	code, out := run(t, "run", cfg, "--ranks", "1")
	if code != 0 {
		t.Fatalf("run: exit %d\n%s", code, out)
	}
	index := filepath.Join(work, "report", "index.html")
	if !strings.Contains(out, "report: "+index+" (5 figures, 3 left out)") {
		t.Fatalf("run did not write the report:\n%s", out)
	}
	b, err := os.ReadFile(filepath.Join(work, "report.json"))
	if err != nil {
		t.Fatal(err)
	}
	var rep struct {
		Datasets map[string]struct{ Rows int64 }
		Stages   map[string]json.RawMessage
		Report   report.Summary
	}
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, f := range rep.Report.Figures {
		names = append(names, f.Name)
		r, err := os.Open(filepath.Join(work, "report", f.File))
		if err != nil {
			t.Fatal(err)
		}
		cfg, err := png.DecodeConfig(r)
		r.Close()
		if err != nil || cfg.Width != f.Width || cfg.Height != f.Height {
			t.Fatalf("%s: %v %+v", f.File, err, cfg)
		}
	}
	rows := rep.Datasets["laion"].Rows
	if strings.Join(names, ",") != "kept,kmeans_change,cluster_sizes,dedup_removed,stage_times" || rep.Report.KMeans == nil ||
		rep.Report.KMeans.Points != rows || rep.Report.Dedup == nil || rep.Report.Dedup.Points != rows || rows == 0 ||
		rep.Stages["kmeans"] == nil {
		t.Fatalf("report section: figures %v\n%s", names, b)
	}
	// kmeans ran 5 iterations at most, and says whether it converged
	if km := rep.Report.KMeans; km.Iterations < 1 || km.Iterations > 5 || km.K != 8 {
		t.Fatalf("kmeans summary: %+v", km)
	}

	// hpcrun report on its own, after the page was removed
	os.Remove(index)
	code, out = run(t, "report", cfg)
	if code != 0 {
		t.Fatalf("report: exit %d\n%s", code, out)
	}
	if _, err := os.Stat(index); err != nil {
		t.Fatal(err)
	}

	// usage and a workdir that is not there
	if code, out := run(t, "report"); code != 2 || !strings.Contains(out, "want exactly one CONFIG") {
		t.Fatalf("report without CONFIG: exit %d %q", code, out)
	}
	cfg2 := writeConfig(t, t.TempDir(), "[job]\nname = \"x\"\nworkdir = \"never-ran\"\n")
	if code, out := run(t, "report", cfg2); code != 1 || !strings.Contains(strings.SplitN(out, "\n", 2)[0], "never-ran: not found (run the experiment first)") {
		t.Fatalf("report of a workdir that is not there: exit %d %q", code, out)
	}
}
