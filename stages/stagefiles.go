package stages

// Files that the kmeans and dedup stages share: the done marker that makes
// a finished stage skip, fingerprints of its inputs, which rows a rank
// reads, and .npy arrays that every rank writes part of, in place, through
// the shared filesystem (nothing proportional to the data goes through the
// Comm).

import (
	"container/heap"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"unsafe"

	"hpcrun/collective"
	"hpcrun/dataset"
)

// ---------------------------------------------------------------- rows of a rank

// rankRows is the part of a dataset one rank reads: the shards
// ds.Partition(size)[rank], a contiguous run of global rows [lo, hi).
type rankRows struct {
	shards []int
	lo, hi int64
}

func partitionRows(ds *dataset.Dataset, size, rank int) rankRows {
	p := ds.Partition(size)[rank]
	r := rankRows{shards: p}
	if len(p) > 0 {
		first, last := ds.Shards[p[0]], ds.Shards[p[len(p)-1]]
		r.lo, r.hi = first.Offset, last.Offset+int64(last.Rows)
	}
	return r
}

func (r rankRows) n() int { return int(r.hi - r.lo) }

// forEachBlock streams this rank's rows in global order, validated as the
// dataset's options say; row0 is the block's first row counted from r.lo.
func (r rankRows) forEachBlock(ds *dataset.Dataset, blockRows, threads int, fn func(row0 int, b dataset.Block) error) error {
	c := ds.Check()
	c.Threads = threads
	for _, s := range r.shards {
		m, err := ds.OpenShard(s)
		if err != nil {
			return err
		}
		base := int(ds.Shards[s].Offset - r.lo)
		err = m.Blocks(blockRows, c, func(b dataset.Block) error { return fn(base+b.Row0, b) })
		m.Close()
		if err != nil {
			return err
		}
	}
	return nil
}

// ---------------------------------------------------------------- done markers and fingerprints

// doneMark is <stage>/done.json, written last: the hash of the stage's
// parameters and input files, and the outputs it vouches for.
type doneMark struct {
	Hash    string   `json:"hash"`
	Outputs []string `json:"outputs"`
}

// numerics names how env's backend rounds when its results can differ from
// the exact float32 ones every backend otherwise gives (the CUDA backend
// with runtime.gpu_precision = "float16"); "" when exact. Stage hashes
// include it, so outputs made one way are not taken as done the other way
// (and, empty, it leaves every existing hash as it was).
func numerics(env *Env) string {
	if n, ok := env.Backend.(interface{ Numerics() string }); ok {
		return n.Numerics()
	}
	return ""
}

// paramHash is the SHA-256 of v's JSON encoding.
func paramHash(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err) // only plain structs are hashed
	}
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// filesFingerprint lists "path size mtime" of each file (an error if one
// is missing), so a changed input invalidates a finished stage.
func filesFingerprint(paths ...string) ([]string, error) {
	out := make([]string, 0, len(paths))
	for _, p := range paths {
		st, err := os.Stat(p)
		if err != nil {
			return nil, err
		}
		out = append(out, fmt.Sprintf("%s %d %d", p, st.Size(), st.ModTime().UnixNano()))
	}
	return out, nil
}

// datasetFiles lists every file a dataset is read from.
func datasetFiles(ds *dataset.Dataset) []string {
	var out []string
	for _, s := range ds.Shards {
		out = append(out, s.Emb)
		if s.Meta != "" {
			out = append(out, s.Meta)
		}
	}
	return out
}

// upToDate reports whether the done marker at path has the hash and every
// output it names still exists.
func upToDate(path, hash string) bool {
	b, err := os.ReadFile(path)
	if err != nil {
		return false
	}
	var m doneMark
	if json.Unmarshal(b, &m) != nil || m.Hash != hash {
		return false
	}
	for _, o := range m.Outputs {
		if _, err := os.Stat(filepath.Join(filepath.Dir(path), o)); err != nil {
			return false
		}
	}
	return true
}

func writeDoneMark(path, hash string, outputs []string) error {
	b, _ := json.MarshalIndent(doneMark{Hash: hash, Outputs: outputs}, "", "  ")
	return dataset.WriteFileAtomic(path, append(b, '\n'))
}

// agree evaluates f on rank 0 and gives every rank its answer, so that all
// ranks take the same branch even when files change under them.
func agree(ctx context.Context, c *collective.Comm, f func() bool) (bool, error) {
	var b []byte
	if c.Rank() == 0 {
		b = []byte{0}
		if f() {
			b[0] = 1
		}
	}
	b, err := c.Bcast(ctx, 0, b)
	if err != nil {
		return false, err
	}
	if len(b) != 1 {
		return false, fmt.Errorf("agree: got %d bytes from rank 0", len(b))
	}
	return b[0] == 1, nil
}

// ---------------------------------------------------------------- .npy written by every rank

// writeNPYGlobal writes an array of the given shape whose rows are spread
// over the ranks: this rank holds data, the bytes from row off on (rows of
// rowBytes bytes). Rank 0 creates a hidden temp file of the final size,
// every rank writes its range in place and syncs, and rank 0 renames the
// file into place once all have: the array appears whole or not at all.
func writeNPYGlobal(ctx context.Context, c *collective.Comm, path string, dt dataset.DType, shape []int, off int64, rowBytes int, data []byte) error {
	hdr, err := dataset.NPYHeader(dt, shape, 0)
	if err != nil {
		return err
	}
	total := int64(dt.Size())
	for _, s := range shape {
		total *= int64(s)
	}
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".partial")
	if c.Rank() == 0 {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return err
		}
		f, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
		if err != nil {
			return err
		}
		_, err = f.Write(hdr)
		if err == nil {
			err = f.Truncate(int64(len(hdr)) + total)
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("writing %s: %w", path, err)
		}
	}
	if err := c.Barrier(ctx); err != nil {
		return err
	}
	if len(data) > 0 {
		f, err := os.OpenFile(tmp, os.O_WRONLY, 0)
		if err != nil {
			return fmt.Errorf("rank %d: writing %s: %w", c.Rank(), path, err)
		}
		_, err = f.WriteAt(data, int64(len(hdr))+off*int64(rowBytes))
		if err == nil {
			err = f.Sync()
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("rank %d: writing %s: %w", c.Rank(), path, err)
		}
	}
	if err := c.Barrier(ctx); err != nil {
		return err
	}
	if c.Rank() == 0 {
		return os.Rename(tmp, path)
	}
	return nil
}

// readNPYRows reads elements [off, off+n) of a 1-d array of dtype dt that
// must hold want elements.
func readNPYRows[T int32 | int64 | uint8](path string, dt dataset.DType, want, off int64, n int) ([]T, error) {
	f, h, err := dataset.OpenNPY(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if h.DType != dt || len(h.Shape) != 1 || int64(h.Shape[0]) != want {
		return nil, fmt.Errorf("%s: want a %s array of %d elements, got %s %v", path, dt.Name(), want, h.DType.Name(), h.Shape)
	}
	out := make([]T, n)
	if n == 0 {
		return out, nil
	}
	b := sliceBytes(out)
	if err := readAtFull(f, b, h.DataOffset+off*int64(dt.Size())); err != nil {
		return nil, err
	}
	return out, nil
}

// sliceBytes views a numeric slice as its (little-endian) bytes.
func sliceBytes[T int32 | int64 | uint8 | uint16 | float32](s []T) []byte {
	if len(s) == 0 {
		return nil
	}
	return unsafe.Slice((*byte)(unsafe.Pointer(&s[0])), len(s)*int(unsafe.Sizeof(s[0])))
}

// ---------------------------------------------------------------- sorted int64 streams

// int64Stream reads int64 values from r in batches: a raw part file, or
// the data section of a 1-d int64 .npy.
type int64Stream struct {
	r    io.Reader
	name string
	buf  []int64
	pos  int
	cur  int64
}

// next advances to the next value (cur); false at the end.
func (s *int64Stream) next() (bool, error) {
	if s.pos == len(s.buf) {
		s.buf = slices.Grow(s.buf[:0], 8192)[:8192]
		n, err := io.ReadFull(s.r, sliceBytes(s.buf))
		if err != nil && err != io.ErrUnexpectedEOF && err != io.EOF {
			return false, fmt.Errorf("%s: %w", s.name, err)
		}
		s.buf, s.pos = s.buf[:n/8], 0
		if len(s.buf) == 0 {
			return false, nil
		}
	}
	s.cur = s.buf[s.pos]
	s.pos++
	return true, nil
}

type int64Heap struct{ s []*int64Stream }

func (h *int64Heap) Len() int           { return len(h.s) }
func (h *int64Heap) Less(i, j int) bool { return h.s[i].cur < h.s[j].cur }
func (h *int64Heap) Swap(i, j int)      { h.s[i], h.s[j] = h.s[j], h.s[i] }
func (h *int64Heap) Push(x any)         { h.s = append(h.s, x.(*int64Stream)) }
func (h *int64Heap) Pop() any {
	x := h.s[len(h.s)-1]
	h.s = h.s[:len(h.s)-1]
	return x
}

// mergeStreams merges sorted int64 streams into a 1-d int64 .npy at out
// (atomically, streaming: a heap over the streams' heads) and returns its
// length; unique drops repeated values.
func mergeStreams(out string, srcs []*int64Stream, unique bool) (int64, error) {
	o, err := createNPYStream(out, dataset.Int64)
	if err != nil {
		return 0, err
	}
	h := &int64Heap{}
	for _, s := range srcs {
		ok, err := s.next()
		if err != nil {
			o.abort()
			return 0, err
		}
		if ok {
			h.s = append(h.s, s)
		}
	}
	heap.Init(h)
	var n, last int64
	buf := make([]int64, 0, 8192)
	for h.Len() > 0 {
		s := h.s[0]
		if !unique || n == 0 || s.cur != last {
			buf = append(buf, s.cur)
			last = s.cur
			n++
		}
		ok, err := s.next()
		if err == nil && len(buf) == cap(buf) {
			err = o.write(sliceBytes(buf))
			buf = buf[:0]
		}
		if err != nil {
			o.abort()
			return 0, err
		}
		if ok {
			heap.Fix(h, 0)
		} else {
			heap.Pop(h)
		}
	}
	if err := o.write(sliceBytes(buf)); err != nil {
		o.abort()
		return 0, err
	}
	return n, o.close(int(n))
}
