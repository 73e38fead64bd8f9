package report

import (
	"encoding/json"
	"image"
	"image/png"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"hpcrun/dataset"
)

// TestReportFixture writes the report of a workdir with every kind of
// output and checks its numbers against the fixture's, its figures, the
// page and report.json.
func TestReportFixture(t *testing.T) {
	f := newFixture(t, t.TempDir())
	sum, err := Build(f.cfg)
	if err != nil {
		t.Fatal(err)
	}

	// every figure is there, in page order, and nothing is left out
	want := []string{"sims_imagenet-val", "sims_imagenet-sketch", "pruned", "kept", "kmeans_change", "cluster_sizes",
		"dedup_removed", "zeroshot", "stage_times"}
	var got []string
	for _, fig := range sum.Figures {
		got = append(got, fig.Name)
	}
	if !slices.Equal(got, want) || len(sum.Missing) != 0 {
		t.Fatalf("figures %v, missing %+v; want %v", got, sum.Missing, want)
	}
	checkFigures(t, f.work, sum)
	if _, err := os.Stat(filepath.Join(f.work, Dir, "sims_objectnet.png")); err == nil {
		t.Error("a stale figure of an earlier report was left behind")
	}

	// similarity: per eval set, laion and the reference (from sims/ for val,
	// from prune's thresholds for sketch)
	for i, ev := range fixtureEvals {
		es := sum.Similarity[i]
		if es.Eval != ev || es.Queries != len(f.nnBase[ev]) || len(es.Series) != 2 {
			t.Fatalf("similarity %d: %+v", i, es)
		}
		wantSrc := []string{"sims/laion/" + ev + "/topk_sims.npy", "sims/imagenet-train/" + ev + "/topk_sims.npy"}
		if i == 1 {
			wantSrc[1] = "prune/" + ev + "/thresholds.npy"
		}
		for j, s := range es.Series {
			v := [][]float32{f.nnBase[ev], f.nnRef[ev]}[j]
			if s.Source != filepath.FromSlash(wantSrc[j]) || s.Median != sig(median(v)) {
				t.Errorf("%s series %d: %+v; want source %s, median %v", ev, j, s, wantSrc[j], sig(median(v)))
			}
		}
		if es.Series[0].Role != "base" || es.Series[1].Role != "reference" || es.Base != "laion" || es.Reference != "imagenet-train" {
			t.Errorf("%s roles: %+v", ev, es)
		}
		n := closer(f.nnBase[ev], f.nnRef[ev])
		if es.CloserToBase != n || es.CloserFraction != sig(float64(n)/float64(es.Queries)) || n == 0 {
			t.Errorf("%s: closer to base %d (%v), want %d", ev, es.CloserToBase, es.CloserFraction, n)
		}
	}

	// prune counts per eval set and combined; the approximate rule's rows
	// from report.json
	if sum.Prune == nil || len(sum.Prune.Sets) != 3 || sum.Prune.Rows != 1000 {
		t.Fatalf("prune: %+v", sum.Prune)
	}
	for i, set := range append(slices.Clone(fixtureEvals), "combined") {
		s := sum.Prune.Sets[i]
		np := int64(len(f.pruned[set]))
		if s.Eval != set || s.Pruned != np || s.Kept != 1000-np || s.Fraction != sig(float64(np)/1000) {
			t.Errorf("prune %s: %+v, want %d pruned", set, s, np)
		}
	}
	if !slices.Equal(sum.Prune.Approx, []ApproxRow{{"imagenet-val", 26, 1}, {"combined", 44, 2}}) {
		t.Errorf("approx rows: %+v", sum.Prune.Approx)
	}

	// kept sizes of every list, in order: dedup, per eval set, combined,
	// random by size, near/far per eval set
	wantKept := []string{"dedup/keep_ids.npy", "prune/imagenet-val/keep_ids.npy", "prune/imagenet-sketch/keep_ids.npy",
		"prune/combined/keep_ids.npy", "prune/subsets/random_10.npy", "prune/subsets/random_40.npy",
		"prune/subsets/near_imagenet-val_10.npy", "prune/subsets/far_imagenet-val_10.npy",
		"prune/subsets/near_imagenet-sketch_10.npy", "prune/subsets/far_imagenet-sketch_10.npy"}
	if len(sum.Kept) != len(wantKept) {
		t.Fatalf("kept: %+v", sum.Kept)
	}
	for i, k := range sum.Kept {
		if k.File != filepath.FromSlash(wantKept[i]) || k.Size != f.kept[k.File] {
			t.Errorf("kept %d: %+v, want %s with %d ids", i, k, wantKept[i], f.kept[filepath.FromSlash(wantKept[i])])
		}
	}
	if sum.Kept[7].Dataset != "imagenet-val" || sum.Kept[4].Dataset != "subset" || sum.Kept[3].Dataset != "combined" {
		t.Errorf("kept colours: %+v", sum.Kept)
	}

	// k-means, cluster sizes from the assignments, dedup
	if km := sum.KMeans; km == nil || km.K != 6 || km.Iterations != 6 || !km.Converged || km.FinalChange != 0 || km.Bound != 1e-3 || km.Empty != 1 {
		t.Errorf("kmeans: %+v", sum.KMeans)
	}
	cs := sum.Clusters
	wantBins := []SizeBin{{64, 127, 2, 140}, {128, 255, 2, 380}, {256, 511, 1, 500}}
	if cs == nil || cs.Source != "kmeans/assignments.npy" || cs.Clusters != 6 || cs.Empty != 1 || cs.Min != 70 || cs.Median != 130 ||
		cs.Max != 500 || !slices.Equal(cs.Bins, wantBins) {
		t.Errorf("cluster sizes: %+v", cs)
	}
	if d := sum.Dedup; d == nil || d.Points != 1020 || d.Removed != 20 || d.Fraction != sig(20.0/1020) || len(d.Bins) != 3 ||
		d.Bins[2].Fraction != sig(16.0/750) {
		t.Errorf("dedup: %+v", sum.Dedup)
	}

	// zero-shot in config order; stages in pipeline order, not-built left out
	if !slices.Equal(sum.Zeroshot, []ZeroshotRow{{"imagenet-val", 0.8125, 0.9688, 200}, {"imagenet-sketch", 0.4067, 0.7, 150}}) {
		t.Errorf("zeroshot: %+v", sum.Zeroshot)
	}
	var stages []string
	for _, s := range sum.Stages {
		stages = append(stages, s.Stage)
	}
	if !slices.Equal(stages, []string{"kmeans", "dedup", "sims", "prune", "zeroshot"}) ||
		!slices.Equal(sum.Stages[0].RankSeconds, []float64{3.1, 2.718}) || sum.Stages[0].Seconds != 3.142 {
		t.Errorf("stages: %+v", sum.Stages)
	}

	// report.json: the other keys kept, "report" replaced by the summary
	raw, err := os.ReadFile(filepath.Join(f.work, "report.json"))
	if err != nil {
		t.Fatal(err)
	}
	var rep map[string]json.RawMessage
	if err := json.Unmarshal(raw, &rep); err != nil {
		t.Fatalf("report.json: %v", err)
	}
	for _, k := range []string{"job", "datasets", "stages", "someone_else", Key} {
		if _, ok := rep[k]; !ok {
			t.Errorf("report.json lost key %q", k)
		}
	}
	if string(rep["someone_else"]) != "{\n    \"keep\": \"me\",\n    \"n\": 42\n  }" {
		t.Errorf("someone_else: %s", rep["someone_else"])
	}
	var back Summary
	if err := json.Unmarshal(rep[Key], &back); err != nil {
		t.Fatal(err)
	}
	wantJSON, _ := json.Marshal(sum)
	gotJSON, _ := json.Marshal(&back)
	if string(gotJSON) != string(wantJSON) {
		t.Errorf("report.json's report section differs from the summary:\n%s\n%s", gotJSON, wantJSON)
	}

	checkPage(t, f.work, sum, 90)

	// a second report is the same, byte for byte (figures included)
	before := snapshot(t, filepath.Join(f.work, Dir))
	if _, err := Build(f.cfg); err != nil {
		t.Fatal(err)
	}
	after := snapshot(t, filepath.Join(f.work, Dir))
	if len(before) != len(after) {
		t.Fatalf("second report wrote %d files, first %d", len(after), len(before))
	}
	for n, b := range before {
		if after[n] != b {
			t.Errorf("%s differs between two reports of the same workdir", n)
		}
	}
}

func snapshot(t *testing.T, dir string) map[string]string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		out[e.Name()] = string(b)
	}
	return out
}

// checkFigures decodes every figure as PNG of its recorded size, and
// checks that it is no blank: a good share of non-white pixels, in more
// than a couple of colours.
func checkFigures(t *testing.T, work string, sum *Summary) {
	t.Helper()
	for _, fig := range sum.Figures {
		img := decodePNG(t, filepath.Join(work, Dir, fig.File))
		if b := img.Bounds(); b.Dx() != fig.Width || b.Dy() != fig.Height || fig.Width != figW {
			t.Errorf("%s: %dx%d, recorded %dx%d", fig.File, b.Dx(), b.Dy(), fig.Width, fig.Height)
		}
		ink, colours := inkOf(img, img.Bounds())
		if ink < 0.02 || colours < 4 {
			t.Errorf("%s looks blank: %.3f of pixels non-white, %d colours", fig.File, ink, colours)
		}
	}
}

func decodePNG(t *testing.T, path string) image.Image {
	t.Helper()
	r, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	img, err := png.Decode(r)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return img
}

// inkOf is the fraction of r's pixels that are not near-white, and how
// many distinct colours r has (counted up to 64).
func inkOf(img image.Image, r image.Rectangle) (float64, int) {
	ink, n := 0, 0
	seen := map[[3]uint32]bool{}
	for y := r.Min.Y; y < r.Max.Y; y++ {
		for x := r.Min.X; x < r.Max.X; x++ {
			cr, cg, cb, _ := img.At(x, y).RGBA()
			if cr < 0xF000 || cg < 0xF000 || cb < 0xF000 {
				ink++
			}
			if len(seen) < 64 {
				seen[[3]uint32{cr >> 8, cg >> 8, cb >> 8}] = true
			}
			n++
		}
	}
	return float64(ink) / float64(max(n, 1)), len(seen)
}

var numCell = regexp.MustCompile(`<(?:td|span) class="n">([^<]*)</`)

// checkPage checks index.html: one <img> per figure, a note per figure
// left out, nothing fetched from the network, and every number on it
// (each in an element of class "n") also in report.json.
func checkPage(t *testing.T, work string, sum *Summary, minNumbers int) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(work, Dir, "index.html"))
	if err != nil {
		t.Fatal(err)
	}
	page := string(b)
	if n := strings.Count(page, "<img "); n != len(sum.Figures) {
		t.Errorf("page has %d images, %d figures", n, len(sum.Figures))
	}
	for _, fig := range sum.Figures {
		if !strings.Contains(page, `<img src="`+fig.File+`" width="`+strconv.Itoa(fig.Width)+`" height="`+strconv.Itoa(fig.Height)+`"`) {
			t.Errorf("page does not show %s at its size", fig.File)
		}
	}
	for _, m := range sum.Missing {
		if !strings.Contains(page, "<code>"+m.Figure+"</code>: ") {
			t.Errorf("page does not say why %s is left out", m.Figure)
		}
	}
	for _, bad := range []string{"http://", "https://", "<link", "@import", "url("} {
		if strings.Contains(page, bad) {
			t.Errorf("page refers to something outside it: %q", bad)
		}
	}
	raw, err := os.ReadFile(filepath.Join(work, "report.json"))
	if err != nil {
		t.Fatal(err)
	}
	var all any
	if err := json.Unmarshal(raw, &all); err != nil {
		t.Fatal(err)
	}
	have := map[float64]bool{}
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case float64:
			have[v] = true
		case map[string]any:
			for _, x := range v {
				walk(x)
			}
		case []any:
			for _, x := range v {
				walk(x)
			}
		}
	}
	walk(all)
	cells := numCell.FindAllStringSubmatch(page, -1)
	if len(cells) < minNumbers {
		t.Fatalf("page shows only %d numbers", len(cells))
	}
	for _, c := range cells {
		v, err := strconv.ParseFloat(strings.ReplaceAll(c[1], ",", ""), 64)
		if err != nil {
			t.Errorf("page number %q does not parse", c[1])
			continue
		}
		if !have[v] {
			t.Errorf("page shows %s, which report.json does not hold", c[1])
		}
	}
	// every table cell that holds a number is a number cell
	for _, c := range regexp.MustCompile(`<td>([^<]*)</td>`).FindAllStringSubmatch(page, -1) {
		if _, err := strconv.ParseFloat(strings.ReplaceAll(c[1], ",", ""), 64); err == nil {
			t.Errorf("number %q is not in a number cell", c[1])
		}
	}
}

// TestReportMissingOutputs: a workdir with k-means outputs only draws the
// k-means figures and says why each other one is left out; a workdir with
// nothing writes an empty page; no workdir is an error.
func TestReportMissingOutputs(t *testing.T) {
	dir := t.TempDir()
	f := newFixture(t, dir)
	for _, d := range []string{"sims", "prune", "dedup", "zeroshot"} {
		must(t, os.RemoveAll(filepath.Join(f.work, d)))
	}
	must(t, os.Remove(filepath.Join(f.work, "report.json")))
	sum, err := Build(f.cfg)
	if err != nil {
		t.Fatal(err)
	}
	var figs, missing []string
	for _, fig := range sum.Figures {
		figs = append(figs, fig.Name)
	}
	for _, m := range sum.Missing {
		missing = append(missing, m.Figure)
		if m.Reason == "" {
			t.Errorf("%s left out without a reason", m.Figure)
		}
	}
	if !slices.Equal(figs, []string{"kmeans_change", "cluster_sizes"}) ||
		!slices.Equal(missing, []string{"sims_imagenet-val", "sims_imagenet-sketch", "pruned", "kept", "dedup_removed", "zeroshot", "stage_times"}) {
		t.Fatalf("figures %v, missing %v", figs, missing)
	}
	if sum.Missing[0].Reason != "no sims/<base>/imagenet-val/topk_sims.npy (sims stage) nor prune/imagenet-val/thresholds.npy (prune stage)" {
		t.Errorf("reason: %q", sum.Missing[0].Reason)
	}
	checkFigures(t, f.work, sum)
	checkPage(t, f.work, sum, 10)
	// report.json is created with the report section alone
	raw, _ := os.ReadFile(filepath.Join(f.work, "report.json"))
	var rep map[string]json.RawMessage
	if err := json.Unmarshal(raw, &rep); err != nil || len(rep) != 1 || rep[Key] == nil {
		t.Fatalf("report.json: %v %s", err, raw)
	}

	// no k-means assignments either: cluster sizes come from dedup's histogram
	f = newFixture(t, t.TempDir())
	must(t, os.Remove(filepath.Join(f.work, "kmeans", "assignments.npy")))
	sum, err = Build(f.cfg)
	if err != nil {
		t.Fatal(err)
	}
	if cs := sum.Clusters; cs == nil || cs.Source != "dedup/stats.json" || cs.Max != 500 || cs.Min != 0 ||
		!slices.Equal(cs.Bins, []SizeBin{{64, 127, 2, 140}, {128, 255, 1, 130}, {256, 511, 2, 750}}) {
		t.Errorf("cluster sizes from dedup: %+v", sum.Clusters)
	}
	checkPage(t, f.work, sum, 90)

	// a config without stage sections, on an empty workdir
	empty := loadConfig(t, t.TempDir(), "[job]\nname = \"e\"\nworkdir = \"w\"\n")
	must(t, os.MkdirAll(empty.Job.Workdir, 0o755))
	sum, err = Build(empty)
	if err != nil {
		t.Fatal(err)
	}
	if len(sum.Figures) != 0 || len(sum.Missing) != 8 || sum.Missing[0].Reason != "the config has no [sims] or [prune] section" {
		t.Fatalf("empty: %+v", sum)
	}
	checkPage(t, empty.Job.Workdir, sum, 0)

	// no workdir at all
	gone := loadConfig(t, t.TempDir(), "[job]\nname = \"e\"\nworkdir = \"nowhere\"\n")
	if _, err := Build(gone); err == nil || !strings.Contains(err.Error(), "nowhere: not found") {
		t.Fatalf("missing workdir: %v", err)
	}
}

// TestReportBadInput: an output that is there but unreadable fails the
// report with an error naming the file, and leaves no page behind.
func TestReportBadInput(t *testing.T) {
	for _, tc := range []struct {
		name, rel string
		damage    func(path string) error
		want      string
	}{
		{"truncated sims", "sims/laion/imagenet-val/topk_sims.npy", truncate, "truncated"},
		{"NaN in sims", "sims/laion/imagenet-sketch/topk_sims.npy", func(p string) error {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			copy(b[len(b)-20:], []byte{0, 0, 0xC0, 0x7F}) // a NaN in column 0 of the last row
			return os.WriteFile(p, b, 0o644)
		}, "row 149, column 0 is NaN"},
		{"bad assignments", "kmeans/assignments.npy", func(p string) error {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			copy(b[len(b)-4:], []byte{9, 0, 0, 0})
			return os.WriteFile(p, b, 0o644)
		}, "is in cluster 9, want [0, 6)"},
		{"bad state.json", "kmeans/state.json", func(p string) error { return os.WriteFile(p, []byte("{"), 0o644) }, "unexpected end of JSON"},
		{"2-d id list", "prune/combined/keep_ids.npy", func(p string) error {
			return dataset.WriteNPY(p, dataset.Int64, []int{1, 1}, []int64{0})
		}, "want a 1-d id list"},
		{"report.json not an object", "report.json", func(p string) error { return os.WriteFile(p, []byte("[1]"), 0o644) }, "report.json: json: cannot unmarshal array"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, t.TempDir())
			path := filepath.Join(f.work, tc.rel)
			must(t, tc.damage(path))
			_, err := Build(f.cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
			if !strings.Contains(err.Error(), path) {
				t.Fatalf("error does not name %s: %v", path, err)
			}
		})
	}
}

func truncate(p string) error {
	b, err := os.ReadFile(p)
	if err != nil {
		return err
	}
	return os.WriteFile(p, b[:len(b)-7], 0o644)
}

// TestNumbers pins the page's number format: what it prints parses back
// to the value report.json holds.
func TestNumbers(t *testing.T) {
	for _, tc := range []struct {
		v    float64
		want string
	}{{0, "0"}, {7, "7"}, {1234, "1,234"}, {-1234567, "-1,234,567"}, {103836, "103,836"}, {0.5701, "0.5701"},
		{1e-7, "0.0000001"}, {3.142, "3.142"}, {165300, "165,300"}} {
		if got := num(tc.v); got != tc.want {
			t.Errorf("num(%v) = %q, want %q", tc.v, got, tc.want)
		}
	}
	for _, tc := range []struct{ in, want float64 }{{3.14159, 3.142}, {165288.2006, 165300}, {0.0004995004, 0.0004995}, {0, 0}, {2.71828, 2.718}} {
		if got := sig(tc.in); got != tc.want {
			t.Errorf("sig(%v) = %v, want %v", tc.in, got, tc.want)
		}
	}
	if !math.IsNaN(sig(math.NaN())) {
		t.Error("sig(NaN)")
	}
}

// TestMergeReportJSON: the report section replaces its old value in place;
// every other key keeps its place and value; what is not a JSON object is
// an error, never overwritten.
func TestMergeReportJSON(t *testing.T) {
	p := filepath.Join(t.TempDir(), "report.json")
	must(t, os.WriteFile(p, []byte(`{"job": "x", "report": {"old": 1}, "stages": {"a": [1, 2.5e-7]}, "z": null}`), 0o644))
	must(t, mergeReportJSON(p, &Summary{Job: "x", Figures: []Figure{}, Missing: []Missing{}}))
	b, _ := os.ReadFile(p)
	want := `{
  "job": "x",
  "report": {
    "job": "x",
    "figures": [],
    "missing": []
  },
  "stages": {
    "a": [
      1,
      2.5e-7
    ]
  },
  "z": null
}
`
	if string(b) != want {
		t.Fatalf("merged:\n%s\nwant:\n%s", b, want)
	}
	for _, bad := range []string{"[1]", "{", ""} {
		must(t, os.WriteFile(p, []byte(bad), 0o644))
		if err := mergeReportJSON(p, &Summary{}); err == nil || !strings.Contains(err.Error(), p) {
			t.Errorf("%q: err = %v", bad, err)
		}
		if b, _ := os.ReadFile(p); string(b) != bad {
			t.Errorf("%q was overwritten", bad)
		}
	}
}
