package report

// Reading the workdir: every output the figures need, into a Summary (the
// numbers the page shows) and the raw series behind the figures. A file
// that is not there is a note; a file that is there but unreadable is an
// error naming it.

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"math/bits"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"

	"hpcrun/configs"
	"hpcrun/dataset"
)

// inputs is what the figures draw from.
type inputs struct {
	cfg     *configs.Config
	sum     *Summary
	colours *colours
	// sims[eval][i] are the top-1 similarities behind sum.Similarity[j].Series[i]
	sims   map[string][][]float32
	change []float64 // k-means change ratio per iteration
	notes  map[string]string
}

// load reads what the workdir holds.
func load(cfg *configs.Config) (*inputs, error) {
	in := &inputs{
		cfg:     cfg,
		sum:     &Summary{Job: cfg.Job.Name, Figures: []Figure{}, Missing: []Missing{}},
		colours: newColours(cfg),
		sims:    map[string][][]float32{},
		notes:   map[string]string{},
	}
	for _, step := range []func(*inputs) error{
		loadSimilarity, loadPrune, loadKept, loadKMeans, loadClusterSizes, loadDedup, loadZeroshot, loadStages,
	} {
		if err := step(in); err != nil {
			return nil, err
		}
	}
	return in, nil
}

func (in *inputs) path(rel ...string) string {
	return filepath.Join(append([]string{in.cfg.Job.Workdir}, rel...)...)
}

// note records why a figure is left out (the first reason wins).
func (in *inputs) note(fig, format string, a ...any) {
	if _, ok := in.notes[fig]; !ok {
		in.notes[fig] = fmt.Sprintf(format, a...)
	}
}

// exists says whether path is there; any error but "not there" is
// returned, naming the file.
func exists(path string) (bool, error) {
	_, err := os.Stat(path)
	if err == nil {
		return true, nil
	}
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	return false, err
}

// ---------------------------------------------------------------- similarity

// evalSets lists the eval sets of sims and prune, in config order.
func evalSets(cfg *configs.Config) []string {
	var out []string
	add := func(names []string) {
		for _, n := range names {
			if !slices.Contains(out, n) {
				out = append(out, n)
			}
		}
	}
	if cfg.Sims != nil {
		add(cfg.Sims.Eval)
	}
	if cfg.Prune != nil {
		add(cfg.Prune.Eval)
	}
	return out
}

func loadSimilarity(in *inputs) error {
	cfg := in.cfg
	if cfg.Sims == nil && cfg.Prune == nil {
		in.note("similarity", "the config has no [sims] or [prune] section")
		return nil
	}
	ref := ""
	if cfg.Prune != nil {
		ref = cfg.Prune.Reference
	}
	for _, ev := range evalSets(cfg) {
		es := EvalSimilarity{Eval: ev, Series: []SimSeries{}}
		var vals [][]float32
		add := func(name, role, rel string, v []float32) error {
			if len(vals) > 0 && len(v) != len(vals[0]) {
				return fmt.Errorf("%s: %d eval images, but %s has %d", in.path(rel), len(v), es.Series[0].Source, len(vals[0]))
			}
			s := SimSeries{Dataset: name, Role: role, Source: rel}
			s.Mean, s.P05, s.Median, s.P95 = stats(v)
			es.Series = append(es.Series, s)
			vals = append(vals, v)
			return nil
		}
		if cfg.Sims != nil {
			for _, b := range cfg.Sims.Base {
				rel := filepath.Join("sims", b, ev, "topk_sims.npy")
				ok, err := exists(in.path(rel))
				if err != nil {
					return err
				}
				if !ok {
					continue
				}
				v, err := readColumn0(in.path(rel))
				if err != nil {
					return err
				}
				role := "base"
				if b == ref {
					role = "reference"
				}
				if err := add(b, role, rel, v); err != nil {
					return err
				}
			}
		}
		// the prune thresholds are the top-1 similarities to the reference
		if ref != "" && !slices.ContainsFunc(es.Series, func(s SimSeries) bool { return s.Dataset == ref }) {
			rel := filepath.Join("prune", ev, "thresholds.npy")
			ok, err := exists(in.path(rel))
			if err != nil {
				return err
			}
			if ok {
				v, _, err := dataset.ReadFloat32(in.path(rel))
				if err != nil {
					return err
				}
				if err := add(ref, "reference", rel, v); err != nil {
					return err
				}
			}
		}
		if len(vals) == 0 {
			in.note("sims_"+ev, "no sims/<base>/%s/topk_sims.npy (sims stage) nor prune/%s/thresholds.npy (prune stage)", ev, ev)
			continue
		}
		es.Queries = len(vals[0])
		// the pair the prune rule compares: base vs reference
		bi, ri := -1, -1
		for i, s := range es.Series {
			switch {
			case s.Role == "reference" && ri < 0:
				ri = i
			case s.Role == "base" && (bi < 0 || (cfg.Prune != nil && s.Dataset == cfg.Prune.Base)):
				bi = i
			}
		}
		if bi >= 0 && ri >= 0 {
			es.Base, es.Reference = es.Series[bi].Dataset, es.Series[ri].Dataset
			for q := range vals[bi] {
				if vals[bi][q] > vals[ri][q] {
					es.CloserToBase++
				}
			}
			es.CloserFraction = frac(es.CloserToBase, int64(es.Queries))
			es.MedianThreshold = es.Series[ri].Median
		}
		in.sum.Similarity = append(in.sum.Similarity, es)
		in.sims[ev] = vals
	}
	return nil
}

// readColumn0 reads column 0 of a float32 [q, k] array (or all of a [q]
// one) without holding the whole array: the top-1 similarity of each row.
func readColumn0(path string) ([]float32, error) {
	f, h, err := dataset.OpenNPY(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if h.DType != dataset.Float32 || h.Fortran || len(h.Shape) < 1 || len(h.Shape) > 2 {
		return nil, fmt.Errorf("%s: want a float32 [q, k] array, got %s %v", path, h.DType.Name(), h.Shape)
	}
	q, k := h.Shape[0], 1
	if len(h.Shape) == 2 {
		k = h.Shape[1]
	}
	if k == 0 && q > 0 {
		return nil, fmt.Errorf("%s: shape %v has no column 0", path, h.Shape)
	}
	out := make([]float32, q)
	r := bufio.NewReaderSize(f, 1<<20)
	row := make([]byte, 4*k)
	for i := range out {
		if _, err := io.ReadFull(r, row); err != nil {
			return nil, fmt.Errorf("%s: row %d: %w", path, i, err)
		}
		v := math.Float32frombits(binary.LittleEndian.Uint32(row))
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			return nil, fmt.Errorf("%s: row %d, column 0 is %v", path, i, v)
		}
		out[i] = v
	}
	return out, nil
}

// ---------------------------------------------------------------- prune

func loadPrune(in *inputs) error {
	p := in.cfg.Prune
	if p == nil {
		in.note("pruned", "the config has no [prune] section")
		return nil
	}
	pc := &PruneCounts{Base: p.Base, Reference: p.Reference, Sets: []PruneSet{}}
	extra := in.stageExtra("prune")
	for _, set := range append(slices.Clone(p.Eval), "combined") {
		pr, err1 := rowsOf(in.path("prune", set, "prune_ids.npy"))
		kp, err2 := rowsOf(in.path("prune", set, "keep_ids.npy"))
		if err := errors.Join(err1, err2); err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				continue
			}
			return err
		}
		pc.Sets = append(pc.Sets, PruneSet{Eval: set, Pruned: pr, Kept: kp, Fraction: frac(pr, pr+kp)})
		pc.Rows = max(pc.Rows, pr+kp)
		var e struct {
			Pruned *int64 `json:"approx_pruned"`
			Missed *int64 `json:"approx_missed"`
		}
		if raw, ok := extra[set]; ok && json.Unmarshal(raw, &e) == nil && e.Pruned != nil && e.Missed != nil {
			pc.Approx = append(pc.Approx, ApproxRow{Eval: set, Pruned: *e.Pruned, Missed: *e.Missed})
		}
	}
	if len(pc.Sets) == 0 {
		in.note("pruned", "no prune/<eval>/prune_ids.npy and keep_ids.npy (prune stage)")
		return nil
	}
	in.sum.Prune = pc
	return nil
}

// rowsOf is the length of a 1-d .npy array, from its header alone.
func rowsOf(path string) (int64, error) {
	h, err := dataset.HeaderOf(path)
	if err != nil {
		return 0, err
	}
	if len(h.Shape) != 1 {
		return 0, fmt.Errorf("%s: want a 1-d id list, got shape %v", path, h.Shape)
	}
	return int64(h.Shape[0]), nil
}

// ---------------------------------------------------------------- kept sizes

func loadKept(in *inputs) error {
	cfg := in.cfg
	type cand struct{ name, rel, ds string }
	var cs []cand
	if cfg.Dedup != nil && cfg.KMeans != nil {
		cs = append(cs, cand{"dedup kept", "dedup/keep_ids.npy", cfg.KMeans.Dataset})
	}
	if cfg.Prune != nil {
		for _, ev := range cfg.Prune.Eval {
			cs = append(cs, cand{"pruned for " + ev + ", kept", filepath.Join("prune", ev, "keep_ids.npy"), ev})
		}
		cs = append(cs, cand{"pruned for all, kept", "prune/combined/keep_ids.npy", "combined"})
		subs, err := filepath.Glob(in.path("prune", "subsets", "*.npy"))
		if err != nil {
			return err
		}
		for _, s := range sortSubsets(subs, cfg.Prune.Eval) {
			name := strings.TrimSuffix(filepath.Base(s), ".npy")
			cs = append(cs, cand{name, filepath.Join("prune", "subsets", filepath.Base(s)), subsetDataset(name, cfg.Prune.Eval)})
		}
	}
	for _, c := range cs {
		n, err := rowsOf(in.path(c.rel))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return err
		}
		in.sum.Kept = append(in.sum.Kept, SubsetSize{Name: c.name, File: c.rel, Dataset: c.ds, Size: n})
	}
	if len(in.sum.Kept) == 0 {
		in.note("kept", "no dedup/keep_ids.npy, prune/*/keep_ids.npy or prune/subsets/*.npy")
	}
	return nil
}

// subsetDataset is the dataset whose colour a subset takes: near_<eval>_n
// and far_<eval>_n their eval set's, the others none ("subset", grey).
func subsetDataset(name string, evals []string) string {
	for _, side := range []string{"near_", "far_"} {
		if rest, ok := strings.CutPrefix(name, side); ok {
			if i := strings.LastIndexByte(rest, '_'); i > 0 && slices.Contains(evals, rest[:i]) {
				return rest[:i]
			}
		}
	}
	return "subset"
}

// sortSubsets orders subset files: random_<n> by n, then near/far per eval
// set (config order) by n, then anything else by name.
func sortSubsets(paths []string, evals []string) []string {
	key := func(p string) (int, int, int, string) {
		name := strings.TrimSuffix(filepath.Base(p), ".npy")
		n := 0
		if i := strings.LastIndexByte(name, '_'); i >= 0 {
			n, _ = strconv.Atoi(name[i+1:])
		}
		if strings.HasPrefix(name, "random_") {
			return 0, 0, n, name
		}
		if ds := subsetDataset(name, evals); ds != "subset" {
			side := 0
			if strings.HasPrefix(name, "far_") {
				side = 1
			}
			return 1, slices.Index(evals, ds)*2 + side, n, name
		}
		return 2, 0, 0, name
	}
	out := slices.Clone(paths)
	sort.Slice(out, func(i, j int) bool {
		a0, a1, a2, a3 := key(out[i])
		b0, b1, b2, b3 := key(out[j])
		if a0 != b0 {
			return a0 < b0
		}
		if a1 != b1 {
			return a1 < b1
		}
		if a2 != b2 {
			return a2 < b2
		}
		return a3 < b3
	})
	return out
}

// ---------------------------------------------------------------- kmeans

func loadKMeans(in *inputs) error {
	if in.cfg.KMeans == nil {
		in.note("kmeans_change", "the config has no [kmeans] section")
		return nil
	}
	var st struct {
		Iterations  int       `json:"iterations"`
		ChangeRatio []float64 `json:"change_ratio"`
		Empty       []int     `json:"empty_clusters"`
		K           int       `json:"k"`
		Points      int64     `json:"points"`
		Converged   bool      `json:"converged"`
	}
	ok, err := readJSON(in.path("kmeans", "state.json"), &st)
	if err != nil || !ok {
		in.note("kmeans_change", "no kmeans/state.json (kmeans stage)")
		return err
	}
	km := &KMeansSummary{Dataset: in.cfg.KMeans.Dataset, K: st.K, Points: st.Points, Iterations: st.Iterations,
		Converged: st.Converged, Bound: in.cfg.KMeans.ChangeLowerBound}
	if n := len(st.ChangeRatio); n > 0 {
		km.FinalChange = sig(st.ChangeRatio[n-1])
	}
	if n := len(st.Empty); n > 0 {
		km.Empty = st.Empty[n-1]
	}
	in.sum.KMeans = km
	in.change = st.ChangeRatio
	if len(st.ChangeRatio) == 0 {
		in.note("kmeans_change", "kmeans/state.json has no iterations")
	}
	return nil
}

// readJSON decodes path into v; false when path is not there.
func readJSON(path string, v any) (bool, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return false, fmt.Errorf("%s: %w", path, err)
	}
	return true, nil
}

// ---------------------------------------------------------------- cluster sizes

func loadClusterSizes(in *inputs) error {
	if in.cfg.KMeans == nil {
		in.note("cluster_sizes", "the config has no [kmeans] section")
		return nil
	}
	rel := "kmeans/assignments.npy"
	ok, err := exists(in.path(rel))
	if err != nil {
		return err
	}
	if ok {
		k := 0
		if in.sum.KMeans != nil {
			k = in.sum.KMeans.K
		}
		sizes, err := clusterSizes(in.path(rel), k)
		if err != nil {
			return err
		}
		in.sum.Clusters = binSizes(sizes, rel)
		return nil
	}
	// dedup's histogram has the same bins, without the empty clusters
	var st struct {
		Clusters int       `json:"clusters"`
		Empty    int       `json:"empty_clusters"`
		Largest  int64     `json:"largest_cluster"`
		Hist     []SizeBin `json:"cluster_size_histogram"`
	}
	ok, err = readJSON(in.path("dedup", "stats.json"), &st)
	if err != nil {
		return err
	}
	if !ok || len(st.Hist) == 0 {
		in.note("cluster_sizes", "no kmeans/assignments.npy (kmeans stage) nor dedup/stats.json (dedup stage)")
		return nil
	}
	// no smallest or median size there: only the bins and the largest
	in.sum.Clusters = &ClusterSizes{Source: "dedup/stats.json", Clusters: st.Clusters, Empty: st.Empty,
		Max: st.Largest, Bins: fillBins(st.Hist)}
	return nil
}

// clusterSizes counts an int32 [n] assignments file per cluster (k
// clusters, or max+1 when k is 0), streaming it.
func clusterSizes(path string, k int) ([]int64, error) {
	f, h, err := dataset.OpenNPY(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if h.DType != dataset.Int32 || len(h.Shape) != 1 {
		return nil, fmt.Errorf("%s: want an int32 [n] array, got %s %v", path, h.DType.Name(), h.Shape)
	}
	sizes := make([]int64, k)
	r := bufio.NewReaderSize(f, 1<<20)
	buf := make([]byte, 4<<16)
	for done := 0; done < h.Shape[0]; {
		n := min(len(buf)/4, h.Shape[0]-done)
		if _, err := io.ReadFull(r, buf[:4*n]); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		for i := 0; i < n; i++ {
			c := int32(binary.LittleEndian.Uint32(buf[4*i:]))
			if c < 0 || (k > 0 && int(c) >= k) {
				return nil, fmt.Errorf("%s: point %d is in cluster %d, want [0, %d)", path, done+i, c, max(k, 1))
			}
			for int(c) >= len(sizes) {
				sizes = append(sizes, 0)
			}
			sizes[c]++
		}
		done += n
	}
	return sizes, nil
}

// binSizes bins cluster sizes by powers of 2, as dedup/stats.json does,
// with the empty bins between the smallest and the largest kept.
func binSizes(sizes []int64, source string) *ClusterSizes {
	cs := &ClusterSizes{Source: source, Clusters: len(sizes)}
	var ne []int64
	for _, s := range sizes {
		if s == 0 {
			cs.Empty++
		} else {
			ne = append(ne, s)
		}
	}
	if len(ne) == 0 {
		cs.Bins = []SizeBin{}
		return cs
	}
	slices.Sort(ne)
	cs.Min, cs.Median, cs.Max = ne[0], ne[len(ne)/2], ne[len(ne)-1]
	var bins []SizeBin
	for _, s := range ne {
		lo := int64(1) << (63 - bits.LeadingZeros64(uint64(s)))
		if len(bins) == 0 || bins[len(bins)-1].Min != lo {
			bins = append(bins, SizeBin{Min: lo, Max: 2*lo - 1})
		}
		bins[len(bins)-1].Clusters++
		bins[len(bins)-1].Points += s
	}
	cs.Bins = fillBins(bins)
	return cs
}

// fillBins inserts the empty power-of-2 bins between non-empty ones.
func fillBins(bins []SizeBin) []SizeBin {
	var out []SizeBin
	for _, b := range bins {
		for len(out) > 0 && out[len(out)-1].Max+1 < b.Min {
			lo := out[len(out)-1].Max + 1
			out = append(out, SizeBin{Min: lo, Max: 2*lo - 1})
		}
		out = append(out, b)
	}
	return out
}

// ---------------------------------------------------------------- dedup

func loadDedup(in *inputs) error {
	if in.cfg.Dedup == nil {
		in.note("dedup_removed", "the config has no [dedup] section")
		return nil
	}
	var st struct {
		Points    int64      `json:"points"`
		Kept      int64      `json:"kept"`
		Removed   int64      `json:"removed"`
		Eps       float64    `json:"eps"`
		Threshold float64    `json:"threshold"`
		Hist      []DedupBin `json:"cluster_size_histogram"`
	}
	ok, err := readJSON(in.path("dedup", "stats.json"), &st)
	if err != nil || !ok {
		in.note("dedup_removed", "no dedup/stats.json (dedup stage)")
		return err
	}
	d := &DedupSummary{Points: st.Points, Kept: st.Kept, Removed: st.Removed, Fraction: frac(st.Removed, st.Points),
		Eps: st.Eps, Threshold: sig(st.Threshold), Bins: st.Hist}
	if d.Bins == nil {
		d.Bins = []DedupBin{}
	}
	for i := range d.Bins {
		d.Bins[i].Fraction = frac(d.Bins[i].Removed, d.Bins[i].Points)
	}
	if len(d.Bins) == 0 {
		in.note("dedup_removed", "dedup/stats.json has no cluster-size histogram")
	}
	in.sum.Dedup = d
	return nil
}

// ---------------------------------------------------------------- zeroshot

func loadZeroshot(in *inputs) error {
	if in.cfg.Zeroshot == nil {
		in.note("zeroshot", "the config has no [zeroshot] section")
		return nil
	}
	var acc map[string]struct {
		Top1 float64 `json:"top1"`
		Top5 float64 `json:"top5"`
		N    int64   `json:"n"`
	}
	ok, err := readJSON(in.path("zeroshot", "accuracy.json"), &acc)
	if err != nil || !ok || len(acc) == 0 {
		in.note("zeroshot", "no zeroshot/accuracy.json (zeroshot stage)")
		return err
	}
	names := slices.Clone(in.cfg.Zeroshot.Eval)
	var rest []string
	for n := range acc {
		if !slices.Contains(names, n) {
			rest = append(rest, n)
		}
	}
	slices.Sort(rest)
	for _, n := range append(names, rest...) {
		if a, ok := acc[n]; ok {
			in.sum.Zeroshot = append(in.sum.Zeroshot, ZeroshotRow{Eval: n, Top1: sig(a.Top1), Top5: sig(a.Top5), N: a.N})
		}
	}
	return nil
}

// ---------------------------------------------------------------- stages

// stageJSON is one entry of report.json's "stages" (written by stages.Run).
type stageJSON struct {
	Status      string                     `json:"status"`
	Seconds     float64                    `json:"seconds"`
	Items       int64                      `json:"items"`
	Throughput  float64                    `json:"throughput"`
	Ranks       int                        `json:"ranks"`
	RankSeconds []float64                  `json:"rank_seconds"`
	Extra       map[string]json.RawMessage `json:"extra"`
}

// reportJSON is what the report reads of report.json.
type reportJSON struct {
	Datasets map[string]DatasetRow `json:"datasets"`
	Stages   map[string]stageJSON  `json:"stages"`
}

func (in *inputs) reportJSON() (*reportJSON, error) {
	var rep reportJSON
	_, err := readJSON(in.path("report.json"), &rep)
	return &rep, err
}

func (in *inputs) stages() (map[string]stageJSON, error) {
	rep, err := in.reportJSON()
	return rep.Stages, err
}

func (in *inputs) stageExtra(stage string) map[string]json.RawMessage {
	st, _ := in.stages()
	return st[stage].Extra
}

func loadStages(in *inputs) error {
	rep, err := in.reportJSON()
	if err != nil {
		return err
	}
	for _, n := range sortedKeys(rep.Datasets) {
		d := rep.Datasets[n]
		d.Name = n
		in.sum.datasets = append(in.sum.datasets, d)
	}
	st := rep.Stages
	for _, name := range configs.Stages {
		s, ok := st[name]
		if !ok || s.Status == "not-built" {
			continue
		}
		row := StageRow{Stage: name, Status: s.Status, Seconds: sig(s.Seconds), Items: s.Items,
			Throughput: sig(s.Throughput), Ranks: s.Ranks}
		for _, v := range s.RankSeconds {
			row.RankSeconds = append(row.RankSeconds, sig(v))
		}
		in.sum.Stages = append(in.sum.Stages, row)
	}
	if len(in.sum.Stages) == 0 {
		in.note("stage_times", "no stage in report.json (hpcrun run writes it)")
	}
	return nil
}

// ---------------------------------------------------------------- numbers

// sig rounds v to 4 significant digits: the precision the page shows.
func sig(v float64) float64 {
	if v == 0 || math.IsNaN(v) || math.IsInf(v, 0) {
		return v
	}
	r, _ := strconv.ParseFloat(strconv.FormatFloat(v, 'g', 4, 64), 64)
	return r
}

// frac is a/b rounded as the page shows it (0 when b is 0).
func frac(a, b int64) float64 {
	if b == 0 {
		return 0
	}
	return sig(float64(a) / float64(b))
}

// stats returns the mean, 5th percentile, median and 95th percentile of v
// (nearest rank), rounded as the page shows them.
func stats(v []float32) (mean, p05, median, p95 float64) {
	if len(v) == 0 {
		return
	}
	s := slices.Clone(v)
	slices.Sort(s)
	var sum float64
	for _, x := range s {
		sum += float64(x)
	}
	at := func(p float64) float64 {
		i := int(math.Ceil(p*float64(len(s)))) - 1
		return float64(s[max(0, min(i, len(s)-1))])
	}
	return sig(sum / float64(len(s))), sig(at(0.05)), sig(at(0.5)), sig(at(0.95))
}
