package stages

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	"hpcrun/collective"
	"hpcrun/collective/natstest"
	"hpcrun/configs"
	"hpcrun/dataset"
	"hpcrun/kernels"
	"hpcrun/kernels/cuda"
	"hpcrun/synth"
)

// ---------------------------------------------------------------- helpers

// simsWorld writes the tiny synthetic world into a fresh folder.
func simsWorld(t testing.TB) (string, *synth.Truth) {
	t.Helper()
	dir := t.TempDir()
	truth, err := synth.Write(filepath.Join(dir, "data"), synth.Presets["tiny"], 7)
	if err != nil {
		t.Fatal(err)
	}
	return dir, truth
}

// simsConfig is the tiny world's experiment, with extra TOML appended.
func simsConfig(t testing.TB, dir, workdir, extra string) *configs.Config {
	t.Helper()
	doc := fmt.Sprintf(`
[job]
name = "simstest"
workdir = %q
seed = 333
[runtime]
ranks = 1
timeout = "60s"
threads = 1
block_rows = 700
[datasets.laion]
path = "data/laion"
layout = "clip-retrieval"
[datasets.imagenet-train]
path = "data/imagenet-train"
[datasets.imagenet-val]
path = "data/imagenet-val"
[datasets.imagenet-sketch]
path = "data/imagenet-sketch"
`, workdir) + extra
	cfg, err := configs.Parse([]byte(doc), filepath.Join(dir, "exp.toml"), nil)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func simsRun(t testing.TB, cfg *configs.Config, ranks int, only ...string) {
	t.Helper()
	// blocks of runtime.block_rows (700): several per shard
	defer func(n int) { simsScanRows = n }(simsScanRows)
	simsScanRows = 0
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if err := RunInProcess(context.Background(), cfg, ranks, only, log); err != nil {
		t.Fatal(err)
	}
}

// simsPython is /usr/bin/python3 with numpy; skips (fails with
// HPCRUN_REQUIRE_REFS=1) when there is none.
func simsPython(t testing.TB) string {
	t.Helper()
	for _, p := range []string{os.Getenv("HPCRUN_PYTHON"), "/usr/bin/python3", "python3"} {
		if p != "" && exec.Command(p, "-c", "import numpy").Run() == nil {
			return p
		}
	}
	if os.Getenv("HPCRUN_REQUIRE_REFS") == "1" {
		t.Fatal("python3 with numpy is required (apt-get install python3-numpy)")
	}
	t.Skip("no python3 with numpy (apt-get install python3-numpy)")
	return ""
}

// readI64 reads an int64 array of any shape.
func readI64(t testing.TB, path string) []int64 {
	t.Helper()
	f, h, err := dataset.OpenNPY(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if h.DType != dataset.Int64 {
		t.Fatalf("%s: %s, want int64", path, h.DType.Name())
	}
	b := make([]byte, 8*h.Elems())
	if _, err := io.ReadFull(f, b); err != nil {
		t.Fatal(err)
	}
	v := make([]int64, h.Elems())
	for i := range v {
		v[i] = int64(binary.LittleEndian.Uint64(b[8*i:]))
	}
	return v
}

func readF32(t testing.TB, path string) ([]float32, []int) {
	t.Helper()
	v, shape, err := dataset.ReadFloat32(path)
	if err != nil && !strings.Contains(err.Error(), "is -Inf") && !strings.Contains(err.Error(), "is +Inf") {
		t.Fatal(err)
	}
	if err != nil { // padding: read raw
		f, h, err := dataset.OpenNPY(path)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		v = make([]float32, h.Elems())
		b := make([]byte, 4*len(v))
		if _, err := io.ReadFull(f, b); err != nil {
			t.Fatal(err)
		}
		for i := range v {
			v[i] = math.Float32frombits(uint32(b[4*i]) | uint32(b[4*i+1])<<8 | uint32(b[4*i+2])<<16 | uint32(b[4*i+3])<<24)
		}
		shape = h.Shape
	}
	return v, shape
}

// shardFiles lists a dataset's embedding files.
func shardFiles(t testing.TB, cfg *configs.Config, name string) []string {
	t.Helper()
	d, err := OpenDataset(cfg, name)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, s := range d.Shards {
		out = append(out, s.Emb)
	}
	return out
}

// simsRef runs scripts/sims_ref.py for base (sims/maxsim/prune against
// prune.reference) into dir/ref-<base> and returns that folder.
func simsRef(t testing.TB, cfg *configs.Config, dir, base, keep string, k int, worst bool, cand int, nearFar []int) string {
	t.Helper()
	py := simsPython(t)
	out := filepath.Join(dir, "ref-"+base)
	d, err := OpenDataset(cfg, base)
	if err != nil {
		t.Fatal(err)
	}
	ids, err := d.AllIDs()
	if err != nil {
		t.Fatal(err)
	}
	idsPath := filepath.Join(dir, base+"-ids.npy")
	if err := dataset.WriteInt64(idsPath, ids); err != nil {
		t.Fatal(err)
	}
	var evals []map[string]any
	for _, e := range []string{"imagenet-val", "imagenet-sketch"} {
		evals = append(evals, map[string]any{"name": e, "emb": shardFiles(t, cfg, e)})
	}
	spec := map[string]any{
		"out":            out,
		"base":           map[string]any{"name": base, "emb": shardFiles(t, cfg, base), "ids": idsPath},
		"keep":           keep,
		"reference":      map[string]any{"name": "imagenet-train", "emb": shardFiles(t, cfg, "imagenet-train")},
		"evals":          evals,
		"k":              k,
		"worst":          worst,
		"candidates":     cand,
		"near_far_sizes": nearFar,
	}
	b, _ := json.Marshal(spec)
	specPath := filepath.Join(dir, "spec-"+base+".json")
	if err := os.WriteFile(specPath, b, 0o644); err != nil {
		t.Fatal(err)
	}
	root, _ := filepath.Abs("..")
	cmd := exec.Command(py, filepath.Join(root, "scripts", "sims_ref.py"), specPath)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("sims_ref.py: %v\n%s", err, out)
	}
	return out
}

// refSims is the reference's exact similarities of one eval set to the
// kept base rows: sim(q, id).
type refSims struct {
	S    [][]float64
	col  map[int64]int
	ids  []int64
	thr  []float64
	nCol int
}

func loadRefSims(t testing.TB, ref, eval string) *refSims {
	t.Helper()
	py := simsPython(t)
	// float64 .npy: read through numpy as text, small
	out, err := exec.Command(py, "-c", `import numpy as np,sys
S=np.load(sys.argv[1]); print(S.shape[0], S.shape[1]); np.savetxt(sys.stdout, S, fmt="%.17g")
t=np.load(sys.argv[2]); np.savetxt(sys.stdout, t[None,:], fmt="%.17g")`,
		filepath.Join(ref, "S", eval+".npy"), filepath.Join(ref, "S", eval+"_thr.npy")).Output()
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	var q, n int
	fmt.Sscan(lines[0], &q, &n)
	parse := func(line string) []float64 {
		var row []float64
		for _, f := range strings.Fields(line) {
			var v float64
			fmt.Sscan(f, &v)
			row = append(row, v)
		}
		return row
	}
	r := &refSims{col: map[int64]int{}, nCol: n}
	for i := 0; i < q; i++ {
		r.S = append(r.S, parse(lines[1+i]))
	}
	r.thr = parse(lines[1+q])
	r.ids = readI64(t, filepath.Join(ref, "S", eval+"_ids.npy"))
	for j, id := range r.ids {
		r.col[id] = j
	}
	return r
}

func (r *refSims) sim(t testing.TB, q int, id int64) float64 {
	j, ok := r.col[id]
	if !ok {
		t.Fatalf("id %d is not a (kept) base id", id)
	}
	return r.S[q][j]
}

// valTol is how far a float32 similarity may be from the float64 one.
const valTol = 1e-5

// tieTol: two ids may trade places only when their exact similarities are
// this close.
const tieTol = 1e-6

// checkTopK compares a [q,k] top-k (or bottom-k) output with the reference:
// values within valTol, every id's exact similarity equal to its value,
// and the id sets equal except for ties within tieTol at the k-th place.
func checkTopK(t *testing.T, got, ref string, rs *refSims, stem string, smallest bool) {
	t.Helper()
	gv, gshape := readF32(t, filepath.Join(got, stem+"_sims.npy"))
	rv, rshape := readF32(t, filepath.Join(ref, stem+"_sims.npy"))
	gi := readI64(t, filepath.Join(got, stem+"_ids.npy"))
	ri := readI64(t, filepath.Join(ref, stem+"_ids.npy"))
	if !slices.Equal(gshape, rshape) || len(gi) != len(ri) {
		t.Fatalf("%s/%s: shape %v, want %v", got, stem, gshape, rshape)
	}
	q, k := rshape[0], rshape[1]
	for i := 0; i < q; i++ {
		for j := 0; j < k; j++ {
			x := i*k + j
			if ri[x] < 0 || gi[x] < 0 {
				if ri[x] != gi[x] || (gv[x] != rv[x]) {
					t.Fatalf("%s/%s[%d,%d]: padding id %d val %v, want %d %v", got, stem, i, j, gi[x], gv[x], ri[x], rv[x])
				}
				continue
			}
			if math.Abs(float64(gv[x]-rv[x])) > valTol {
				t.Fatalf("%s/%s[%d,%d] = %v, want %v", got, stem, i, j, gv[x], rv[x])
			}
			if s := rs.sim(t, i, gi[x]); math.Abs(s-float64(gv[x])) > valTol {
				t.Fatalf("%s/%s[%d,%d]: id %d has similarity %v, output says %v", got, stem, i, j, gi[x], s, gv[x])
			}
			if gi[x] != ri[x] && math.Abs(rs.sim(t, i, gi[x])-rs.sim(t, i, ri[x])) > tieTol {
				t.Fatalf("%s/%s[%d,%d]: id %d (sim %.9f), want %d (sim %.9f)", got, stem, i, j, gi[x], rs.sim(t, i, gi[x]), ri[x], rs.sim(t, i, ri[x]))
			}
		}
	}
}

// checkIDSet compares two sorted id lists, allowing differences only for
// ids whose margin(id) is within valTol of the decision boundary.
func checkIDSet(t *testing.T, what string, got, want []int64, margin func(id int64) float64) {
	t.Helper()
	if !slices.IsSorted(got) {
		t.Fatalf("%s: not sorted", what)
	}
	gs, ws := map[int64]bool{}, map[int64]bool{}
	for _, v := range got {
		if gs[v] {
			t.Fatalf("%s: id %d twice", what, v)
		}
		gs[v] = true
	}
	for _, v := range want {
		ws[v] = true
	}
	for _, v := range got {
		if !ws[v] && math.Abs(margin(v)) > valTol {
			t.Fatalf("%s: id %d not in the reference (margin %g)", what, v, margin(v))
		}
	}
	for _, v := range want {
		if !gs[v] && math.Abs(margin(v)) > valTol {
			t.Fatalf("%s: id %d missing (margin %g); got %d ids, want %d", what, v, margin(v), len(got), len(want))
		}
	}
}

// ---------------------------------------------------------------- numpy reference

const simsPruneTOML = `
[sims]
base = ["laion", "imagenet-train"]
eval = ["imagenet-val", "imagenet-sketch"]
k = %d
worst = true
[prune]
base = "laion"
reference = "imagenet-train"
eval = ["imagenet-val", "imagenet-sketch"]
random_sizes = [100, 100000]
near_far_sizes = [5, 40]
candidates = %d
`

// TestSimsPruneMatchNumpy runs sims and prune on the tiny world and checks
// every output against scripts/sims_ref.py (the obvious numpy), and that
// the planted near-eval points are all pruned.
func TestSimsPruneMatchNumpy(t *testing.T) {
	dir, _ := simsWorld(t)
	const k, cand = 10, 1
	cfg := simsConfig(t, dir, "run", fmt.Sprintf(simsPruneTOML, k, cand))
	simsRun(t, cfg, 1)
	work := cfg.Job.Workdir
	nearFar := []int{5, 40}
	for _, base := range []string{"laion", "imagenet-train"} {
		ref := simsRef(t, cfg, dir, base, "", k, true, cand, nearFar)
		for _, ev := range []string{"imagenet-val", "imagenet-sketch"} {
			rs := loadRefSims(t, ref, ev)
			got := filepath.Join(work, "sims", base, ev)
			want := filepath.Join(ref, "sims", base, ev)
			checkTopK(t, got, want, rs, "topk", false)
			checkTopK(t, got, want, rs, "bottomk", true)
			checkMaxsim(t, filepath.Join(work, "maxsim", base, ev), filepath.Join(ref, "maxsim", base, ev), rs)
			if base == "laion" {
				checkPrune(t, work, ref, ev, rs)
			}
		}
		if base == "laion" {
			checkPruneCombined(t, cfg, work, ref, nearFar)
		}
	}
}

func checkMaxsim(t *testing.T, got, ref string, rs *refSims) {
	t.Helper()
	gi, ri := readI64(t, filepath.Join(got, "ids.npy")), readI64(t, filepath.Join(ref, "ids.npy"))
	if !slices.Equal(gi, ri) {
		t.Fatalf("%s/ids.npy: %d ids, not the base's %d in order", got, len(gi), len(ri))
	}
	gv, _ := readF32(t, filepath.Join(got, "sims.npy"))
	rv, _ := readF32(t, filepath.Join(ref, "sims.npy"))
	ga, ra := readI64(t, filepath.Join(got, "argmax.npy")), readI64(t, filepath.Join(ref, "argmax.npy"))
	if len(gv) != len(rv) || len(ga) != len(ra) {
		t.Fatalf("%s: lengths %d %d, want %d", got, len(gv), len(ga), len(rv))
	}
	for j := range rv {
		if math.Abs(float64(gv[j]-rv[j])) > valTol {
			t.Fatalf("%s/sims.npy[%d] = %v, want %v", got, j, gv[j], rv[j])
		}
		if ga[j] != ra[j] && math.Abs(rs.S[ga[j]][j]-rs.S[ra[j]][j]) > tieTol {
			t.Fatalf("%s/argmax.npy[%d] = %d, want %d", got, j, ga[j], ra[j])
		}
	}
}

// pruneMargin is max_q (S[q,id] - thr[q]): > 0 means pruned.
func (r *refSims) pruneMargin(id int64) float64 {
	j := r.col[id]
	m := math.Inf(-1)
	for q := range r.S {
		m = max(m, r.S[q][j]-r.thr[q])
	}
	return m
}

func checkPrune(t *testing.T, work, ref, ev string, rs *refSims) {
	t.Helper()
	th, _ := readF32(t, filepath.Join(work, "prune", ev, "thresholds.npy"))
	for q, v := range th {
		if math.Abs(float64(v)-rs.thr[q]) > valTol {
			t.Fatalf("%s threshold[%d] = %v, want %v", ev, q, v, rs.thr[q])
		}
	}
	for _, kind := range []string{"prune", "keep"} {
		got := readI64(t, filepath.Join(work, "prune", ev, kind+"_ids.npy"))
		want := readI64(t, filepath.Join(ref, "prune", ev, kind+"_ids.npy"))
		checkIDSet(t, ev+"/"+kind, got, want, rs.pruneMargin)
	}
	// the approximate rule: its ids exactly (no boundary case in this world)
	got := readI64(t, filepath.Join(work, "prune", ev, "approx_prune_ids.npy"))
	want := readI64(t, filepath.Join(ref, "prune", ev, "approx_prune_ids.npy"))
	if !slices.Equal(got, want) {
		t.Fatalf("%s approx_prune_ids: %v, want %v", ev, got, want)
	}
}

func checkPruneCombined(t *testing.T, cfg *configs.Config, work, ref string, nearFar []int) {
	t.Helper()
	evs := []string{"imagenet-val", "imagenet-sketch"}
	var rss []*refSims
	for _, ev := range evs {
		rss = append(rss, loadRefSims(t, ref, ev))
	}
	margin := func(id int64) float64 {
		m := math.Inf(-1)
		for _, r := range rss {
			m = max(m, r.pruneMargin(id))
		}
		return m
	}
	for _, kind := range []string{"prune", "keep"} {
		checkIDSet(t, "combined/"+kind, readI64(t, filepath.Join(work, "prune", "combined", kind+"_ids.npy")),
			readI64(t, filepath.Join(ref, "prune", "combined", kind+"_ids.npy")), margin)
	}
	// planted near-eval points: all pruned
	data := filepath.Join(filepath.Dir(cfg.Datasets["laion"].Path))
	for _, ev := range evs {
		planted := readI64(t, filepath.Join(data, "truth", "near_eval_"+ev+"_ids.npy"))
		pruned := readI64(t, filepath.Join(work, "prune", ev, "prune_ids.npy"))
		for _, id := range planted {
			if _, ok := slices.BinarySearch(pruned, id); !ok {
				t.Fatalf("planted near-%s point %d not pruned", ev, id)
			}
		}
		if len(planted) == 0 {
			t.Fatalf("no planted points for %s", ev)
		}
	}
	// near/far subsets: the n kept ids of largest / smallest maxsim
	keep := readI64(t, filepath.Join(work, "prune", "combined", "keep_ids.npy"))
	for e, ev := range evs {
		maxsim := func(id int64) float64 {
			j := rss[e].col[id]
			m := math.Inf(-1)
			for q := range rss[e].S {
				m = max(m, rss[e].S[q][j])
			}
			return m
		}
		for _, side := range []string{"near", "far"} {
			for _, n := range nearFar {
				name := fmt.Sprintf("%s_%s_%d.npy", side, ev, n)
				got := readI64(t, filepath.Join(work, "prune", "subsets", name))
				want := readI64(t, filepath.Join(ref, "prune", "subsets", name))
				if len(got) != len(want) || len(got) != min(n, len(keep)) {
					t.Fatalf("%s: %d ids, want %d", name, len(got), len(want))
				}
				// the boundary: the n-th value of the reference
				var vals []float64
				for _, id := range want {
					vals = append(vals, maxsim(id))
				}
				sort.Float64s(vals)
				edge := vals[0]
				if side == "far" {
					edge = vals[len(vals)-1]
				}
				checkIDSet(t, name, got, want, func(id int64) float64 { return maxsim(id) - edge })
				for _, id := range got {
					if _, ok := slices.BinarySearch(keep, id); !ok {
						t.Fatalf("%s: id %d is not kept", name, id)
					}
				}
			}
		}
	}
	// random subsets: sorted, distinct, kept; a size above the kept count takes all
	for _, n := range []int{100, 100000} {
		got := readI64(t, filepath.Join(work, "prune", "subsets", fmt.Sprintf("random_%d.npy", n)))
		if len(got) != min(n, len(keep)) || !slices.IsSorted(got) || len(slices.Compact(slices.Clone(got))) != len(got) {
			t.Fatalf("random_%d: %d ids (sorted %v), want %d", n, len(got), slices.IsSorted(got), min(n, len(keep)))
		}
		for _, id := range got {
			if _, ok := slices.BinarySearch(keep, id); !ok {
				t.Fatalf("random_%d: id %d is not kept", n, id)
			}
		}
	}
	// report.json: counts and the approximate rule's misses as the reference says
	var sum struct {
		Evals    map[string]map[string]int `json:"evals"`
		Combined map[string]int            `json:"combined"`
	}
	b, err := os.ReadFile(filepath.Join(ref, "summary.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &sum); err != nil {
		t.Fatal(err)
	}
	var rep struct {
		Stages map[string]struct {
			Extra map[string]json.RawMessage `json:"extra"`
		} `json:"stages"`
	}
	b, err = os.ReadFile(filepath.Join(work, "report.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatal(err)
	}
	ex := rep.Stages["prune"].Extra
	for _, ev := range append(evs, "combined") {
		var got map[string]any
		if err := json.Unmarshal(ex[ev], &got); err != nil {
			t.Fatalf("report.json prune.%s: %v", ev, err)
		}
		want := sum.Combined
		if ev != "combined" {
			want = sum.Evals[ev]
		}
		for _, key := range []string{"pruned", "kept", "approx_pruned", "approx_missed"} {
			if int(got[key].(float64)) != want[key] {
				t.Fatalf("report.json prune.%s.%s = %v, want %d", ev, key, got[key], want[key])
			}
		}
		if ev != "combined" && got["nn_base_quantiles"] == nil {
			t.Fatalf("report.json prune.%s: no nn_base_quantiles", ev)
		}
	}
	if sum.Combined["approx_missed"] == 0 {
		t.Fatalf("candidates=1 should miss some pruned ids (test data too easy)")
	}
}

// ---------------------------------------------------------------- ranks, passes, dedup, resume

// simsDedup is simsPruneTOML with k and dedup on laion, the ids dedup
// removes from the tiny world and those it keeps.
func simsDedup(truth *synth.Truth, k int) (extra string, removed, keep []int64) {
	extra = fmt.Sprintf(simsPruneTOML, k, 1) + `
[kmeans]
dataset = "laion"
[dedup]
`
	removed = truth.ExpectedDedupRemoved()
	for id := int64(0); id < int64(truth.BaseRows); id++ {
		if _, ok := slices.BinarySearch(removed, id); !ok {
			keep = append(keep, id)
		}
	}
	return extra, removed, keep
}

// TestSimsPruneRanksIdentical: 1 and 3 ranks give byte-identical outputs,
// with a deduplicated base, k above the base size (padding), query chunks
// (several passes over the base) and partials merged through files; a
// second run skips; the dedup filter matches the numpy reference.
func TestSimsPruneRanksIdentical(t *testing.T) {
	dir, truth := simsWorld(t)
	// dedup's output, as the dedup stage writes it
	extra, removed, keep := simsDedup(truth, 3500)
	cfg1 := simsConfig(t, dir, "run1", extra)
	keepPath := filepath.Join(cfg1.Job.Workdir, "dedup", "keep_ids.npy")
	if err := dataset.WriteInt64(keepPath, keep); err != nil {
		t.Fatal(err)
	}
	simsRun(t, cfg1, 1, "sims", "prune")

	cfg3 := simsConfig(t, dir, "run3", extra)
	if err := dataset.WriteInt64(filepath.Join(cfg3.Job.Workdir, "dedup", "keep_ids.npy"), keep); err != nil {
		t.Fatal(err)
	}
	defer func(s, g int64) { simsStateBytes, simsGatherBytes = s, g }(simsStateBytes, simsGatherBytes)
	simsStateBytes = 3500 * topkEntryBytes * 16 // 16 queries per pass
	simsGatherBytes = 0                         // every merge through files
	simsRun(t, cfg3, 3, "sims", "prune")
	simsStateBytes, simsGatherBytes = 512<<20, 64<<20

	a := outputFiles(t, cfg1.Job.Workdir)
	b := outputFiles(t, cfg3.Job.Workdir)
	if len(a) < 30 || !slices.Equal(keysOf(a), keysOf(b)) {
		t.Fatalf("outputs differ: %v vs %v", keysOf(a), keysOf(b))
	}
	noLeftovers(t, cfg1.Job.Workdir)
	noLeftovers(t, cfg3.Job.Workdir)
	for name, x := range a {
		if !bytes.Equal(x, b[name]) {
			t.Fatalf("%s differs between 1 and 3 ranks", name)
		}
	}
	// dedup applied: no removed id anywhere; k > base pads with -1
	ids := readI64(t, filepath.Join(cfg1.Job.Workdir, "maxsim", "laion", "imagenet-val", "ids.npy"))
	if len(ids) != len(keep) {
		t.Fatalf("maxsim covers %d ids, want the %d dedup kept", len(ids), len(keep))
	}
	top := readI64(t, filepath.Join(cfg1.Job.Workdir, "sims", "laion", "imagenet-val", "topk_ids.npy"))
	pads := 0
	for _, id := range top {
		if id < 0 {
			pads++
		} else if _, ok := slices.BinarySearch(removed, id); ok {
			t.Fatalf("removed id %d in top-k", id)
		}
	}
	if want := (3500 - len(keep)) * truth.Sets["imagenet-val"]; pads != want {
		t.Fatalf("%d padding entries, want %d", pads, want)
	}
	// the numpy reference with the dedup filter (k above the base size)
	ref := simsRef(t, cfg1, dir, "laion", keepPath, 3500, true, 1, []int{5, 40})
	for _, ev := range []string{"imagenet-val", "imagenet-sketch"} {
		rs := loadRefSims(t, ref, ev)
		got := filepath.Join(cfg1.Job.Workdir, "sims", "laion", ev)
		checkTopK(t, got, filepath.Join(ref, "sims", "laion", ev), rs, "topk", false)
		checkTopK(t, got, filepath.Join(ref, "sims", "laion", ev), rs, "bottomk", true)
		checkPrune(t, cfg1.Job.Workdir, ref, ev, rs)
	}

	// prune without the sims stage's outputs (computing nearest neighbours
	// and maxsim itself) writes the same files
	cfgP := simsConfig(t, dir, "runP", extra)
	if err := dataset.WriteInt64(filepath.Join(cfgP.Job.Workdir, "dedup", "keep_ids.npy"), keep); err != nil {
		t.Fatal(err)
	}
	simsRun(t, cfgP, 2, "prune")
	pOnly := outputFiles(t, cfgP.Job.Workdir)
	for name, x := range a {
		if strings.HasPrefix(name, "prune") && !bytes.Equal(x, pOnly[name]) {
			t.Fatalf("%s differs when prune computes what sims computed", name)
		}
	}
	for _, key := range []string{"from_sims", "thresholds_from_sims"} {
		if got, want := fmt.Sprint(reportExtra(t, cfgP.Job.Workdir, "prune")[key]), "[]"; got != want {
			t.Fatalf("prune alone: %s = %s", key, got)
		}
		if got, want := fmt.Sprint(reportExtra(t, cfg1.Job.Workdir, "prune")[key]), "[imagenet-val imagenet-sketch]"; got != want {
			t.Fatalf("sims then prune: %s = %s, want %s", key, got, want)
		}
	}

	// a second run is skipped and changes nothing
	simsRun(t, cfg3, 3, "sims", "prune")
	status := reportStatus(t, cfg3.Job.Workdir)
	if status["sims"] != "skipped" || status["prune"] != "skipped" {
		t.Fatalf("rerun: %v, want both skipped", status)
	}
	for name, x := range outputFiles(t, cfg3.Job.Workdir) {
		if !bytes.Equal(x, b[name]) {
			t.Fatalf("rerun changed %s", name)
		}
	}
	// a changed parameter reruns
	cfg3.Sims.K = 7
	simsRun(t, cfg3, 3, "sims")
	if s := reportStatus(t, cfg3.Job.Workdir)["sims"]; s != "done" {
		t.Fatalf("sims after k changed: %s", s)
	}
	if _, shape := readF32(t, filepath.Join(cfg3.Job.Workdir, "sims", "laion", "imagenet-val", "topk_sims.npy")); shape[1] != 7 {
		t.Fatalf("topk shape %v after k=7", shape)
	}
}

func reportStatus(t testing.TB, work string) map[string]string {
	t.Helper()
	var rep struct {
		Stages map[string]struct {
			Status string `json:"status"`
		} `json:"stages"`
	}
	b, err := os.ReadFile(filepath.Join(work, "report.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for k, v := range rep.Stages {
		out[k] = v.Status
	}
	return out
}

func reportExtra(t testing.TB, work, stage string) map[string]any {
	t.Helper()
	var rep struct {
		Stages map[string]struct {
			Extra map[string]any `json:"extra"`
		} `json:"stages"`
	}
	b, err := os.ReadFile(filepath.Join(work, "report.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatal(err)
	}
	return rep.Stages[stage].Extra
}

// outputFiles reads every .npy and .tar under work (relative name -> bytes).
func outputFiles(t testing.TB, work string) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	err := filepath.Walk(work, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		if fi.IsDir() || strings.HasPrefix(fi.Name(), ".") || !(strings.HasSuffix(p, ".npy") || strings.HasSuffix(p, ".tar")) {
			return nil
		}
		rel, _ := filepath.Rel(work, p)
		if strings.HasPrefix(rel, "dedup") {
			return nil
		}
		b, err := os.ReadFile(p)
		out[rel] = b
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// noLeftovers fails on temp files (parts, transfers) left in the folders
// of sims, prune and subsample.
func noLeftovers(t testing.TB, work string) {
	t.Helper()
	for _, stage := range []string{"sims", "maxsim", "prune", "subsample"} {
		filepath.Walk(filepath.Join(work, stage), func(p string, fi os.FileInfo, err error) error {
			if err == nil && strings.HasPrefix(fi.Name(), ".") {
				t.Errorf("left over: %s", p)
			}
			return nil
		})
	}
}

func keysOf[V any](m map[string]V) []string {
	var k []string
	for n := range m {
		k = append(k, n)
	}
	sort.Strings(k)
	return k
}

// TestSimsStreamWindows: sims and prune on the emulated GPU, whose top-k
// streams keep their state on the device between blocks, flushed every
// 1,500 rows (windows of two or three 700-row blocks, dedup compacting
// them) instead of once a pass: with the exact filter the outputs are the
// CPU backend's byte for byte, and without it (tensor-core rounding) the
// same as with one flush per pass.
func TestSimsStreamWindows(t *testing.T) {
	t.Setenv(cuda.EmulatorEnv, "1")
	dir, truth := simsWorld(t)
	extra, _, keep := simsDedup(truth, 20)
	defer func(w, r int) { simsStreamWindow, simsStreamRows = w, r }(simsStreamWindow, simsStreamRows)
	simsStreamRows = 0 // blocks of runtime.block_rows (700)
	run := func(work string, filter bool, window int) map[string][]byte {
		t.Helper()
		cfg := simsConfig(t, dir, work, extra)
		if err := dataset.WriteInt64(filepath.Join(cfg.Job.Workdir, "dedup", "keep_ids.npy"), keep); err != nil {
			t.Fatal(err)
		}
		if window == 0 {
			simsRun(t, cfg, 1, "sims", "prune") // the CPU backend
		} else {
			simsStreamWindow = window
			b, err := cuda.New(0, 1)
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			b.Filter = filter
			env := &Env{Cfg: cfg, Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Threads: 1, Backend: b}
			if err := Run(context.Background(), env, []string{"sims", "prune"}); err != nil {
				t.Fatal(err)
			}
		}
		noLeftovers(t, cfg.Job.Workdir)
		return outputFiles(t, cfg.Job.Workdir)
	}
	same := func(what string, a, b map[string][]byte) {
		t.Helper()
		if len(a) < 30 || !slices.Equal(keysOf(a), keysOf(b)) {
			t.Fatalf("%s: outputs differ: %v vs %v", what, keysOf(a), keysOf(b))
		}
		for name, x := range a {
			if !bytes.Equal(x, b[name]) {
				t.Errorf("%s: %s differs", what, name)
			}
		}
	}
	same("exact filter, windows of 1,500 rows vs the CPU backend", run("cpu", false, 0), run("filter", true, 1500))
	same("tensor cores, windows of 1,500 rows vs one per pass", run("pass", false, 1<<24), run("windows", false, 1500))
}

// ---------------------------------------------------------------- the merge

// TestTopkStateMerge: a pass's streams flushed into the running state
// (after every block, and every 9 rows: windows of blocks), and states
// merged into each other, equal kernels.MergeTopK over the whole, ties by
// row included, for both directions and k above and below the block size.
func TestTopkStateMerge(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, c := range []struct {
		small  bool
		window int
	}{{false, 1}, {true, 1}, {false, 9}, {true, 9}} {
		small := c.small
		for _, k := range []int{1, 3, 17, 40} {
			nq, nb, d := 5, 37, 4
			q := make([]float32, nq*d)
			b := make([]float32, nb*d)
			for i := range q {
				q[i] = float32(rng.IntN(3) - 1) // small integers: many exact ties
			}
			for i := range b {
				b[i] = float32(rng.IntN(3) - 1)
			}
			Q := kernels.F32Matrix(q, nq, d)
			want, err := kernels.Naive{}.TopK(Q, kernels.F32Matrix(b, nb, d), kernels.TopKOptions{K: k, Smallest: small})
			if err != nil {
				t.Fatal(err)
			}
			be := kernels.NewCPU(1)
			// three "ranks" of unequal blocks, merged in a scrambled order
			var parts []*topkState
			for _, cut := range [][2]int{{0, 5}, {5, 6}, {6, 30}, {30, 37}} {
				job := &topkJob{q1: nq}
				tp, err := newTopkPass(be, []*topkJob{job}, []topkSet{{Q: Q, Smallest: small}}, k, 2)
				if err != nil {
					t.Fatal(err)
				}
				tp.window = c.window
				for r0 := cut[0]; r0 < cut[1]; r0 += 4 {
					r1 := min(cut[1], r0+4)
					rows, ids := []int64{}, []int64{}
					for r := r0; r < r1; r++ {
						rows = append(rows, int64(r))
						ids = append(ids, 1000+int64(r))
					}
					blk := scanBlock{M: kernels.F32Matrix(b[r0*d:r1*d], r1-r0, d), Rows: rows, IDs: ids}
					if err := tp.add(blk); err != nil {
						t.Fatal(err)
					}
				}
				if err := tp.flush(); err != nil {
					t.Fatal(err)
				}
				tp.release()
				parts = append(parts, job.st)
			}
			got := parts[2]
			for _, p := range []int{0, 3, 1} {
				o, err := got.unmarshal(parts[p].marshal())
				if err != nil {
					t.Fatal(err)
				}
				got.merge(o)
			}
			for i := range want.Val {
				if got.val[i] != want.Val[i] || got.row[i] != want.Idx[i] || (want.Idx[i] >= 0 && got.id[i] != 1000+want.Idx[i]) {
					t.Fatalf("small=%v window=%d k=%d entry %d: (%v, row %d, id %d), want (%v, %d)", small, c.window, k, i, got.val[i], got.row[i], got.id[i], want.Val[i], want.Idx[i])
				}
			}
		}
	}
}

// TestQuantileMap matches numpy's default (linear) quantiles.
func TestQuantileMap(t *testing.T) {
	q := quantileMap([]float32{4, 1, 3, 2, float32(math.Inf(-1))})
	// np.quantile([1,2,3,4], [0, .25, .5, .99, 1]) = 1, 1.75, 2.5, 3.97, 4
	for key, want := range map[string]float64{"q0": 1, "q0.25": 1.75, "q0.5": 2.5, "q0.99": 3.97, "q1": 4, "mean": 2.5} {
		if math.Abs(q[key]-want) > 1e-9 {
			t.Fatalf("%s = %v, want %v", key, q[key], want)
		}
	}
}

// TestApproxRuleGrowth: the approximate rule from the pruned rows equals the
// literal rule (top-cand of every eval image over all rows, then the
// threshold) when many rows exceed a threshold, so that K grows (64, then
// cand+1) and lists are cut at cand.
func TestApproxRuleGrowth(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	const nq, n, d = 7, 900, 8
	gen := func(rows int) []float32 {
		x := make([]float32, rows*d)
		for i := range x {
			x[i] = float32(rng.NormFloat64())
		}
		return x
	}
	q, b := gen(nq), gen(n)
	be := kernels.Naive{}
	full, err := be.TopK(kernels.F32Matrix(q, nq, d), kernels.F32Matrix(b, n, d), kernels.TopKOptions{K: n})
	if err != nil {
		t.Fatal(err)
	}
	for _, cand := range []int{1, 5, 100, 2000} {
		// thresholds: the 300th best of each query (many exceed), the last one none
		thr := make([]float32, nq)
		for i := range thr {
			vals, _ := full.Row(i)
			thr[i] = vals[300]
		}
		thr[nq-1] = 1e9
		ev := &simsEval{Name: "e", Q: kernels.F32Matrix(q, nq, d)}
		env := &Env{Comm: collective.NewNetwork(1, collective.NetworkOptions{}).Comms()[0], Backend: be}
		ps := newPruneSink(env, []*simsEval{ev}, [][]float32{thr}, 0)
		rows, ids := make([]int64, n), make([]int64, n)
		for i := range rows {
			rows[i], ids[i] = int64(i), int64(5000+i)
		}
		if err := ps.add(scanBlock{M: kernels.F32Matrix(b, n, d), Rows: rows, IDs: ids}); err != nil {
			t.Fatal(err)
		}
		got, over, err := ps.approxRule(context.Background(), 0, cand, t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		var want []int64
		wantOver := 0
		for i := 0; i < nq; i++ {
			vals, idx := full.Row(i)
			c := 0
			for j := range vals {
				if vals[j] > thr[i] {
					c++
					if j < cand {
						want = append(want, 5000+idx[j])
					}
				}
			}
			if c > cand {
				wantOver++
			}
		}
		want = uniqueSorted(want)
		if !slices.Equal(got, want) || over != wantOver {
			t.Fatalf("cand=%d: %d ids (over %d), want %d (over %d)", cand, len(got), over, len(want), wantOver)
		}
	}
}

// TestStagesOverNATS: sims, prune and subsample with 3 ranks joined by a
// real embedded NATS server (partials of 3.5 MB, above its 1 MiB
// max_payload) write the same bytes as one in-process rank.
func TestStagesOverNATS(t *testing.T) {
	dir, _ := simsWorld(t)
	extra := fmt.Sprintf(simsPruneTOML, 3500, 2) + `
[subsample]
tars = "data/laion-tars"
n_per_tar = 400
`
	cfg1 := simsConfig(t, dir, "run1", extra)
	simsRun(t, cfg1, 1)
	cfg3 := simsConfig(t, dir, "run3", extra)
	comms := natstest.Ranks(t, 3)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	errs := make(chan error, 3)
	defer func(n int) { simsScanRows = n }(simsScanRows)
	simsScanRows = 0
	for r, c := range comms {
		go func() {
			err := Run(context.Background(), &Env{Cfg: cfg3, Log: log, Comm: c, Threads: 1}, nil)
			if err != nil {
				c.Abort(err)
				err = fmt.Errorf("rank %d: %w", r, err)
			}
			errs <- err
		}()
	}
	for range comms {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	a, b := outputFiles(t, cfg1.Job.Workdir), outputFiles(t, cfg3.Job.Workdir)
	if len(a) < 40 || !slices.Equal(keysOf(a), keysOf(b)) {
		t.Fatalf("outputs differ: %v vs %v", keysOf(a), keysOf(b))
	}
	for name, x := range a {
		if !bytes.Equal(x, b[name]) {
			t.Fatalf("%s differs between 1 rank and 3 NATS ranks", name)
		}
	}
	noLeftovers(t, cfg3.Job.Workdir)
}

// TestSimsFloat32Base: a float32 copy of the float16 base (exact, so the
// same dot products), deduplicated, gives the same bytes as the original.
func TestSimsFloat32Base(t *testing.T) {
	dir, truth := simsWorld(t)
	cfg0 := simsConfig(t, dir, "run16", "")
	laion, err := OpenDataset(cfg0, "laion")
	if err != nil {
		t.Fatal(err)
	}
	x, err := laion.ReadAll(1000)
	if err != nil {
		t.Fatal(err)
	}
	w := &dataset.EmbeddingsWriter{Root: filepath.Join(dir, "data", "laion32"), DType: dataset.Float32, Dim: laion.Dim, ShardRows: 1100}
	if err := w.Add(x, nil, nil); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	removed := truth.ExpectedDedupRemoved()
	var keep []int64
	for id := int64(0); id < int64(truth.BaseRows); id++ { // synth's ids are the row numbers
		if _, ok := slices.BinarySearch(removed, id); !ok {
			keep = append(keep, id)
		}
	}
	run := func(work, base string, ranks int) map[string][]byte {
		cfg := simsConfig(t, dir, work, fmt.Sprintf(`
[datasets.laion32]
path = "data/laion32"
[sims]
base = [%q]
eval = ["imagenet-val"]
k = 20
worst = true
[kmeans]
dataset = %q
[dedup]
`, base, base))
		if err := dataset.WriteInt64(filepath.Join(cfg.Job.Workdir, "dedup", "keep_ids.npy"), keep); err != nil {
			t.Fatal(err)
		}
		simsRun(t, cfg, ranks, "sims")
		out := map[string][]byte{}
		for name, b := range outputFiles(t, cfg.Job.Workdir) {
			out[strings.Replace(name, base+"/", "BASE/", 1)] = b
		}
		return out
	}
	a, b := run("run16", "laion", 1), run("run32", "laion32", 2)
	if len(a) != 7 || !slices.Equal(keysOf(a), keysOf(b)) {
		t.Fatalf("outputs: %v vs %v", keysOf(a), keysOf(b))
	}
	for name, x := range a {
		if !bytes.Equal(x, b[name]) {
			t.Fatalf("%s differs between the float16 base and its float32 copy", name)
		}
	}
}

// roomy is a backend with its own top-k stream (a CPU one, from
// kernels.NewTopKStream) that has room for at most limit queries at once.
type roomy struct {
	kernels.Backend
	limit, streams int
}

func (r *roomy) NewTopKStream(q kernels.Matrix, opt kernels.TopKOptions) (kernels.TopKStream, error) {
	if q.Rows > r.limit {
		return nil, fmt.Errorf("%w: %d queries", kernels.ErrNoRoom, q.Rows)
	}
	r.streams++
	s, _, err := kernels.NewTopKStream(r.Backend, q, opt)
	return s, err
}

// TestTopkPassGroups: a pass gives the jobs of one direction and dtype one
// stream (their queries concatenated), or one each when the backend has no
// room for the group; either way each job's state is its own queries'
// exact top-k.
func TestTopkPassGroups(t *testing.T) {
	const d, k, nb = 8, 5, 300
	q16 := kernels.RandomUnit(1, 30, d, true, 1)
	q32 := kernels.RandomUnit(2, 20, d, false, 1)
	q16b := kernels.RandomUnit(4, 30, d, true, 1)
	b := kernels.RandomUnit(3, nb, d, true, 1)
	sets := []topkSet{{Q: q32}, {Q: q16}, {Q: q32, Smallest: true}, {Q: q16b}}
	rows, ids := make([]int64, nb), make([]int64, nb)
	for i := range rows {
		rows[i], ids[i] = int64(i), 7+int64(i)
	}
	for _, c := range []struct{ limit, groups, streams, window int }{
		{1000, 3, 3, simsStreamWindow}, // (largest, f32), (largest, f16) x2, (smallest, f32)
		{30, 4, 4, simsStreamWindow},   // 28 + 28 float16 queries: a stream each
		{10, 4, 0, 1},                  // no room for any: TopK per block, flushed after each
	} {
		be := &roomy{Backend: kernels.NewCPU(1), limit: c.limit}
		var jobs []*topkJob
		for si, s := range sets {
			jobs = append(jobs, &topkJob{set: si, q0: 2, q1: s.Q.Rows})
		}
		tp, err := newTopkPass(be, jobs, sets, k, 2)
		if err != nil {
			t.Fatal(err)
		}
		if len(tp.groups) != c.groups || be.streams != c.streams || tp.window != c.window {
			t.Fatalf("limit %d: %d streams, %d of them the backend's, window %d; want %d, %d, %d",
				c.limit, len(tp.groups), be.streams, tp.window, c.groups, c.streams, c.window)
		}
		for r0 := 0; r0 < nb; r0 += 64 {
			r1 := min(nb, r0+64)
			blk := scanBlock{M: kernels.F16Matrix(b.F16[r0*d:r1*d], r1-r0, d), Rows: rows[r0:r1], IDs: ids[r0:r1]}
			if err := tp.add(blk); err != nil {
				t.Fatal(err)
			}
		}
		if err := tp.flush(); err != nil {
			t.Fatal(err)
		}
		tp.release()
		for _, j := range jobs {
			s := sets[j.set]
			want, err := kernels.NewCPU(1).TopK(rowsOf(s.Q, j.q0, j.q1), b, kernels.TopKOptions{K: k, Smallest: s.Smallest, BaseOffset: 7})
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(j.st.id, want.Idx) || !slices.Equal(j.st.val, want.Val) {
				t.Fatalf("limit %d, set %d: the pass's top-k differs from TopK over the whole base", c.limit, j.set)
			}
		}
	}
}

// BenchmarkMergeResult: merging one flushed top-k (k = 1,000 per query,
// sorted, half of it better than the state's entries) into the running
// state, per query row: what the stage pays on the host per flush — per
// block before streams (on a GPU: 50,000 queries every 131,072-row block).
func BenchmarkMergeResult(b *testing.B) {
	const nq, k = 2000, 1000
	rng := rand.New(rand.NewPCG(5, 6))
	sorted := func() ([]float32, []int64) {
		v := make([]float32, nq*k)
		idx := make([]int64, nq*k)
		for i := 0; i < nq; i++ {
			x := float32(1)
			for j := 0; j < k; j++ {
				x -= rng.Float32() / k
				v[i*k+j], idx[i*k+j] = x, int64(j)
			}
		}
		return v, idx
	}
	rows, ids := make([]int64, k), make([]int64, k)
	for j := range rows {
		rows[j], ids[j] = int64(j), int64(j)
	}
	sv, _ := sorted()
	rv, ri := sorted()
	for _, threads := range []int{1, 2} {
		b.Run(fmt.Sprintf("threads=%d", threads), func(b *testing.B) {
			st := newTopkState(nq, k, false)
			r := kernels.TopKResult{NQ: nq, K: k, Val: rv, Idx: ri}
			for b.Loop() {
				b.StopTimer()
				copy(st.val, sv)
				b.StartTimer()
				st.mergeResult(r, rows, ids, threads)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/nq/1e3, "µs/row")
		})
	}
}
