package stages

// The embed stage: image files -> L2-normalised CLIP image embeddings in the
// embeddings layout (embed/<name>/images/img_emb_N.npy, labels/labels_N.npy,
// paths/paths_N.npy), one [embed.<name>] section each.
//
// Story, in order:
//  1. every rank lists the input the same way (ImageFolder: class folders
//     sorted by name give the labels, files sorted as torchvision walks
//     them; webdataset: *.tar sorted, samples in tar order, .cls labels)
//     and fingerprints it with the config section and the model;
//  2. an up-to-date embed/<name>/done.json skips the set;
//  3. the input is cut into chunks that do not depend on the rank count
//     (ImageFolder: runs of whole batches, about 1024 chunks; webdataset:
//     one tar each); rank r embeds chunks c ≡ r (mod size) into
//     embed/<name>/.parts/<hash>/chunk_<c>.*, a finished chunk being one
//     whose .json exists (a rerun resumes there);
//  4. per rank, a pool of workers reads, decodes and preprocesses images
//     (clip.Preprocessor: open_clip's transform bit for bit) into batch
//     buffers while the previous batch runs through ONNX Runtime; a
//     corrupt image is skipped, logged and listed (fail_on_corrupt makes it
//     fatal);
//  5. after a barrier the final shards of shard_size rows are cut from the
//     chunks in global order, rank r writing shards j ≡ r (mod size), so the
//     output is the same bytes for any rank count; rank 0 writes
//     failed.json and done.json last and removes the parts.

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"hpcrun/clip"
	"hpcrun/clip/ort"
	"hpcrun/configs"
	"hpcrun/dataset"
)

func init() { registry["embed"] = runEmbed }

// Tunables of the embed pipeline.
var (
	embedTargetChunks  = 1024             // ImageFolder chunks aimed at (rank-count independent)
	embedBuffers       = 3                // batch buffers in flight per rank
	embedProgressEvery = 10 * time.Second // rank 0's progress log period
)

// embedTestHook, when set, runs after each chunk is written; an error
// fails the stage there (tests interrupt a run with it).
var embedTestHook func(chunk int) error

// embedImageExts are the files an ImageFolder lists (torchvision's
// IMG_EXTENSIONS); only JPEG, PNG and WebP decode, the others are
// reported as failed.
var embedImageExts = map[string]bool{".jpg": true, ".jpeg": true, ".png": true, ".webp": true,
	".ppm": true, ".bmp": true, ".pgm": true, ".tif": true, ".tiff": true}

// webdataset members taken as the sample's image, in order of preference.
var embedTarImageExts = []string{"jpg", "jpeg", "png", "webp"}

func runEmbed(ctx context.Context, env *Env) (*Result, error) {
	names := make([]string, 0, len(env.Cfg.Embed))
	for n := range env.Cfg.Embed {
		names = append(names, n)
	}
	sort.Strings(names)
	res := &Result{Extra: map[string]any{}}
	skipped := 0
	for _, n := range names {
		r, err := embedSet(ctx, env, n, env.Cfg.Embed[n])
		if err != nil {
			return nil, fmt.Errorf("embed %s: %w", n, err)
		}
		res.Extra[n] = r
		if r.Skipped {
			skipped++
		} else {
			res.Items += r.Images
		}
	}
	res.Skipped = skipped == len(names)
	return res, nil
}

// embedReport is one set's entry in report.json and done.json.
type embedReport struct {
	Images   int64   `json:"images"`
	Failed   int     `json:"failed"`
	Dim      int     `json:"dim"`
	Shards   int     `json:"shards"`
	Provider string  `json:"provider,omitempty"`
	Rate     float64 `json:"images_per_s,omitempty"` // this run, all ranks
	// PipelineSeconds is rank 0's time from its ONNX Runtime session being
	// ready to its last chunk written: decode, preprocessing, inference.
	PipelineSeconds float64 `json:"pipeline_seconds,omitempty"`
	PipelineImages  int     `json:"pipeline_images,omitempty"` // images rank 0 read in that time
	Skipped         bool    `json:"skipped,omitempty"`
}

// embedItem is one image to embed.
type embedItem struct {
	rel   string // path written to paths_N.npy
	label int64  // -1 when unknown
	file  string // file to read, or "" when data holds the bytes
	data  []byte
}

// where names the image in messages: its file, or its place in a tar.
func (it embedItem) where() string {
	if it.file != "" {
		return it.file
	}
	return it.rel
}

// embedFailure names a skipped image.
type embedFailure struct {
	Path  string `json:"path"`
	Error string `json:"error"`
}

// embedChunkInfo is chunk_<c>.json, written after the chunk's arrays.
type embedChunkInfo struct {
	Rows   int            `json:"rows"`
	Dim    int            `json:"dim"`
	Failed []embedFailure `json:"failed,omitempty"`
}

// embedInput is the listed input: ImageFolder items cut into chunks, or
// webdataset tars (one chunk each).
type embedInput struct {
	chunks [][]embedItem // ImageFolder
	tars   []string      // webdataset (absolute paths)
	root   string
	n      int // ImageFolder items
	sig    []string
}

func (in *embedInput) numChunks() int {
	if in.tars != nil {
		return len(in.tars)
	}
	return len(in.chunks)
}

func embedSet(ctx context.Context, env *Env, name string, ec *configs.Embed) (*embedReport, error) {
	t0 := time.Now()
	comm := env.Comm
	out := filepath.Join(env.Cfg.Job.Workdir, "embed", name)
	in, err := embedList(ec)
	if err != nil {
		return nil, err
	}
	hash, err := embedHash(ec, in)
	if err != nil {
		return nil, err
	}
	donePath := filepath.Join(out, "done.json")
	if prev, ok := embedUpToDate(donePath, hash); ok {
		env.Log.Info("embed: outputs up to date, skipped", "set", name, "images", prev.Images)
		prev.Skipped, prev.Rate, prev.PipelineSeconds, prev.PipelineImages = true, 0, 0, 0
		return prev, nil
	}
	partDir := filepath.Join(out, ".parts", hash[:16])
	if err := os.MkdirAll(partDir, 0o755); err != nil {
		return nil, err
	}

	// Chunks of this rank, the finished ones skipped.
	var mine []int
	for c := env.Rank(); c < in.numChunks(); c += env.Size() {
		if _, err := os.Stat(embedChunkPath(partDir, c, "json")); err == nil {
			continue
		}
		mine = append(mine, c)
	}
	provider := ""
	var pipeSec float64
	var pipeImages int
	if len(mine) > 0 {
		sess, err := ort.NewSession(ec.Model, ort.SessionOptions{Backend: env.Cfg.Runtime.Backend, Threads: env.Threads, Size: ec.ImageSize,
			Note: func(msg string) {
				if env.Rank() == 0 {
					env.Log.Info("embed: " + msg)
				} else {
					env.Log.Debug("embed: " + msg)
				}
			}})
		if err != nil {
			return nil, err
		}
		provider = sess.Provider
		p := &embedPipeline{env: env, ec: ec, name: name, in: in, sess: sess, partDir: partDir, total: in.n}
		tp := time.Now()
		err = p.run(ctx, mine)
		pipeSec, pipeImages = time.Since(tp).Seconds(), p.images
		sess.Close()
		if err != nil {
			return nil, err
		}
	}
	if err := comm.Barrier(ctx); err != nil {
		return nil, err
	}

	// Assemble the final shards from the chunks, in global order.
	infos := make([]embedChunkInfo, in.numChunks())
	var rows int64
	dim := 0
	var failed []embedFailure
	for c := range infos {
		b, err := os.ReadFile(embedChunkPath(partDir, c, "json"))
		if err != nil {
			return nil, fmt.Errorf("chunk %d missing after all ranks finished: %w", c, err)
		}
		if err := json.Unmarshal(b, &infos[c]); err != nil {
			return nil, fmt.Errorf("%s: %w", embedChunkPath(partDir, c, "json"), err)
		}
		if infos[c].Rows > 0 {
			if dim != 0 && infos[c].Dim != dim {
				return nil, fmt.Errorf("chunk %d has dim %d, others %d", c, infos[c].Dim, dim)
			}
			dim = infos[c].Dim
		}
		rows += int64(infos[c].Rows)
		failed = append(failed, infos[c].Failed...)
	}
	if rows == 0 {
		return nil, fmt.Errorf("no image of %s could be embedded (%d failed)", ec.Input, len(failed))
	}
	if env.Rank() == 0 { // drop outputs of an earlier run before writing
		os.Remove(donePath)
		for _, d := range []string{"images", "labels", "paths"} {
			if err := os.RemoveAll(filepath.Join(out, d)); err != nil {
				return nil, err
			}
		}
	}
	if err := comm.Barrier(ctx); err != nil {
		return nil, err
	}
	dt := dataset.Float32
	if ec.DType == "float16" {
		dt = dataset.Float16
	}
	shards := int((rows + int64(ec.ShardSize) - 1) / int64(ec.ShardSize))
	for j := env.Rank(); j < shards; j += env.Size() {
		lo := int64(j) * int64(ec.ShardSize)
		hi := min(rows, lo+int64(ec.ShardSize))
		if err := embedWriteShard(out, partDir, infos, j, lo, hi, dim, dt); err != nil {
			return nil, err
		}
	}
	if err := comm.Barrier(ctx); err != nil {
		return nil, err
	}
	rep := &embedReport{Images: rows, Failed: len(failed), Dim: dim, Shards: shards, Provider: provider,
		PipelineSeconds: pipeSec, PipelineImages: pipeImages}
	if s := time.Since(t0).Seconds(); s > 0 {
		rep.Rate = float64(rows) / s
	}
	if env.Rank() == 0 {
		if _, err := dataset.Open(name, out, dataset.Options{Layout: dataset.Embeddings}); err != nil {
			return nil, fmt.Errorf("checking the written set: %w", err)
		}
		if len(failed) > 0 {
			list := make([]string, 0, 5)
			for _, f := range failed[:min(5, len(failed))] {
				list = append(list, f.Path+" ("+f.Error+")")
			}
			env.Log.Warn("embed: skipped corrupt or unreadable images", "set", name, "count", len(failed),
				"first", strings.Join(list, "; "), "all", filepath.Join(out, "failed.json"))
		}
		fb, _ := json.MarshalIndent(failed, "", " ")
		if failed == nil {
			fb = []byte("[]")
		}
		if err := dataset.WriteFileAtomic(filepath.Join(out, "failed.json"), append(fb, '\n')); err != nil {
			return nil, err
		}
		db, _ := json.MarshalIndent(struct {
			Hash string `json:"hash"`
			*embedReport
		}{hash, rep}, "", " ")
		if err := dataset.WriteFileAtomic(donePath, append(db, '\n')); err != nil {
			return nil, err
		}
		os.RemoveAll(filepath.Join(out, ".parts"))
		env.Log.Info("embed: done", "set", name, "images", rows, "failed", len(failed), "shards", shards, "dim", dim,
			"dtype", ec.DType, "images_per_s", fmt.Sprintf("%.1f", rep.Rate), "jpeg", clip.JPEGDecoder())
	}
	if err := comm.Barrier(ctx); err != nil {
		return nil, err
	}
	return rep, nil
}

func embedChunkPath(dir string, c int, ext string) string {
	if ext == "json" {
		return filepath.Join(dir, fmt.Sprintf("chunk_%06d.json", c))
	}
	return filepath.Join(dir, fmt.Sprintf("chunk_%06d.%s.npy", c, ext))
}

// embedUpToDate reads done.json and says whether it holds hash.
func embedUpToDate(path, hash string) (*embedReport, bool) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, false
	}
	var d struct {
		Hash string `json:"hash"`
		embedReport
	}
	if json.Unmarshal(b, &d) != nil || d.Hash != hash {
		return nil, false
	}
	return &d.embedReport, true
}

// embedHash fingerprints the section (less the knobs that do not change the
// output), the model file and the input listing.
func embedHash(ec *configs.Embed, in *embedInput) (string, error) {
	sec := *ec
	sec.Workers, sec.FailCorrupt = 0, false
	st, err := os.Stat(ec.Model)
	if err != nil {
		return "", fmt.Errorf("model: %w", err)
	}
	h := sha256.New()
	b, _ := json.Marshal(sec)
	h.Write(b)
	fmt.Fprintf(h, "\nmodel %d %d\n", st.Size(), st.ModTime().UnixNano())
	for _, s := range in.sig {
		h.Write([]byte(s))
		h.Write([]byte{'\n'})
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// ---------------------------------------------------------------------------
// Listing the input
// ---------------------------------------------------------------------------

func embedList(ec *configs.Embed) (*embedInput, error) {
	st, err := os.Stat(ec.Input)
	if err != nil {
		return nil, fmt.Errorf("input: %w", err)
	}
	in := &embedInput{root: ec.Input}
	if ec.InputLayout == "webdataset" {
		if !st.IsDir() {
			in.tars = []string{ec.Input}
		} else {
			err := filepath.WalkDir(ec.Input, func(p string, d os.DirEntry, err error) error {
				if err == nil && !d.IsDir() && strings.HasSuffix(p, ".tar") {
					in.tars = append(in.tars, p)
				}
				return err
			})
			if err != nil {
				return nil, err
			}
			sort.Strings(in.tars)
		}
		if len(in.tars) == 0 {
			return nil, fmt.Errorf("no .tar files in %s", ec.Input)
		}
		for _, t := range in.tars {
			s, err := os.Stat(t)
			if err != nil {
				return nil, err
			}
			in.sig = append(in.sig, fmt.Sprintf("%s %d %d", t, s.Size(), s.ModTime().UnixNano()))
		}
		return in, nil
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("input %s: an imagefolder input must be a folder of class folders", ec.Input)
	}
	items, err := embedListFolder(ec.Input, &in.sig)
	if err != nil {
		return nil, err
	}
	if len(items) == 0 {
		return nil, fmt.Errorf("no image files in the class folders of %s", ec.Input)
	}
	in.n = len(items)
	// chunks: whole batches, about embedTargetChunks of them
	per := (len(items) + embedTargetChunks - 1) / embedTargetChunks
	per = max(ec.BatchSize, (per+ec.BatchSize-1)/ec.BatchSize*ec.BatchSize)
	for lo := 0; lo < len(items); lo += per {
		in.chunks = append(in.chunks, items[lo:min(len(items), lo+per)])
	}
	return in, nil
}

// embedListFolder lists an ImageFolder as torchvision does: the class
// folders of root sorted by name are labels 0, 1, ...; inside each, every
// folder (links followed) in sorted path order, its image files sorted by
// name.
func embedListFolder(root string, sig *[]string) ([]embedItem, error) {
	ents, err := os.ReadDir(root)
	if err != nil {
		return nil, err
	}
	var classes []string
	for _, e := range ents {
		if st, err := os.Stat(filepath.Join(root, e.Name())); err == nil && st.IsDir() {
			classes = append(classes, e.Name())
		}
	}
	sort.Strings(classes)
	if len(classes) == 0 {
		return nil, fmt.Errorf("no class folders in %s", root)
	}
	var items []embedItem
	for label, cls := range classes {
		dirs := map[string][]string{}
		var walk func(dir string, depth int) error
		walk = func(dir string, depth int) error {
			if depth > 64 {
				return fmt.Errorf("%s: folders nested too deep (a link loop?)", dir)
			}
			ents, err := os.ReadDir(dir)
			if err != nil {
				return err
			}
			dirs[dir] = nil
			for _, e := range ents {
				p := filepath.Join(dir, e.Name())
				st, err := os.Stat(p)
				if err != nil {
					continue // a dangling link
				}
				if st.IsDir() {
					if err := walk(p, depth+1); err != nil {
						return err
					}
				} else if embedImageExts[strings.ToLower(filepath.Ext(e.Name()))] {
					dirs[dir] = append(dirs[dir], e.Name())
					*sig = append(*sig, fmt.Sprintf("%s %d %d", p, st.Size(), st.ModTime().UnixNano()))
				}
			}
			return nil
		}
		if err := walk(filepath.Join(root, cls), 0); err != nil {
			return nil, err
		}
		order := make([]string, 0, len(dirs))
		for d := range dirs {
			order = append(order, d)
		}
		sort.Strings(order)
		for _, d := range order {
			files := dirs[d]
			sort.Strings(files)
			for _, f := range files {
				p := filepath.Join(d, f)
				rel, _ := filepath.Rel(root, p)
				items = append(items, embedItem{rel: filepath.ToSlash(rel), label: int64(label), file: p})
			}
		}
	}
	sort.Strings(*sig)
	return items, nil
}

// embedTarSamples streams a webdataset tar's samples (members grouped by
// key: the name up to the first dot of its base name) to fn, in tar order.
func embedTarSamples(ctx context.Context, path, root string, fn func(embedItem) error) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	rel, err := filepath.Rel(root, path)
	if err != nil || strings.HasPrefix(rel, "..") {
		rel = filepath.Base(path)
	}
	rel = filepath.ToSlash(rel)
	tr := tar.NewReader(f)
	var key string
	members := map[string][]byte{}
	flush := func() error {
		if key == "" {
			return nil
		}
		it := embedItem{label: -1}
		for _, ext := range embedTarImageExts {
			if b, ok := members[ext]; ok {
				it.data, it.rel = b, rel+"/"+key+"."+ext
				break
			}
		}
		if it.data == nil { // a sample without an image is not an image
			return nil
		}
		if c, ok := members["cls"]; ok {
			v, err := strconv.ParseInt(strings.TrimSpace(string(c)), 10, 64)
			if err != nil {
				return fmt.Errorf("%s: %s.cls is not an integer: %q", path, key, c)
			}
			it.label = v
		}
		return fn(it)
	}
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		if h.Typeflag != tar.TypeReg {
			continue
		}
		dir, base := filepath.Split(h.Name)
		k, ext, ok := strings.Cut(base, ".")
		if !ok {
			continue
		}
		k = dir + k
		if k != key {
			if err := flush(); err != nil {
				return err
			}
			key = k
			clear(members)
		}
		ext = strings.ToLower(ext)
		if ext == "cls" || embedTarIsImage(ext) {
			b, err := io.ReadAll(tr)
			if err != nil {
				return fmt.Errorf("%s: %s: %w", path, h.Name, err)
			}
			members[ext] = b
		}
	}
	return flush()
}

func embedTarIsImage(ext string) bool {
	for _, e := range embedTarImageExts {
		if e == ext {
			return true
		}
	}
	return false
}

// ---------------------------------------------------------------------------
// The pipeline: decode workers overlapped with inference
// ---------------------------------------------------------------------------

type embedPipeline struct {
	env     *Env
	ec      *configs.Embed
	name    string
	in      *embedInput
	sess    *ort.Session
	partDir string
	total   int // ImageFolder images (0 for webdataset)
	images  int // images read so far
}

// embedBatch is one batch buffer: n images of chunk, or (n = 0, end) the
// marker that closes the chunk.
type embedBatch struct {
	chunk int
	end   bool
	items []embedItem
	x     []float32 // batch_size x 3 x S x S
	errs  []error
	wg    sync.WaitGroup
}

type embedJob struct {
	b *embedBatch
	i int
}

// run embeds the chunks of this rank.
func (p *embedPipeline) run(ctx context.Context, chunks []int) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	S, B := p.sess.Size, p.ec.BatchSize
	workers := p.ec.Workers
	if workers <= 0 {
		workers = max(1, p.env.Threads)
	}
	free := make(chan *embedBatch, embedBuffers)
	for i := 0; i < embedBuffers; i++ {
		free <- &embedBatch{x: make([]float32, B*3*S*S), errs: make([]error, B)}
	}
	jobs := make(chan embedJob, B)
	ready := make(chan *embedBatch, embedBuffers+1)

	// workers: read, decode, preprocess
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			pp := clip.NewPreprocessor(S)
			for j := range jobs {
				j.b.errs[j.i] = embedOne(pp, j.b.items[j.i], j.b.x[j.i*3*S*S:(j.i+1)*3*S*S])
				j.b.wg.Done()
			}
		}()
	}
	// dispatcher: chunks -> batches -> jobs, in order
	go func() {
		defer close(ready)
		defer close(jobs)
		send := func(b *embedBatch) bool {
			b.wg.Add(len(b.items))
			select {
			case ready <- b:
			case <-ctx.Done():
				b.wg.Add(-len(b.items))
				return false
			}
			for i := range b.items {
				select {
				case jobs <- embedJob{b, i}:
				case <-ctx.Done():
					b.wg.Add(-(len(b.items) - i))
					return false
				}
			}
			return true
		}
		get := func() *embedBatch {
			select {
			case b := <-free:
				b.items, b.end = b.items[:0], false
				return b
			case <-ctx.Done():
				return nil
			}
		}
		for _, c := range chunks {
			var b *embedBatch
			add := func(it embedItem) error {
				if b == nil {
					if b = get(); b == nil {
						return context.Cause(ctx)
					}
					b.chunk = c
				}
				b.items = append(b.items, it)
				if len(b.items) == B {
					if !send(b) {
						return context.Cause(ctx)
					}
					b = nil
				}
				return nil
			}
			var err error
			if p.in.tars != nil {
				err = embedTarSamples(ctx, p.in.tars[c], p.in.root, add)
			} else {
				for _, it := range p.in.chunks[c] {
					if err = add(it); err != nil {
						break
					}
				}
			}
			if err != nil {
				cancel(err)
				return
			}
			if b != nil && !send(b) {
				return
			}
			if b = get(); b == nil {
				return
			}
			b.chunk, b.end = c, true
			if !send(b) {
				return
			}
		}
	}()

	// inference, in batch order, on this goroutine
	err := p.consume(ctx, ready, free)
	if err != nil {
		cancel(err)
	}
	for range ready { // let the dispatcher finish
	}
	wg.Wait()
	if err == nil && ctx.Err() != nil { // the dispatcher failed, or the run was cancelled
		err = context.Cause(ctx)
	}
	return err
}

// embedOne reads, decodes and preprocesses one image into dst.
func embedOne(pp *clip.Preprocessor, it embedItem, dst []float32) error {
	data := it.data
	if data == nil {
		var err error
		if data, err = os.ReadFile(it.file); err != nil {
			return err
		}
	}
	pic, err := clip.Decode(data)
	if err != nil {
		return err
	}
	return pp.Run(pic, dst)
}

// consume runs the batches through the model and writes each chunk when
// its end marker arrives.
func (p *embedPipeline) consume(ctx context.Context, ready <-chan *embedBatch, free chan<- *embedBatch) error {
	S, D := p.sess.Size, p.sess.Dim
	img := 3 * S * S
	var emb []float32
	var labels []int64
	var paths []string
	var failed []embedFailure
	out := make([]float32, p.ec.BatchSize*D)
	done, last, t0 := 0, time.Now(), time.Now()
	for b := range ready {
		b.wg.Wait()
		if err := ctx.Err(); err != nil {
			return context.Cause(ctx)
		}
		if b.end {
			if err := p.writeChunk(b.chunk, D, emb, labels, paths, failed); err != nil {
				return err
			}
			emb, labels, paths, failed = emb[:0], labels[:0], paths[:0], nil
			free <- b
			continue
		}
		n := 0 // compact the good images to the front
		for i, it := range b.items {
			if b.errs[i] != nil {
				if p.ec.FailCorrupt {
					return fmt.Errorf("%s: %w (embed.%s.fail_on_corrupt = true)", it.where(), b.errs[i], p.name)
				}
				p.env.Log.Warn("embed: corrupt image skipped", "set", p.name, "path", it.where(), "err", b.errs[i])
				failed = append(failed, embedFailure{Path: it.rel, Error: b.errs[i].Error()})
				continue
			}
			if n != i {
				copy(b.x[n*img:(n+1)*img], b.x[i*img:(i+1)*img])
			}
			labels = append(labels, it.label)
			paths = append(paths, it.rel)
			n++
		}
		y, err := p.sess.Run(b.x, n, out)
		if err != nil {
			return err
		}
		for i := 0; i < n; i++ {
			embedNormalize(y[i*D : (i+1)*D])
		}
		emb = append(emb, y...)
		done += len(b.items)
		p.images = done
		free <- b
		if p.env.Rank() == 0 && time.Since(last) >= embedProgressEvery {
			last = time.Now()
			args := []any{"set", p.name, "images", done, "images_per_s", fmt.Sprintf("%.1f", float64(done)/time.Since(t0).Seconds())}
			if p.total > 0 {
				args = append(args, "of_about", p.total/p.env.Size())
			}
			p.env.Log.Info("embed: progress (rank 0)", args...)
		}
	}
	return context.Cause(ctx)
}

// embedNormalize scales v to unit L2 norm (a zero vector stays zero).
func embedNormalize(v []float32) {
	var s float64
	for _, x := range v {
		s += float64(x) * float64(x)
	}
	if s == 0 {
		return
	}
	inv := 1 / math.Sqrt(s)
	for i := range v {
		v[i] = float32(float64(v[i]) * inv)
	}
}

func (p *embedPipeline) writeChunk(c, dim int, emb []float32, labels []int64, paths []string, failed []embedFailure) error {
	n := len(labels)
	if err := dataset.WriteFloat32(embedChunkPath(p.partDir, c, "emb"), emb, n, dim); err != nil {
		return err
	}
	if err := dataset.WriteInt64(embedChunkPath(p.partDir, c, "labels"), labels); err != nil {
		return err
	}
	if err := dataset.WriteStrings(embedChunkPath(p.partDir, c, "paths"), paths); err != nil {
		return err
	}
	b, err := json.Marshal(embedChunkInfo{Rows: n, Dim: dim, Failed: failed})
	if err != nil {
		return err
	}
	if err := dataset.WriteFileAtomic(embedChunkPath(p.partDir, c, "json"), b); err != nil {
		return err
	}
	if embedTestHook != nil {
		return embedTestHook(c)
	}
	return nil
}

// embedWriteShard writes shard j = global rows [lo, hi) from the chunks.
func embedWriteShard(out, partDir string, infos []embedChunkInfo, j int, lo, hi int64, dim int, dt dataset.DType) error {
	mw, err := dataset.CreateMatrix(filepath.Join(out, "images", fmt.Sprintf("img_emb_%d.npy", j)), dt, dim)
	if err != nil {
		return err
	}
	var labels []int64
	var paths []string
	var off int64
	for c, info := range infos {
		clo, chi := off, off+int64(info.Rows)
		off = chi
		a, b := max(lo, clo), min(hi, chi)
		if a >= b {
			continue
		}
		x, shape, err := dataset.ReadFloat32(embedChunkPath(partDir, c, "emb"))
		if err == nil && (len(shape) != 2 || shape[0] != info.Rows || shape[1] != dim) {
			err = fmt.Errorf("%s: shape %v, want [%d %d]", embedChunkPath(partDir, c, "emb"), shape, info.Rows, dim)
		}
		var l []int64
		var p []string
		if err == nil {
			l, err = dataset.ReadInt64(embedChunkPath(partDir, c, "labels"))
		}
		if err == nil {
			p, err = dataset.ReadStrings(embedChunkPath(partDir, c, "paths"))
		}
		if err != nil {
			mw.Abort()
			return err
		}
		r0, r1 := int(a-clo), int(b-clo)
		if err := mw.Write(x[r0*dim : r1*dim]); err != nil {
			mw.Abort()
			return err
		}
		labels = append(labels, l[r0:r1]...)
		paths = append(paths, p[r0:r1]...)
	}
	if err := dataset.WriteInt64(filepath.Join(out, "labels", fmt.Sprintf("labels_%d.npy", j)), labels); err != nil {
		mw.Abort()
		return err
	}
	if err := dataset.WriteStrings(filepath.Join(out, "paths", fmt.Sprintf("paths_%d.npy", j)), paths); err != nil {
		mw.Abort()
		return err
	}
	return mw.Close() // the embeddings go last: a shard whose img_emb file exists is whole
}
