package dataset

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// The layouts hpcrun reads.
const (
	ClipRetrieval = "clip-retrieval" // img_emb/img_emb_N.npy + metadata/metadata_N.parquet
	Embeddings    = "embeddings"     // images/img_emb_N.npy + labels/labels_N.npy + paths/paths_N.npy
)

// Options says how to read a dataset.
type Options struct {
	Layout   string // ClipRetrieval or Embeddings
	IDColumn string // clip-retrieval id column (default "image_path")
	// Normalize rescales rows whose norm is not 1 ± NormTolerance instead
	// of failing.
	Normalize bool
}

// Shard is one numbered embedding file and its companions.
type Shard struct {
	N      int    // the N of img_emb_N.npy
	Emb    string // embeddings .npy
	Meta   string // clip-retrieval metadata parquet ("" otherwise)
	Labels string // embeddings layout labels .npy ("" when absent)
	Paths  string // embeddings layout paths .npy ("" when absent)
	Rows   int
	Offset int64 // global row number of the shard's first row
}

// Dataset is an opened, validated embedding set. Opening reads headers and
// parquet footers only; rows are read per shard, in blocks.
type Dataset struct {
	Name   string
	Root   string
	Opts   Options
	Shards []Shard
	Dim    int
	DType  DType
	Rows   int64
}

// Open lists and validates the shards of the dataset at root: shard files
// sorted numerically (img_emb_2 before img_emb_10) and contiguous from 0,
// one dimension and dtype throughout, and companions that exist and hold
// as many rows as their embeddings.
func Open(name, root string, opt Options) (*Dataset, error) {
	if opt.IDColumn == "" {
		opt.IDColumn = "image_path"
	}
	var embDir string
	switch opt.Layout {
	case ClipRetrieval:
		embDir = filepath.Join(root, "img_emb")
	case Embeddings, "":
		opt.Layout = Embeddings
		embDir = filepath.Join(root, "images")
	default:
		return nil, fmt.Errorf("dataset %s: unknown layout %q", name, opt.Layout)
	}
	nums, err := numberedFiles(embDir, "img_emb_", ".npy")
	if err != nil {
		return nil, fmt.Errorf("dataset %s: %w", name, err)
	}
	if len(nums) == 0 {
		return nil, fmt.Errorf("dataset %s: no img_emb_N.npy files in %s", name, embDir)
	}
	for i, n := range nums {
		if n != i {
			return nil, fmt.Errorf("dataset %s: shard %s missing (found shards %s)", name,
				filepath.Join(embDir, fmt.Sprintf("img_emb_%d.npy", i)), shortList(nums))
		}
	}
	d := &Dataset{Name: name, Root: root, Opts: opt}
	for _, n := range nums {
		s := Shard{N: n, Emb: filepath.Join(embDir, fmt.Sprintf("img_emb_%d.npy", n)), Offset: d.Rows}
		h, err := HeaderOf(s.Emb)
		if err != nil {
			return nil, fmt.Errorf("dataset %s: %w", name, err)
		}
		if h.DType != Float16 && h.DType != Float32 {
			return nil, fmt.Errorf("dataset %s: %s: embeddings must be float16 or float32, got %s", name, s.Emb, h.DType.Name())
		}
		if len(h.Shape) != 2 {
			return nil, fmt.Errorf("dataset %s: %s: embeddings must be 2-d [n, dim], got shape %v", name, s.Emb, h.Shape)
		}
		s.Rows = h.Shape[0]
		if d.Dim == 0 {
			d.Dim, d.DType = h.Shape[1], h.DType
		} else if h.Shape[1] != d.Dim {
			return nil, fmt.Errorf("dataset %s: %s has dim %d but %s has dim %d", name, s.Emb, h.Shape[1], d.Shards[0].Emb, d.Dim)
		} else if h.DType != d.DType {
			return nil, fmt.Errorf("dataset %s: %s is %s but %s is %s", name, s.Emb, h.DType.Name(), d.Shards[0].Emb, d.DType.Name())
		}
		if d.Dim == 0 {
			return nil, fmt.Errorf("dataset %s: %s has dimension 0", name, s.Emb)
		}
		switch opt.Layout {
		case ClipRetrieval:
			s.Meta = filepath.Join(root, "metadata", fmt.Sprintf("metadata_%d.parquet", n))
			rows, err := ParquetRows(s.Meta)
			if err != nil {
				return nil, fmt.Errorf("dataset %s: %w", name, err)
			}
			if rows != int64(s.Rows) {
				return nil, fmt.Errorf("dataset %s: %s has %d rows but %s has %d", name, s.Meta, rows, s.Emb, s.Rows)
			}
		case Embeddings:
			for _, c := range []struct {
				dir, stem string
				dst       *string
			}{{"labels", "labels", &s.Labels}, {"paths", "paths", &s.Paths}} {
				p := filepath.Join(root, c.dir, fmt.Sprintf("%s_%d.npy", c.stem, n))
				if _, err := os.Stat(p); err != nil {
					continue // companions are optional, but must match when present
				}
				h, err := HeaderOf(p)
				if err != nil {
					return nil, fmt.Errorf("dataset %s: %w", name, err)
				}
				if len(h.Shape) != 1 || h.Shape[0] != s.Rows {
					return nil, fmt.Errorf("dataset %s: %s has shape %v but %s has %d rows", name, p, h.Shape, s.Emb, s.Rows)
				}
				*c.dst = p
			}
		}
		d.Shards = append(d.Shards, s)
		d.Rows += int64(s.Rows)
	}
	return d, nil
}

// numberedFiles returns the sorted N of dir/prefixN.suffix files.
func numberedFiles(dir, prefix, suffix string) ([]int, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var nums []int
	for _, e := range ents {
		name := e.Name()
		if !strings.HasPrefix(name, prefix) || !strings.HasSuffix(name, suffix) {
			continue
		}
		n, err := strconv.Atoi(strings.TrimSuffix(strings.TrimPrefix(name, prefix), suffix))
		if err != nil || n < 0 {
			continue
		}
		nums = append(nums, n)
	}
	sort.Ints(nums)
	return nums, nil
}

func shortList(nums []int) string {
	var parts []string
	for i, n := range nums {
		if i == 8 {
			parts = append(parts, "…")
			break
		}
		parts = append(parts, strconv.Itoa(n))
	}
	return strings.Join(parts, ",")
}

// Check is the validation the dataset's options ask for.
func (d *Dataset) Check() Check { return Check{Normalize: d.Opts.Normalize} }

// OpenShard opens shard i's embeddings.
func (d *Dataset) OpenShard(i int) (*Matrix, error) {
	m, err := OpenMatrix(d.Shards[i].Emb)
	if err != nil {
		return nil, err
	}
	if m.Rows != d.Shards[i].Rows || m.Dim != d.Dim {
		m.Close()
		return nil, fmt.Errorf("%s changed since the dataset was opened", d.Shards[i].Emb)
	}
	return m, nil
}

// IDs returns shard i's ids: the id column of its metadata
// (clip-retrieval), or global row numbers in shard order (embeddings).
func (d *Dataset) IDs(i int) ([]int64, error) {
	s := d.Shards[i]
	if d.Opts.Layout == ClipRetrieval {
		ids, err := ReadIDColumn(s.Meta, d.Opts.IDColumn)
		if err != nil {
			return nil, err
		}
		if len(ids) != s.Rows {
			return nil, fmt.Errorf("%s: %d ids for %d rows of %s", s.Meta, len(ids), s.Rows, s.Emb)
		}
		if err := uniqueIDs(ids); err != nil {
			return nil, fmt.Errorf("%s: column %q: %w", s.Meta, d.Opts.IDColumn, err)
		}
		return ids, nil
	}
	ids := make([]int64, s.Rows)
	for j := range ids {
		ids[j] = s.Offset + int64(j)
	}
	return ids, nil
}

// uniqueIDs fails on the first id that occurs twice (ids name samples: a
// duplicate would merge two images in every output).
func uniqueIDs(ids []int64) error {
	sorted := append([]int64(nil), ids...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i] < sorted[j] })
	for i := 1; i < len(sorted); i++ {
		if sorted[i] == sorted[i-1] {
			for r, id := range ids {
				if id == sorted[i] {
					return fmt.Errorf("id %d appears more than once (first at row %d)", id, r)
				}
			}
		}
	}
	return nil
}

// Labels returns shard i's labels (embeddings layout with labels_N.npy).
func (d *Dataset) Labels(i int) ([]int64, error) {
	s := d.Shards[i]
	if s.Labels == "" {
		return nil, fmt.Errorf("dataset %s: no labels for %s (want %s)", d.Name, s.Emb,
			filepath.Join(d.Root, "labels", fmt.Sprintf("labels_%d.npy", s.N)))
	}
	return ReadInt64(s.Labels)
}

// Paths returns shard i's image paths (embeddings layout with paths_N.npy).
func (d *Dataset) Paths(i int) ([]string, error) {
	s := d.Shards[i]
	if s.Paths == "" {
		return nil, fmt.Errorf("dataset %s: no paths for %s", d.Name, s.Emb)
	}
	return ReadStrings(s.Paths)
}

// ReadAll decodes every row into one float32 matrix; for the small sets
// (eval sets, references of a few million rows) that are scanned many times.
func (d *Dataset) ReadAll(blockRows int) ([]float32, error) {
	out := make([]float32, 0, d.Rows*int64(d.Dim))
	for i := range d.Shards {
		m, err := d.OpenShard(i)
		if err != nil {
			return nil, err
		}
		var buf []float32
		err = m.Blocks(blockRows, d.Check(), func(b Block) error {
			buf = b.Float32(buf)
			out = append(out, buf...)
			return nil
		})
		m.Close()
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

// AllIDs concatenates every shard's ids.
func (d *Dataset) AllIDs() ([]int64, error) {
	out := make([]int64, 0, d.Rows)
	for i := range d.Shards {
		ids, err := d.IDs(i)
		if err != nil {
			return nil, err
		}
		out = append(out, ids...)
	}
	return out, nil
}

// AllLabels concatenates every shard's labels.
func (d *Dataset) AllLabels() ([]int64, error) {
	out := make([]int64, 0, d.Rows)
	for i := range d.Shards {
		l, err := d.Labels(i)
		if err != nil {
			return nil, err
		}
		out = append(out, l...)
	}
	return out, nil
}

// Partition splits the shards into parts contiguous runs of about equal
// rows (part p gets shards [first, last)); the same for any caller, so
// rank r of size n always opens the same shards.
func (d *Dataset) Partition(parts int) [][]int {
	out := make([][]int, parts)
	if parts <= 0 {
		return nil
	}
	var acc int64
	for i, s := range d.Shards {
		// a shard goes to the part its midpoint falls in
		mid := acc + int64(s.Rows)/2
		p := int(mid * int64(parts) / max(d.Rows, 1))
		if p >= parts {
			p = parts - 1
		}
		out[p] = append(out[p], i)
		acc += int64(s.Rows)
	}
	return out
}

// ErrNoData marks an empty input.
var ErrNoData = errors.New("no data")

// EmbeddingsWriter writes a dataset in the embeddings layout, one shard at a
// time: images/img_emb_N.npy, labels/labels_N.npy, paths/paths_N.npy.
type EmbeddingsWriter struct {
	Root      string
	DType     DType
	Dim       int
	ShardRows int // rows per shard

	n      int
	cur    *MatrixWriter
	labels []int64
	paths  []string
}

// Add appends rows (len(rows) = len(labels)*Dim); labels and paths may be
// nil when the set has none.
func (w *EmbeddingsWriter) Add(rows []float32, labels []int64, paths []string) error {
	nr := len(rows) / w.Dim
	for i := 0; i < nr; {
		if w.cur == nil {
			var err error
			w.cur, err = CreateMatrix(filepath.Join(w.Root, "images", fmt.Sprintf("img_emb_%d.npy", w.n)), w.DType, w.Dim)
			if err != nil {
				return err
			}
		}
		take := min(nr-i, w.ShardRows-w.cur.Rows())
		if err := w.cur.Write(rows[i*w.Dim : (i+take)*w.Dim]); err != nil {
			return err
		}
		if labels != nil {
			w.labels = append(w.labels, labels[i:i+take]...)
		}
		if paths != nil {
			w.paths = append(w.paths, paths[i:i+take]...)
		}
		i += take
		if w.cur.Rows() == w.ShardRows {
			if err := w.flush(); err != nil {
				return err
			}
		}
	}
	return nil
}

func (w *EmbeddingsWriter) flush() error {
	if w.cur == nil {
		return nil
	}
	if w.labels != nil {
		if err := WriteInt64(filepath.Join(w.Root, "labels", fmt.Sprintf("labels_%d.npy", w.n)), w.labels); err != nil {
			return err
		}
	}
	if w.paths != nil {
		if err := WriteStrings(filepath.Join(w.Root, "paths", fmt.Sprintf("paths_%d.npy", w.n)), w.paths); err != nil {
			return err
		}
	}
	// the embeddings go last: a shard whose img_emb file exists is whole
	if err := w.cur.Close(); err != nil {
		return err
	}
	w.cur, w.labels, w.paths = nil, nil, nil
	w.n++
	return nil
}

// Close writes the last, partial shard.
func (w *EmbeddingsWriter) Close() error { return w.flush() }

// Abort drops the shard being written.
func (w *EmbeddingsWriter) Abort() {
	if w.cur != nil {
		w.cur.Abort()
		w.cur = nil
	}
}
