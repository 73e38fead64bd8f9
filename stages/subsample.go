package stages

// Stage "subsample": copy the samples whose key is in the keep list out of
// the webdataset tars into new tars of n_per_tar samples each.
//
// The whole story, in the order the code runs:
//
//  1. Every rank reads the member headers of its contiguous share of the
//     input tars (subsample.tars/*.tar, sorted by name; data is skipped by
//     seeking) and groups members into samples (consecutive members with
//     the same key: the name up to the first dot of its basename; keys are
//     the base ids, e.g. "000123456" = 123456). A corrupt or truncated tar
//     is an error naming it.
//  2. It loads the keep ids of its tars' key range (subsample.keep, sorted
//     int64, streamed) and counts the kept samples of each tar. All ranks
//     allgather the counts (a few bytes per tar), so every rank knows the
//     global layout: kept sample g (in tar order, then member order) goes
//     to output tar g / n_per_tar. Output tars are split over ranks in
//     contiguous runs; any rank count writes the same bytes.
//  3. Each rank copies its output tars' samples (all members of a sample
//     together, in input order, headers copied with mtimes rounded to the
//     second) into subsample/NNNNN.tar, each written atomically; with
//     write_cls a KEY.cls member holding the sample's k-means cluster
//     (kmeans/assignments.npy by kmeans/ids.npy) follows each sample.
//  4. subsample/plan.json records the layout: a rerun with the same plan
//     keeps the tars already written (resume); rank 0 writes done.json last.

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"

	"hpcrun/collective"
	"hpcrun/configs"
	"hpcrun/dataset"
)

func init() { registry["subsample"] = barrierAfter("subsample", runSubsample) }

// tarCount is one input tar's share of the layout.
type tarCount struct {
	Kept, Samples int64 // kept samples, all samples
	Lo, Hi        int64 // key range (Lo > Hi when the tar is empty)
}

type subsamplePlan struct {
	Stamp   string `json:"stamp"`
	Outputs int    `json:"outputs"`
	Kept    int64  `json:"kept"`
}

func runSubsample(ctx context.Context, env *Env) (*Result, error) {
	cfg := env.Cfg
	s := cfg.Subsample
	out := filepath.Join(cfg.Job.Workdir, "subsample")
	tars, err := listTars(s.Tars)
	if err != nil {
		return nil, err
	}
	keepHdr, err := dataset.HeaderOf(s.Keep)
	if err != nil {
		return nil, fmt.Errorf("subsample.keep: %w", err)
	}
	if len(keepHdr.Shape) != 1 || keepHdr.DType != dataset.Int64 {
		return nil, fmt.Errorf("subsample.keep %s: want a 1-d int64 array, got %s %v", s.Keep, keepHdr.DType.Name(), keepHdr.Shape)
	}
	inputs := append([]string{s.Keep}, tars...)
	var labelFiles []string
	if s.WriteCls {
		labelFiles = []string{filepath.Join(cfg.Job.Workdir, "kmeans", "ids.npy"), filepath.Join(cfg.Job.Workdir, "kmeans", "assignments.npy")}
		for _, p := range labelFiles {
			if _, err := os.Stat(p); err != nil {
				return nil, fmt.Errorf("subsample.write_cls: labels are k-means clusters, but %s is missing (run the kmeans stage, or set write_cls = false)", p)
			}
		}
		inputs = append(inputs, labelFiles...)
	}
	st, err := fileStamps(inputs...)
	if err != nil {
		return nil, err
	}
	stamp := hashJSON(struct {
		S      configs.Subsample
		Inputs string
		Format int
	}{*s, st, 1})
	var extras []map[string]any
	todo, err := agreeTodo(ctx, env, 1, func(int) (bool, map[string]any) {
		ok, extra := readStamp(out, stamp)
		n, _ := extra["output_tars"].(float64)
		for j := 0; ok && j < int(n); j++ {
			_, err := os.Stat(filepath.Join(out, fmt.Sprintf("%05d.tar", j)))
			ok = err == nil
		}
		return ok, extra
	}, &extras)
	if err != nil {
		return nil, err
	}
	if len(todo) == 0 {
		var items int64
		if n, ok := extras[0]["kept"].(float64); ok {
			items = int64(n)
		}
		return &Result{Items: items, Extra: extras[0], Skipped: true}, nil
	}

	// 1-2. count kept samples per input tar
	size, rank := env.Size(), env.Rank()
	t0, t1 := rank*len(tars)/size, (rank+1)*len(tars)/size
	var keys [][]int64
	lo, hi := int64(math.MaxInt64), int64(math.MinInt64)
	for _, p := range tars[t0:t1] {
		k, err := tarKeys(p)
		if err != nil {
			return nil, err
		}
		keys = append(keys, k)
		for _, v := range k {
			lo, hi = min(lo, v), max(hi, v)
		}
	}
	keep, err := readIDRange(s.Keep, lo, hi)
	if err != nil {
		return nil, err
	}
	mine := make([]int64, 0, 4*len(keys))
	for _, k := range keys {
		c := tarCount{Lo: math.MaxInt64, Hi: math.MinInt64, Samples: int64(len(k))}
		for _, v := range k {
			if _, ok := slices.BinarySearch(keep, v); ok {
				c.Kept++
			}
			c.Lo, c.Hi = min(c.Lo, v), max(c.Hi, v)
		}
		mine = append(mine, c.Kept, c.Samples, c.Lo, c.Hi)
	}
	keys, keep = nil, nil
	parts, err := env.Comm.Allgatherv(ctx, collective.AsBytes(mine))
	if err != nil {
		return nil, err
	}
	var counts []tarCount
	for r, b := range parts {
		v, err := collective.FromBytes[int64](b)
		if err != nil || len(v)%4 != 0 {
			return nil, fmt.Errorf("tar counts from rank %d: %d bytes", r, len(b))
		}
		for i := 0; i < len(v); i += 4 {
			counts = append(counts, tarCount{Kept: v[i], Samples: v[i+1], Lo: v[i+2], Hi: v[i+3]})
		}
	}
	if len(counts) != len(tars) {
		return nil, fmt.Errorf("tar counts for %d tars, want %d", len(counts), len(tars))
	}
	prefix := make([]int64, len(tars)+1)
	var samples int64
	for t, c := range counts {
		prefix[t+1] = prefix[t] + c.Kept
		samples += c.Samples
	}
	total := prefix[len(tars)]
	n := int64(s.NPerTar)
	nOut := int((total + n - 1) / n)

	// 4. the plan: a different one removes the tars of the old
	plan := subsamplePlan{Stamp: stamp, Outputs: nOut, Kept: total}
	if rank == 0 {
		if err := writePlan(out, plan); err != nil {
			return nil, err
		}
	}
	if err := env.Comm.Barrier(ctx); err != nil {
		return nil, err
	}

	// 3. copy this rank's output tars
	j0, j1 := rank*nOut/size, (rank+1)*nOut/size
	if j0 < j1 {
		c := &tarCopier{dir: out, n: n, g0: int64(j0) * n, g1: min(total, int64(j1)*n)}
		// the input tars holding kept samples [g0, g1)
		ta := sort.Search(len(tars), func(t int) bool { return prefix[t+1] > c.g0 })
		tb := sort.Search(len(tars), func(t int) bool { return prefix[t+1] >= c.g1 })
		klo, khi := int64(math.MaxInt64), int64(math.MinInt64)
		for t := ta; t <= tb; t++ {
			klo, khi = min(klo, counts[t].Lo), max(khi, counts[t].Hi)
		}
		if c.keep, err = readIDRange(s.Keep, klo, khi); err != nil {
			return nil, err
		}
		if s.WriteCls {
			if c.labels, err = loadClusterLabels(labelFiles[0], labelFiles[1]); err != nil {
				return nil, err
			}
		}
		for t := ta; t <= tb; t++ {
			if err := ctx.Err(); err != nil {
				c.abort()
				return nil, err
			}
			if err := c.copyTar(tars[t], prefix[t]); err != nil {
				c.abort()
				return nil, err
			}
		}
		if err := c.flush(); err != nil {
			return nil, err
		}
		if c.g != c.g1 {
			return nil, fmt.Errorf("copied kept samples up to %d, want %d (input tars changed while running?)", c.g, c.g1)
		}
	}
	if err := env.Comm.Barrier(ctx); err != nil {
		return nil, err
	}
	res := &Result{Items: total}
	if rank != 0 {
		return res, nil
	}
	res.Extra = map[string]any{
		"input_tars":           len(tars),
		"input_samples":        samples,
		"kept":                 total,
		"output_tars":          nOut,
		"keep_ids":             keepHdr.Shape[0],
		"keep_ids_not_in_tars": max(0, int64(keepHdr.Shape[0])-total),
		"write_cls":            s.WriteCls,
	}
	if s.WriteCls {
		res.Extra["cls"] = "k-means cluster (kmeans/assignments.npy)"
	}
	return res, writeStamp(out, stageStamp{Stamp: stamp, Extra: res.Extra})
}

// listTars is dir's *.tar files, sorted by name.
func listTars(dir string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("subsample.tars: %w", err)
	}
	var out []string
	for _, e := range ents {
		if !e.IsDir() && strings.HasSuffix(e.Name(), ".tar") {
			out = append(out, filepath.Join(dir, e.Name()))
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("subsample.tars: no .tar files in %s", dir)
	}
	sort.Strings(out)
	return out, nil
}

// writePlan writes plan.json; when the previous plan differs, the output
// tars it made are removed first (a rerun with the same plan keeps them).
func writePlan(dir string, plan subsamplePlan) error {
	p := filepath.Join(dir, "plan.json")
	var old subsamplePlan
	if b, err := os.ReadFile(p); err == nil && json.Unmarshal(b, &old) == nil && old == plan {
		return nil
	}
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), ".tar") || e.Name() == "done.json" {
			if err := os.Remove(filepath.Join(dir, e.Name())); err != nil {
				return err
			}
		}
	}
	b, _ := json.MarshalIndent(plan, "", "  ")
	return dataset.WriteFileAtomic(p, append(b, '\n'))
}

// sampleKey splits a member name into its sample prefix (folder and the
// basename up to its first dot, as webdataset does) and the id it spells.
func sampleKey(name string) (prefix string, id int64, err error) {
	dir, base := path.Split(name)
	key, _, _ := strings.Cut(base, ".")
	id, err = strconv.ParseInt(key, 10, 64)
	if err != nil || key == "" || key[0] == '-' || key[0] == '+' {
		return "", 0, fmt.Errorf("member %q: key %q is not a number (webdataset keys must be the base ids)", name, key)
	}
	return dir + key, id, nil
}

// forEachMember walks a tar's regular members; the data is read only when
// fn reads it (otherwise skipped by seeking). Errors name the tar.
func forEachMember(p string, fn func(h *tar.Header, r io.Reader) error) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("corrupt tar %s: %w", p, err)
		}
		if h.Typeflag != tar.TypeReg {
			continue
		}
		if err := fn(h, tr); err != nil {
			if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, tar.ErrHeader) {
				return fmt.Errorf("corrupt tar %s: %w", p, err)
			}
			return fmt.Errorf("tar %s: %w", p, err)
		}
	}
	// a tar ends with two zero blocks: without them it was cut short
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if st.Size() < 1024 {
		return fmt.Errorf("corrupt tar %s: no end-of-archive marker (truncated?)", p)
	}
	end := make([]byte, 1024)
	if _, err := f.ReadAt(end, st.Size()-1024); err != nil {
		return fmt.Errorf("corrupt tar %s: %w", p, err)
	}
	if !bytes.Equal(end, make([]byte, 1024)) {
		return fmt.Errorf("corrupt tar %s: no end-of-archive marker (truncated?)", p)
	}
	return nil
}

// tarKeys lists a tar's samples' ids, in order.
func tarKeys(p string) ([]int64, error) {
	var keys []int64
	last := ""
	err := forEachMember(p, func(h *tar.Header, _ io.Reader) error {
		prefix, id, err := sampleKey(h.Name)
		if err != nil {
			return err
		}
		if prefix != last || len(keys) == 0 {
			keys = append(keys, id)
			last = prefix
		}
		return nil
	})
	return keys, err
}

// tarCopier writes kept samples [g0, g1) (global kept order) into output
// tars of n samples: sample g goes to tar g / n.
type tarCopier struct {
	dir    string
	n      int64
	g0, g1 int64
	keep   []int64
	labels *clusterLabels

	g      int64 // next global kept index
	out    *dataset.AtomicFile
	tw     *tar.Writer
	skip   bool // the current output tar already exists (resume)
	outIdx int64
}

// copyTar copies one input tar's kept samples in range; first is the
// global index of its first kept sample.
func (c *tarCopier) copyTar(p string, first int64) error {
	c.g = first
	last := ""
	var cur struct {
		write bool
		id    int64
		h     *tar.Header
	}
	endSample := func() error {
		if !cur.write || c.labels == nil || c.skip {
			return nil
		}
		lab, err := c.labels.of(cur.id)
		if err != nil {
			return err
		}
		prefix, _, _ := sampleKey(cur.h.Name)
		return c.add(&tar.Header{Name: prefix + ".cls", Mode: 0o644, ModTime: cur.h.ModTime, Typeflag: tar.TypeReg}, strings.NewReader(strconv.Itoa(int(lab))))
	}
	err := forEachMember(p, func(h *tar.Header, r io.Reader) error {
		prefix, id, err := sampleKey(h.Name)
		if err != nil {
			return err
		}
		if prefix != last || cur.h == nil {
			if err := endSample(); err != nil {
				return err
			}
			if c.g >= c.g1 {
				cur.write = false
				return errTarDone
			}
			last = prefix
			cur.write, cur.id, cur.h = false, id, h
			if _, ok := slices.BinarySearch(c.keep, id); ok {
				if c.g >= c.g0 && c.g < c.g1 {
					if err := c.startSample(); err != nil {
						return err
					}
					cur.write = true
				}
				c.g++
			}
		}
		if !cur.write || c.skip {
			return nil
		}
		return c.add(&tar.Header{Name: h.Name, Mode: h.Mode, Size: h.Size, ModTime: h.ModTime, Typeflag: tar.TypeReg,
			Uid: h.Uid, Gid: h.Gid, Uname: h.Uname, Gname: h.Gname}, r)
	})
	if errors.Is(err, errTarDone) {
		return nil
	}
	if err != nil {
		return err
	}
	return endSample()
}

// errTarDone stops reading an input tar past the last sample wanted.
var errTarDone = errors.New("done with this tar")

// startSample opens the output tar that kept sample c.g goes to.
func (c *tarCopier) startSample() error {
	j := c.g / c.n
	if (c.out != nil || c.skip) && j == c.outIdx {
		return nil
	}
	if err := c.flush(); err != nil {
		return err
	}
	c.outIdx = j
	p := filepath.Join(c.dir, fmt.Sprintf("%05d.tar", j))
	if _, err := os.Stat(p); err == nil {
		c.skip = true // written by an earlier run of the same plan
		return nil
	}
	f, err := dataset.CreateAtomic(p)
	if err != nil {
		return err
	}
	c.out, c.tw = f, tar.NewWriter(f)
	return nil
}

func (c *tarCopier) add(h *tar.Header, r io.Reader) error {
	if h.Size == 0 && h.Typeflag == tar.TypeReg {
		b, err := io.ReadAll(r)
		if err != nil {
			return err
		}
		h.Size = int64(len(b))
		r = bytes.NewReader(b)
	}
	if err := c.tw.WriteHeader(h); err != nil {
		return fmt.Errorf("writing %s: %w", c.out.Name(), err)
	}
	if _, err := io.CopyN(c.tw, r, h.Size); err != nil {
		return err
	}
	return nil
}

// flush commits the current output tar.
func (c *tarCopier) flush() error {
	c.skip = false
	if c.out == nil {
		return nil
	}
	out := c.out
	c.out = nil
	if err := c.tw.Close(); err != nil {
		out.Abort()
		return err
	}
	return out.Commit()
}

func (c *tarCopier) abort() {
	if c.out != nil {
		c.out.Abort()
		c.out = nil
	}
}

// clusterLabels maps ids to k-means clusters (kmeans/ids.npy and
// kmeans/assignments.npy, sorted by id).
type clusterLabels struct {
	ids []int64
	cls []int32
}

func loadClusterLabels(idsPath, assignPath string) (*clusterLabels, error) {
	ids, err := dataset.ReadInt64(idsPath)
	if err != nil {
		return nil, err
	}
	cls, err := dataset.ReadInt32(assignPath)
	if err != nil {
		return nil, err
	}
	if len(ids) != len(cls) {
		return nil, fmt.Errorf("%s has %d ids but %s %d assignments", idsPath, len(ids), assignPath, len(cls))
	}
	order := make([]int, len(ids))
	for i := range order {
		order[i] = i
	}
	sort.Slice(order, func(a, b int) bool { return ids[order[a]] < ids[order[b]] })
	l := &clusterLabels{ids: make([]int64, len(ids)), cls: make([]int32, len(ids))}
	for i, o := range order {
		l.ids[i], l.cls[i] = ids[o], cls[o]
	}
	return l, nil
}

func (l *clusterLabels) of(id int64) (int32, error) {
	i, ok := slices.BinarySearch(l.ids, id)
	if !ok {
		return 0, fmt.Errorf("sample %09d has no cluster in kmeans/ids.npy", id)
	}
	return l.cls[i], nil
}
