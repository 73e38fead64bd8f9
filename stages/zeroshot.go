package stages

// The zeroshot stage: top-1 and top-5 accuracy of each [zeroshot].eval set's
// image embeddings against a class-embedding matrix, into
// zeroshot/accuracy.json.
//
// Story: load the class matrix (float32 [classes, dim]; its rows are the
// zero-shot classifier, normally L2-normalised text embeddings), and per
// eval set the class mask zeroshot.masks names (a shipped mask of
// configs/masks or an int64 .npy of class indices): a masked set is scored
// against the mask's rows only and its label l means class mask[l]. Each
// rank takes a share of the set's shards, asks the kernels engine for the
// top min(5, classes) classes of every image (TopK, the class rows as the
// base) and counts hits; an Allreduce adds the counts; rank 0 writes
// accuracy.json, then done.json (the hash of the section and of every input
// file's size and mtime) last, which makes an unchanged rerun skip.

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"hpcrun/collective"
	"hpcrun/configs"
	"hpcrun/configs/masks"
	"hpcrun/dataset"
	"hpcrun/kernels"
)

func init() { registry["zeroshot"] = runZeroshot }

// ZeroshotAccuracy is one eval set's entry in accuracy.json.
type ZeroshotAccuracy struct {
	Top1    float64 `json:"top1"`
	Top5    float64 `json:"top5"`
	N       int64   `json:"n"`
	Classes int     `json:"classes"`
	Mask    string  `json:"mask,omitempty"`
}

func runZeroshot(ctx context.Context, env *Env) (*Result, error) {
	z := env.Cfg.Zeroshot
	dir := filepath.Join(env.Cfg.Job.Workdir, "zeroshot")
	cm, shape, err := dataset.ReadFloat32(z.ClassMatrix)
	if err != nil {
		return nil, fmt.Errorf("zeroshot.class_matrix: %w", err)
	}
	if len(shape) != 2 || shape[0] < 1 || shape[1] < 1 {
		return nil, fmt.Errorf("zeroshot.class_matrix %s: want float32 [classes, dim], got shape %v", z.ClassMatrix, shape)
	}
	classes, dim := shape[0], shape[1]

	// inputs, fingerprinted
	type evalSet struct {
		name string
		ds   *dataset.Dataset
		mask []int64
		desc string
	}
	sets := make([]evalSet, len(z.Eval))
	files := []string{z.ClassMatrix}
	for i, name := range z.Eval {
		ds, err := OpenDataset(env.Cfg, name)
		if err != nil {
			return nil, fmt.Errorf("zeroshot.eval: %w", err)
		}
		if ds.Dim != dim {
			return nil, fmt.Errorf("zeroshot: dataset %s has dim %d but the class matrix %s has dim %d", name, ds.Dim, z.ClassMatrix, dim)
		}
		mask, desc, err := zeroshotMask(z, name, classes)
		if err != nil {
			return nil, err
		}
		if strings.HasSuffix(desc, ".npy") {
			files = append(files, desc)
		}
		for _, s := range ds.Shards {
			if s.Labels == "" {
				return nil, fmt.Errorf("zeroshot: dataset %s has no labels for %s (want labels/labels_%d.npy)", name, s.Emb, s.N)
			}
			files = append(files, s.Emb, s.Labels)
		}
		sets[i] = evalSet{name, ds, mask, desc}
	}
	hash, err := zeroshotHash(z, files)
	if err != nil {
		return nil, err
	}
	donePath := filepath.Join(dir, "done.json")
	if b, err := os.ReadFile(donePath); err == nil {
		var d struct {
			Hash string `json:"hash"`
		}
		if json.Unmarshal(b, &d) == nil && d.Hash == hash {
			if _, err := os.Stat(filepath.Join(dir, "accuracy.json")); err == nil {
				env.Log.Info("zeroshot: outputs up to date, skipped")
				return &Result{Skipped: true}, nil
			}
		}
	}

	out := map[string]ZeroshotAccuracy{}
	var items int64
	for _, s := range sets {
		base := cm
		m := classes
		if s.mask != nil {
			m = len(s.mask)
			base = make([]float32, m*dim)
			for j, c := range s.mask {
				copy(base[j*dim:(j+1)*dim], cm[int(c)*dim:(int(c)+1)*dim])
			}
		}
		counts := make([]int64, 3) // top1, top5, n
		for _, sh := range s.ds.Partition(env.Size())[env.Rank()] {
			c, err := zeroshotShard(env, s.ds, sh, kernels.F32Matrix(base, m, dim), env.Cfg.Runtime.BlockRows)
			if err != nil {
				return nil, fmt.Errorf("zeroshot %s: %w", s.name, err)
			}
			for k := range counts {
				counts[k] += c[k]
			}
		}
		if err := collective.Allreduce(ctx, env.Comm, counts, collective.Sum); err != nil {
			return nil, err
		}
		acc := ZeroshotAccuracy{N: counts[2], Classes: m}
		if s.mask != nil {
			acc.Mask = s.desc
		}
		if counts[2] > 0 {
			acc.Top1 = float64(counts[0]) / float64(counts[2])
			acc.Top5 = float64(counts[1]) / float64(counts[2])
		}
		out[s.name] = acc
		items += counts[2]
		if env.Rank() == 0 {
			env.Log.Info("zeroshot", "eval", s.name, "top1", fmt.Sprintf("%.4f", acc.Top1), "top5", fmt.Sprintf("%.4f", acc.Top5), "n", acc.N, "classes", m)
		}
	}
	if env.Rank() == 0 {
		os.Remove(donePath)
		b, _ := json.MarshalIndent(out, "", " ")
		if err := dataset.WriteFileAtomic(filepath.Join(dir, "accuracy.json"), append(b, '\n')); err != nil {
			return nil, err
		}
		b, _ = json.Marshal(map[string]string{"hash": hash})
		if err := dataset.WriteFileAtomic(donePath, append(b, '\n')); err != nil {
			return nil, err
		}
	}
	if err := env.Comm.Barrier(ctx); err != nil {
		return nil, err
	}
	extra := map[string]any{}
	for k, v := range out {
		extra[k] = v
	}
	return &Result{Items: items, Extra: extra}, nil
}

// zeroshotMask resolves zeroshot.masks[name]: nil when the set has none.
func zeroshotMask(z *configs.Zeroshot, name string, classes int) ([]int64, string, error) {
	spec, ok := z.Masks[name]
	if !ok || spec == "" {
		return nil, "", nil
	}
	var mask []int64
	var err error
	if strings.HasSuffix(spec, ".npy") {
		mask, err = dataset.ReadInt64(spec)
	} else {
		mask, err = masks.Get(spec)
	}
	if err != nil {
		return nil, "", fmt.Errorf("zeroshot.masks.%s: %w", name, err)
	}
	if len(mask) == 0 {
		return nil, "", fmt.Errorf("zeroshot.masks.%s: %s is empty", name, spec)
	}
	for _, c := range mask {
		if c < 0 || c >= int64(classes) {
			return nil, "", fmt.Errorf("zeroshot.masks.%s: class %d of %s is outside the class matrix's %d rows", name, c, spec, classes)
		}
	}
	return mask, spec, nil
}

func zeroshotHash(z *configs.Zeroshot, files []string) (string, error) {
	h := sha256.New()
	b, _ := json.Marshal(z)
	h.Write(b)
	for _, f := range files {
		st, err := os.Stat(f)
		if err != nil {
			return "", err
		}
		fmt.Fprintf(h, "\n%s %d %d", f, st.Size(), st.ModTime().UnixNano())
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// zeroshotShard counts top-1 hits, top-5 hits and images of one shard
// against the class rows cls.
func zeroshotShard(env *Env, ds *dataset.Dataset, shard int, cls kernels.Matrix, blockRows int) ([]int64, error) {
	labels, err := ds.Labels(shard)
	if err != nil {
		return nil, err
	}
	m, err := ds.OpenShard(shard)
	if err != nil {
		return nil, err
	}
	defer m.Close()
	k := min(5, cls.Rows)
	counts := make([]int64, 3)
	err = m.Blocks(blockRows, ds.Check(), func(b dataset.Block) error {
		q := kernels.Matrix{Rows: b.Rows, Dim: b.Dim, F16: b.F16, F32: b.F32}
		top, err := env.Backend.TopK(q, cls, kernels.TopKOptions{K: k})
		if err != nil {
			return err
		}
		for i := 0; i < b.Rows; i++ {
			row := b.Row0 + i
			l := labels[row]
			if l < 0 || l >= int64(cls.Rows) {
				return fmt.Errorf("%s row %d: label %d is outside the %d classes scored (a masked set's labels index its mask)", m.Path, row, l, cls.Rows)
			}
			_, idx := top.Row(i)
			if idx[0] == l {
				counts[0]++
			}
			for _, c := range idx {
				if c == l {
					counts[1]++
					break
				}
			}
		}
		counts[2] += int64(b.Rows)
		return nil
	})
	return counts, err
}
