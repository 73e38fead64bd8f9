// Package synth writes a small but realistic world for hpcrun to run on:
// a LAION-like base set in clip-retrieval layout (float16, clustered on the
// sphere, with planted near-duplicate groups and points planted very close
// to eval images), an ImageNet-train-like labelled set, a "val-like" and a
// shifted "sketch-like" eval set, webdataset tars of the base samples, a
// class-embedding matrix, and truth/ files saying what was planted. The
// same seed gives the same bytes.
package synth

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"fmt"
	"image"
	"image/color"
	"image/jpeg"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"sync"

	"hpcrun/dataset"
)

// Preset sizes a world.
type Preset struct {
	Name        string
	Dim         int
	Topics      int // LAION topic centres; the first Classes are ImageNet's classes
	Classes     int
	Base        int // LAION points before planted copies
	BaseShards  int // img_emb_N.npy files
	DupGroups   int // near-duplicate groups planted in LAION (1-3 copies each)
	TrainPerCls int
	EvalPerCls  int
	NearEval    int // LAION points planted next to eval images, per eval set
	PerTar      int // samples per webdataset tar (0 = no tars)
}

// Presets by name.
var Presets = map[string]Preset{
	"quickstart": {Name: "quickstart", Dim: 512, Topics: 200, Classes: 100, Base: 100000, BaseShards: 4,
		DupGroups: 2000, TrainPerCls: 200, EvalPerCls: 20, NearEval: 50, PerTar: 10000},
	"bench": {Name: "bench", Dim: 512, Topics: 2000, Classes: 1000, Base: 2 << 20, BaseShards: 2,
		DupGroups: 20000, TrainPerCls: 100, EvalPerCls: 10, NearEval: 500, PerTar: 0},
	// tiny is for tests: the same world, a thousand times smaller.
	"tiny": {Name: "tiny", Dim: 128, Topics: 20, Classes: 10, Base: 3000, BaseShards: 3,
		DupGroups: 60, TrainPerCls: 30, EvalPerCls: 5, NearEval: 8, PerTar: 1000},
}

// Noise levels, as the norm of the Gaussian added to a unit centre before
// renormalising: pairwise cosine inside a LAION topic is about 1/(1+s²)=0.37,
// so no two unplanted points come near the dedup threshold 1-0.124.
const (
	topicSpread   = 1.3  // LAION points around their topic
	classDistinct = 0.6  // the class-specific part of a class centre (centres have cosine ~0.74)
	classSpread   = 0.8  // ImageNet-like points around their class centre
	sketchShift   = 0.9  // the sketch set's shared style direction
	sketchSpread  = 1.6  // sketch images are further from their class: harder, as on ImageNet-Sketch
	dupNoise      = 0.03 // a near-duplicate copy (cosine ~0.9995)
	nearNoise     = 0.12 // a LAION point planted next to an eval image (cosine ~0.993)
	textNoise     = 1.0  // class text embedding around its class centre (text and image towers disagree)
)

// Version changes whenever the same seed would give different bytes; a
// world written by another version is rewritten rather than reused.
const Version = 3

// Truth is what synth planted, written as truth/truth.json.
type Truth struct {
	Version int    `json:"version"`
	Seed    uint64 `json:"seed"`
	Preset  string `json:"preset"`
	Dim     int    `json:"dim"`
	// LAION rows, and ids: image_path = webdataset key = tar*PerTar+index.
	BaseRows int `json:"base_rows"`
	// DupGroups lists each near-duplicate group's ids in file order; a
	// dedup in file order keeps the first and removes the rest.
	DupGroups [][]int64 `json:"dup_groups"`
	// NearEval maps eval set -> planted LAION ids and the eval row each sits next to.
	NearEval map[string][]NearPoint `json:"near_eval"`
	Classes  int                    `json:"classes"`
	Sets     map[string]int         `json:"sets"` // rows per embeddings-layout set
}

// NearPoint is a LAION point planted next to eval image EvalRow.
type NearPoint struct {
	ID      int64 `json:"id"`
	EvalRow int   `json:"eval_row"`
}

// Write generates preset p under out with the given seed.
func Write(out string, p Preset, seed uint64) (*Truth, error) {
	g := &gen{p: p, seed: seed}
	g.topics = g.unitSet(1, p.Topics)
	// ImageNet's classes look alike to CLIP: their centres share one
	// direction, so telling classes apart takes the small rest.
	shared := g.unitSet(3, 1)
	for c := 0; c < p.Classes; c++ {
		t := g.topics[c*p.Dim : (c+1)*p.Dim]
		for j := range t {
			t[j] = shared[j] + classDistinct*t[j]
		}
		normalize(t)
	}
	style := g.unitSet(2, 1)
	truth := &Truth{Version: Version, Seed: seed, Preset: p.Name, Dim: p.Dim, Classes: p.Classes,
		NearEval: map[string][]NearPoint{}, Sets: map[string]int{}}

	// Labelled ImageNet-like sets around the first Classes topics.
	sets := []struct {
		name  string
		per   int
		shift float64
		tag   uint64
	}{{"imagenet-train", p.TrainPerCls, 0, 10}, {"imagenet-val", p.EvalPerCls, 0, 11}, {"imagenet-sketch", p.EvalPerCls, sketchShift, 12}}
	evals := map[string][]float32{}
	for _, s := range sets {
		x, labels := g.labelled(s.tag, s.per, style, s.shift)
		paths := make([]string, len(labels))
		for i, l := range labels {
			paths[i] = fmt.Sprintf("n%08d/%s_%06d.JPEG", l, s.name, i)
		}
		w := &dataset.EmbeddingsWriter{Root: filepath.Join(out, s.name), DType: dataset.Float16, Dim: p.Dim, ShardRows: max(1, len(labels)/2+1)}
		if err := w.Add(x, labels, paths); err != nil {
			return nil, err
		}
		if err := w.Close(); err != nil {
			return nil, err
		}
		truth.Sets[s.name] = len(labels)
		if s.name != "imagenet-train" {
			// what is planted must be measured against what is stored
			evals[s.name] = roundF16(x)
		}
	}

	// LAION: topic points, then near-duplicate copies and near-eval points,
	// all shuffled into file order.
	base := g.around(20, p.Base, func(rng *rand.Rand, i int) ([]float32, float64) {
		return g.topics[(i%p.Topics)*p.Dim : (i%p.Topics+1)*p.Dim], topicSpread
	})
	type pt struct {
		row   []float32
		group int // dup group, -1 none
		near  string
		evalR int
	}
	pts := make([]pt, 0, p.Base+3*p.DupGroups+2*p.NearEval)
	for i := 0; i < p.Base; i++ {
		pts = append(pts, pt{row: base[i*p.Dim : (i+1)*p.Dim], group: -1})
	}
	rng := g.rng(30)
	origs := rng.Perm(p.Base)[:min(p.DupGroups, p.Base)]
	for grp, orig := range origs {
		pts[orig].group = grp
		for c := 0; c < 1+rng.IntN(3); c++ {
			pts = append(pts, pt{row: g.perturb(rng, pts[orig].row, dupNoise), group: grp})
		}
	}
	for _, name := range []string{"imagenet-val", "imagenet-sketch"} {
		e := evals[name]
		rows := rng.Perm(len(e) / p.Dim)[:min(p.NearEval, len(e)/p.Dim)]
		sort.Ints(rows)
		for _, r := range rows {
			pts = append(pts, pt{row: g.perturb(rng, e[r*p.Dim:(r+1)*p.Dim], nearNoise), group: -1, near: name, evalR: r})
		}
	}
	rng.Shuffle(len(pts), func(i, j int) { pts[i], pts[j] = pts[j], pts[i] })
	truth.BaseRows = len(pts)

	perTar := p.PerTar
	if perTar == 0 {
		perTar = 10000
	}
	id := func(i int) int64 { return int64(i/perTar)*int64(perTar) + int64(i%perTar) }
	groups := make([][]int64, p.DupGroups)
	for i, q := range pts {
		if q.group >= 0 {
			groups[q.group] = append(groups[q.group], id(i))
		}
		if q.near != "" {
			truth.NearEval[q.near] = append(truth.NearEval[q.near], NearPoint{ID: id(i), EvalRow: q.evalR})
		}
	}
	truth.DupGroups = groups

	// Embedding shards + metadata parquet, in clip-retrieval layout.
	laion := filepath.Join(out, "laion")
	per := (len(pts) + p.BaseShards - 1) / p.BaseShards
	for s := 0; s < p.BaseShards; s++ {
		lo, hi := s*per, min((s+1)*per, len(pts))
		mw, err := dataset.CreateMatrix(filepath.Join(laion, "img_emb", fmt.Sprintf("img_emb_%d.npy", s)), dataset.Float16, p.Dim)
		if err != nil {
			return nil, err
		}
		meta := make([]dataset.MetadataRow, 0, hi-lo)
		for i := lo; i < hi; i++ {
			if err := mw.Write(pts[i].row); err != nil {
				mw.Abort()
				return nil, err
			}
			k := id(i)
			meta = append(meta, dataset.MetadataRow{ImagePath: k, Key: fmt.Sprintf("%09d", k),
				Caption: fmt.Sprintf("a photo, sample %09d", k), URL: fmt.Sprintf("https://example.invalid/%09d.jpg", k)})
		}
		if err := dataset.WriteMetadata(filepath.Join(laion, "metadata", fmt.Sprintf("metadata_%d.parquet", s)), meta); err != nil {
			mw.Abort()
			return nil, err
		}
		if err := mw.Close(); err != nil {
			return nil, err
		}
	}

	// Webdataset tars of the base samples.
	if p.PerTar > 0 {
		for t := 0; t*perTar < len(pts); t++ {
			lo, hi := t*perTar, min((t+1)*perTar, len(pts))
			if err := writeTar(filepath.Join(out, "laion-tars", fmt.Sprintf("%05d.tar", t)), lo, hi, id, func(i int) []float32 { return pts[i].row }); err != nil {
				return nil, err
			}
		}
	}

	// Class text embeddings: near each class centre.
	cm := g.around(40, p.Classes, func(rng *rand.Rand, i int) ([]float32, float64) {
		return g.topics[i*p.Dim : (i+1)*p.Dim], textNoise
	})
	if err := dataset.WriteFloat32(filepath.Join(out, "text", "class_matrix.npy"), cm, p.Classes, p.Dim); err != nil {
		return nil, err
	}

	// Images and their ONNX encoder for the embed stage (images.go).
	if err := writeImages(out, g); err != nil {
		return nil, err
	}

	if err := writeTruth(filepath.Join(out, "truth"), truth); err != nil {
		return nil, err
	}
	return truth, nil
}

// ExpectedDedupRemoved is every id but the first (in file order) of each
// near-duplicate group: what dedup with order = "file" must remove.
func (t *Truth) ExpectedDedupRemoved() []int64 {
	var out []int64
	for _, g := range t.DupGroups {
		if len(g) > 1 {
			out = append(out, g[1:]...)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

func writeTruth(dir string, t *Truth) error {
	b, err := json.MarshalIndent(t, "", " ")
	if err != nil {
		return err
	}
	if err := dataset.WriteFileAtomic(filepath.Join(dir, "truth.json"), b); err != nil {
		return err
	}
	if err := dataset.WriteInt64(filepath.Join(dir, "dedup_removed_ids.npy"), t.ExpectedDedupRemoved()); err != nil {
		return err
	}
	for name, pts := range t.NearEval {
		ids := make([]int64, len(pts))
		for i, q := range pts {
			ids[i] = q.ID
		}
		sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
		if err := dataset.WriteInt64(filepath.Join(dir, "near_eval_"+name+"_ids.npy"), ids); err != nil {
			return err
		}
	}
	return nil
}

type gen struct {
	p      Preset
	seed   uint64
	topics []float32
}

func (g *gen) rng(stream uint64) *rand.Rand {
	return rand.New(rand.NewPCG(g.seed, stream*0x9e3779b97f4a7c15+1))
}

func (g *gen) unitSet(stream uint64, n int) []float32 {
	return g.around(stream, n, func(*rand.Rand, int) ([]float32, float64) { return nil, 1 })
}

// around makes n unit vectors normalize(centre(i) + s·N(0, I/d)), in
// parallel chunks each with its own seeded stream (so the output does not
// depend on the number of cores).
func (g *gen) around(stream uint64, n int, centre func(*rand.Rand, int) ([]float32, float64)) []float32 {
	d := g.p.Dim
	x := make([]float32, n*d)
	const chunk = 4096
	var wg sync.WaitGroup
	sem := make(chan struct{}, runtime.GOMAXPROCS(0))
	for c0 := 0; c0 < n; c0 += chunk {
		wg.Add(1)
		sem <- struct{}{}
		go func(c0 int) {
			defer wg.Done()
			defer func() { <-sem }()
			rng := g.rng(stream<<32 | uint64(c0/chunk))
			scale := 1 / math.Sqrt(float64(d))
			for i := c0; i < min(c0+chunk, n); i++ {
				ctr, s := centre(rng, i)
				row := x[i*d : (i+1)*d]
				for j := range row {
					v := rng.NormFloat64() * s * scale
					if ctr != nil {
						v += float64(ctr[j])
					}
					row[j] = float32(v)
				}
				normalize(row)
			}
		}(c0)
	}
	wg.Wait()
	return x
}

// labelled makes per points of each class around its centre, shifted
// along style by shift; rows are in class order.
func (g *gen) labelled(stream uint64, per int, style []float32, shift float64) ([]float32, []int64) {
	n := per * g.p.Classes
	d := g.p.Dim
	x := g.around(stream, n, func(rng *rand.Rand, i int) ([]float32, float64) {
		c := i / per
		ctr := make([]float32, d)
		for j := range ctr {
			ctr[j] = g.topics[c*d+j] + float32(shift)*style[j]
		}
		normalize(ctr)
		if shift > 0 {
			return ctr, sketchSpread
		}
		return ctr, classSpread
	})
	labels := make([]int64, n)
	for i := range labels {
		labels[i] = int64(i / per)
	}
	return x, labels
}

func (g *gen) perturb(rng *rand.Rand, row []float32, s float64) []float32 {
	out := make([]float32, len(row))
	scale := s / math.Sqrt(float64(len(row)))
	for j := range row {
		out[j] = row[j] + float32(rng.NormFloat64()*scale)
	}
	normalize(out)
	return out
}

func normalize(v []float32) {
	var ss float64
	for _, x := range v {
		ss += float64(x) * float64(x)
	}
	inv := 1 / math.Sqrt(ss)
	for j := range v {
		v[j] = float32(float64(v[j]) * inv)
	}
}

func roundF16(x []float32) []float32 {
	h := make([]uint16, len(x))
	dataset.F32ToF16(h, x)
	out := make([]float32, len(x))
	dataset.F16ToF32(out, h)
	return out
}

// writeTar writes samples [lo, hi) as a webdataset tar: KEY.jpg (a tiny
// JPEG whose colour comes from the embedding), KEY.txt, KEY.json.
func writeTar(path string, lo, hi int, id func(int) int64, row func(int) []float32) error {
	f, err := dataset.CreateAtomic(path)
	if err != nil {
		return err
	}
	tw := tar.NewWriter(f)
	var jb bytes.Buffer
	img := image.NewRGBA(image.Rect(0, 0, 8, 8))
	add := func(name string, data []byte) error {
		hdr := &tar.Header{Name: name, Mode: 0o644, Size: int64(len(data)), Format: tar.FormatUSTAR}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		_, err := tw.Write(data)
		return err
	}
	for i := lo; i < hi; i++ {
		key := fmt.Sprintf("%09d", id(i))
		r := row(i)
		c := color.RGBA{R: uint8(128 + 127*r[0]), G: uint8(128 + 127*r[1]), B: uint8(128 + 127*r[2]), A: 255}
		for p := 0; p < 64; p++ {
			img.Set(p%8, p/8, c)
		}
		jb.Reset()
		if err := jpeg.Encode(&jb, img, &jpeg.Options{Quality: 75}); err != nil {
			f.Abort()
			return err
		}
		meta, _ := json.Marshal(map[string]any{"key": key, "caption": fmt.Sprintf("sample %s", key), "width": 8, "height": 8})
		for _, e := range []struct {
			ext  string
			data []byte
		}{{".jpg", jb.Bytes()}, {".txt", []byte("sample " + key)}, {".json", meta}} {
			if err := add(key+e.ext, e.data); err != nil {
				f.Abort()
				return fmt.Errorf("writing %s: %w", path, err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		f.Abort()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return f.Commit()
}

// Exists reports whether out already holds a finished world of this
// version (truth.json is written last).
func Exists(out string) bool {
	b, err := os.ReadFile(filepath.Join(out, "truth", "truth.json"))
	if err != nil {
		return false
	}
	var t struct {
		Version int `json:"version"`
	}
	return json.Unmarshal(b, &t) == nil && t.Version == Version
}
