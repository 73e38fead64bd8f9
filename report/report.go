package report

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"hpcrun/configs"
	"hpcrun/dataset"
)

// Dir is the report's folder under the workdir, and Key its section of
// workdir/report.json.
const (
	Dir = "report"
	Key = "report"
)

// Summary is the "report" section of report.json: every number the page
// shows, rounded as the page shows it.
type Summary struct {
	Job        string           `json:"job"`
	Figures    []Figure         `json:"figures"`
	Missing    []Missing        `json:"missing"`
	Similarity []EvalSimilarity `json:"similarity,omitempty"`
	Prune      *PruneCounts     `json:"prune,omitempty"`
	Kept       []SubsetSize     `json:"kept,omitempty"`
	KMeans     *KMeansSummary   `json:"kmeans,omitempty"`
	Clusters   *ClusterSizes    `json:"cluster_sizes,omitempty"`
	Dedup      *DedupSummary    `json:"dedup,omitempty"`
	Zeroshot   []ZeroshotRow    `json:"zeroshot,omitempty"`
	Stages     []StageRow       `json:"stages,omitempty"`

	datasets []DatasetRow // report.json's "datasets", shown as they are there
}

// DatasetRow is one entry of report.json's "datasets".
type DatasetRow struct {
	Name  string
	Rows  int64  `json:"rows"`
	Dim   int    `json:"dim"`
	DType string `json:"dtype"`
}

// Figure is one PNG of the page.
type Figure struct {
	Name    string `json:"name"`
	File    string `json:"file"` // under workdir/report/
	Title   string `json:"title"`
	Caption string `json:"caption"`
	Width   int    `json:"width"` // pixels
	Height  int    `json:"height"`
}

// Missing is a figure left out, and why (the output it needs is not there).
type Missing struct {
	Figure string `json:"figure"`
	Reason string `json:"reason"`
}

// EvalSimilarity is one eval set's nearest-neighbour similarities: to each
// sims base, and to the prune reference (whose top-1 similarity is the
// image's prune threshold).
type EvalSimilarity struct {
	Eval    string      `json:"eval"`
	Queries int         `json:"queries"`
	Series  []SimSeries `json:"series"`
	// Base and Reference name the pair compared below ("" when either is
	// missing): an eval image whose nearest base point is more similar
	// than its nearest reference point prunes at least one base point.
	Base            string  `json:"base,omitempty"`
	Reference       string  `json:"reference,omitempty"`
	CloserToBase    int64   `json:"closer_to_base"`
	CloserFraction  float64 `json:"closer_to_base_fraction"`
	MedianThreshold float64 `json:"median_threshold"`
}

// SimSeries is the distribution of one eval set's top-1 similarity to one
// dataset.
type SimSeries struct {
	Dataset string  `json:"dataset"`
	Role    string  `json:"role"` // base | reference
	Source  string  `json:"source"`
	Mean    float64 `json:"mean"`
	P05     float64 `json:"p05"`
	Median  float64 `json:"median"`
	P95     float64 `json:"p95"`
}

// PruneCounts is what pruning removed from the base, per eval set and
// combined.
type PruneCounts struct {
	Base      string      `json:"base"`
	Reference string      `json:"reference"`
	Rows      int64       `json:"rows"` // base rows pruning looked at (kept + pruned)
	Sets      []PruneSet  `json:"sets"` // per eval set, then "combined" last
	Approx    []ApproxRow `json:"approx,omitempty"`
}

// PruneSet is one eval set's (or the union's) pruned and kept counts.
type PruneSet struct {
	Eval     string  `json:"eval"` // an eval set, or "combined"
	Pruned   int64   `json:"pruned"`
	Kept     int64   `json:"kept"`
	Fraction float64 `json:"pruned_fraction"`
}

// ApproxRow compares the paper's approximate rule with the exact one, from
// the prune stage's report entry (when it wrote one).
type ApproxRow struct {
	Eval   string `json:"eval"`
	Pruned int64  `json:"approx_pruned"`
	Missed int64  `json:"approx_missed"`
}

// SubsetSize is the size of one kept id list.
type SubsetSize struct {
	Name    string `json:"name"`
	File    string `json:"file"` // relative to the workdir
	Dataset string `json:"dataset"`
	Size    int64  `json:"size"`
}

// KMeansSummary is kmeans/state.json in brief.
type KMeansSummary struct {
	Dataset     string  `json:"dataset"`
	K           int     `json:"k"`
	Points      int64   `json:"points"`
	Iterations  int     `json:"iterations"`
	Converged   bool    `json:"converged"`
	FinalChange float64 `json:"final_change_ratio"`
	Bound       float64 `json:"change_lower_bound"`
	Empty       int     `json:"empty_clusters"` // after the last iteration
}

// ClusterSizes is the distribution of k-means cluster sizes.
type ClusterSizes struct {
	Source   string    `json:"source"`
	Clusters int       `json:"clusters"`
	Empty    int       `json:"empty"`
	Min      int64     `json:"min,omitempty"` // over non-empty clusters (not in dedup/stats.json)
	Median   int64     `json:"median,omitempty"`
	Max      int64     `json:"max"`
	Bins     []SizeBin `json:"bins"`
}

// SizeBin counts clusters with sizes in [Min, Max] (powers of 2).
type SizeBin struct {
	Min      int64 `json:"min"`
	Max      int64 `json:"max"`
	Clusters int   `json:"clusters"`
	Points   int64 `json:"points"`
}

// DedupSummary is dedup/stats.json in brief.
type DedupSummary struct {
	Points    int64      `json:"points"`
	Kept      int64      `json:"kept"`
	Removed   int64      `json:"removed"`
	Fraction  float64    `json:"removed_fraction"`
	Eps       float64    `json:"eps"`
	Threshold float64    `json:"threshold"`
	Bins      []DedupBin `json:"bins"`
}

// DedupBin is what dedup removed from clusters with sizes in [Min, Max].
type DedupBin struct {
	Min      int64   `json:"min"`
	Max      int64   `json:"max"`
	Clusters int     `json:"clusters"`
	Points   int64   `json:"points"`
	Removed  int64   `json:"removed"`
	Fraction float64 `json:"removed_fraction"`
}

// ZeroshotRow is one eval set's zero-shot accuracy.
type ZeroshotRow struct {
	Eval string  `json:"eval"`
	Top1 float64 `json:"top1"`
	Top5 float64 `json:"top5"`
	N    int64   `json:"n"`
}

// StageRow is one stage's timing from report.json's "stages".
type StageRow struct {
	Stage       string    `json:"stage"`
	Status      string    `json:"status"`
	Seconds     float64   `json:"seconds"`
	Items       int64     `json:"items"`
	Throughput  float64   `json:"throughput"` // items per second
	Ranks       int       `json:"ranks"`
	RankSeconds []float64 `json:"rank_seconds,omitempty"` // per rank, when report.json has them
}

// Write reads cfg's workdir and writes workdir/report/index.html, the
// figures beside it and the "report" section of workdir/report.json. It
// returns the first error that names a file: a missing output only leaves
// its figure out, an unreadable one is an error.
func Write(cfg *configs.Config) error {
	_, err := Build(cfg)
	return err
}

// Build is Write, returning the Summary it wrote.
func Build(cfg *configs.Config) (*Summary, error) {
	wd := cfg.Job.Workdir
	if st, err := os.Stat(wd); err != nil || !st.IsDir() {
		return nil, fmt.Errorf("report: workdir %s: not found (run the experiment first)", wd)
	}
	in, err := load(cfg)
	if err != nil {
		return nil, fmt.Errorf("report: %w", err)
	}
	dir := filepath.Join(wd, Dir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("report: %w", err)
	}
	if err := drawFigures(in, dir); err != nil {
		return nil, fmt.Errorf("report: %w", err)
	}
	if err := removeStale(dir, in.sum.Figures); err != nil {
		return nil, fmt.Errorf("report: %w", err)
	}
	page, err := renderHTML(in.sum, in.colours)
	if err != nil {
		return nil, fmt.Errorf("report: %w", err)
	}
	if err := dataset.WriteFileAtomic(filepath.Join(dir, "index.html"), page); err != nil {
		return nil, fmt.Errorf("report: %w", err)
	}
	if err := mergeReportJSON(filepath.Join(wd, "report.json"), in.sum); err != nil {
		return nil, fmt.Errorf("report: %w", err)
	}
	return in.sum, nil
}

// removeStale deletes the PNGs of dir that the page does not show (left
// by an earlier report of a different experiment shape).
func removeStale(dir string, figs []Figure) error {
	keep := map[string]bool{}
	for _, f := range figs {
		keep[f.File] = true
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range ents {
		if n := e.Name(); strings.HasSuffix(n, ".png") && !keep[n] {
			if err := os.Remove(filepath.Join(dir, n)); err != nil {
				return err
			}
		}
	}
	return nil
}

// mergeReportJSON sets report.json's "report" key to sum, keeping every
// other key as it was (in its order). A report.json that is not a JSON
// object is an error, not something to overwrite.
func mergeReportJSON(path string, sum *Summary) error {
	val, err := json.MarshalIndent(sum, "  ", "  ")
	if err != nil {
		return err
	}
	old, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		old = []byte("{}")
	} else if err != nil {
		return err
	}
	keys, vals, err := objectMembers(old)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	var b bytes.Buffer
	b.WriteString("{\n")
	wrote := false
	sep := func() {
		if b.Len() > 2 {
			b.WriteString(",\n")
		}
	}
	for i, k := range keys {
		sep()
		kb, _ := json.Marshal(k)
		b.WriteString("  ")
		b.Write(kb)
		b.WriteString(": ")
		if k == Key {
			b.Write(val)
			wrote = true
			continue
		}
		var ind bytes.Buffer
		if err := json.Indent(&ind, vals[i], "  ", "  "); err != nil {
			return fmt.Errorf("%s: key %q: %w", path, k, err)
		}
		b.Write(ind.Bytes())
	}
	if !wrote {
		sep()
		b.WriteString("  \"" + Key + "\": ")
		b.Write(val)
	}
	b.WriteString("\n}\n")
	return dataset.WriteFileAtomic(path, b.Bytes())
}

// objectMembers returns the keys of a JSON object in file order with their
// raw values.
func objectMembers(data []byte) ([]string, []json.RawMessage, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	tok, err := dec.Token()
	if err != nil {
		return nil, nil, fmt.Errorf("not JSON: %w", err)
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return nil, nil, fmt.Errorf("not a JSON object")
	}
	var keys []string
	var vals []json.RawMessage
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, nil, fmt.Errorf("not JSON: %w", err)
		}
		k, _ := tok.(string)
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, nil, fmt.Errorf("not JSON at key %q: %w", k, err)
		}
		keys = append(keys, k)
		vals = append(vals, v)
	}
	if tok, err := dec.Token(); err != nil || tok != json.Delim('}') {
		return nil, nil, fmt.Errorf("not JSON: the object does not end")
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, nil, fmt.Errorf("not JSON: data after the object")
	}
	return keys, vals, nil
}
