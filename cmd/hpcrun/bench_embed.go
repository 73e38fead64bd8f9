package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"image"
	"image/color"
	"image/jpeg"
	"log/slog"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"time"

	"hpcrun/clip"
	"hpcrun/clip/ort"
	"hpcrun/configs"
	"hpcrun/stages"
)

// Bench ops embed and ort: the embed stage's images/s beside pure ONNX
// Runtime inference on the same model, batch and threads, in the same run.
//
//   - ort: batches of preprocessed tensors (already in memory) through the
//     session, nothing else: the ceiling (op embed times it before and after
//     the stage and keeps the faster);
//   - embed: the embed stage on one rank over an ImageFolder of
//     ImageNet-sized JPEGs (500x375 and 375x500, quality 90): read, decode,
//     preprocess in the worker pool while the previous batch runs, then
//     normalise and write; timed from the session being ready to the last
//     chunk written (the note gives the whole stage's seconds too).
//
// --nq is the number of images (default 256), --dim the embedding size;
// HPCRUN_BENCH_EMBED_BATCH sets the batch (default 32),
// HPCRUN_BENCH_EMBED_MODEL an ONNX image encoder to use (default: a
// ViT-B/32-shaped encoder with seeded weights, 4.4 GMAC per image, written
// to a temp folder), HPCRUN_BENCH_EMBED_LAYERS its depth (default 12),
// HPCRUN_BENCH_EMBED_BACKEND the runtime.backend (default auto).
func init() {
	benchOps["embed"] = benchEmbed
	benchOps["ort"] = benchORT
}

type embedBench struct {
	dir, model   string
	images       int
	batch, dim   int
	threads      int
	backend      string
	flops        float64 // per image, 0 when unknown
	size         int
	modelComment string
	host         string
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

func newEmbedBench(o *benchOpts) (*embedBench, error) {
	b := &embedBench{images: 256, batch: envInt("HPCRUN_BENCH_EMBED_BATCH", 32), dim: o.dim, threads: o.threads, size: 224,
		backend: "auto", host: o.host}
	if o.set["nq"] {
		b.images = o.nq
	}
	if v := os.Getenv("HPCRUN_BENCH_EMBED_BACKEND"); v != "" {
		b.backend = v
	}
	if b.threads <= 0 {
		b.threads = runtime.NumCPU()
	}
	dir, err := os.MkdirTemp("", "hpcrun-bench-embed-")
	if err != nil {
		return nil, err
	}
	b.dir = dir
	if m := os.Getenv("HPCRUN_BENCH_EMBED_MODEL"); m != "" {
		b.model, b.modelComment = m, filepath.Base(m)
	} else {
		v := clip.ViTB32
		v.Dim, v.Layers, v.Seed = b.dim, envInt("HPCRUN_BENCH_EMBED_LAYERS", v.Layers), 1
		data, err := clip.ViTEncoder(v)
		if err != nil {
			return nil, err
		}
		b.model = filepath.Join(dir, "vit.onnx")
		if err := os.WriteFile(b.model, data, 0o644); err != nil {
			return nil, err
		}
		b.flops = v.FLOPs()
		b.modelComment = fmt.Sprintf("ViT-B/32-shaped, %d layers", v.Layers)
	}
	return b, nil
}

func (b *embedBench) close() { os.RemoveAll(b.dir) }

// benchORT times pure inference.
func benchORT(ctx context.Context, o *benchOpts) ([]Measurement, error) {
	b, err := newEmbedBench(o)
	if err != nil {
		return nil, err
	}
	defer b.close()
	m, err := b.ort()
	if err != nil {
		return nil, err
	}
	return []Measurement{m}, nil
}

func (b *embedBench) ort() (Measurement, error) {
	sess, err := ort.NewSession(b.model, ort.SessionOptions{Backend: b.backend, Threads: b.threads, Size: b.size})
	if err != nil {
		return Measurement{}, err
	}
	defer sess.Close()
	b.size = sess.Size
	rng := rand.New(rand.NewPCG(2, 3))
	x := make([]float32, b.batch*3*sess.Size*sess.Size)
	for i := range x {
		x[i] = float32(rng.NormFloat64())
	}
	out := make([]float32, b.batch*sess.Dim)
	if _, err := sess.Run(x, b.batch, out); err != nil { // warm-up
		return Measurement{}, err
	}
	t0 := time.Now()
	for done := 0; done < b.images; done += b.batch {
		if _, err := sess.Run(x, min(b.batch, b.images-done), out); err != nil {
			return Measurement{}, err
		}
	}
	sec := time.Since(t0).Seconds()
	m := Measurement{Op: "ort", Impl: "onnxruntime", Host: b.host, DType: "float32", NQ: b.images, Dim: sess.Dim, Seconds: sec,
		Note: fmt.Sprintf("%.1f images/s; batch %d, %d threads, %s, %s; ONNX Runtime %s", float64(b.images)/sec, b.batch, b.threads, sess.Provider, b.modelComment, ort.Version())}
	if b.flops > 0 {
		m.GFLOPS = b.flops * float64(b.images) / sec / 1e9
	}
	return m, nil
}

// benchEmbed times the embed stage and, in the same run, pure inference.
func benchEmbed(ctx context.Context, o *benchOpts) ([]Measurement, error) {
	b, err := newEmbedBench(o)
	if err != nil {
		return nil, err
	}
	defer b.close()
	if err := writeBenchImages(filepath.Join(b.dir, "images"), b.images); err != nil {
		return nil, err
	}
	ref, err := b.ort()
	if err != nil {
		return nil, err
	}
	doc := fmt.Sprintf(`
[job]
name = "bench-embed"
workdir = %q
[runtime]
backend = %q
ranks = 1
threads = %d
[embed.bench]
model = %q
input = %q
image_size = %d
batch_size = %d
`, filepath.Join(b.dir, "work"), b.backend, b.threads, b.model, filepath.Join(b.dir, "images"), b.size, b.batch)
	cfg, err := configs.Parse([]byte(doc), "", nil)
	if err != nil {
		return nil, err
	}
	t0 := time.Now()
	if err := stages.RunInProcess(ctx, cfg, 1, []string{"embed"}, slog.New(slog.DiscardHandler)); err != nil {
		return nil, err
	}
	total := time.Since(t0).Seconds()
	// inference again after the stage; the faster of the two is the reference
	if again, err := b.ort(); err != nil {
		return nil, err
	} else if again.Seconds < ref.Seconds {
		ref = again
	}
	var rep stages.Report
	data, err := os.ReadFile(filepath.Join(cfg.Job.Workdir, "report.json"))
	if err == nil {
		err = json.Unmarshal(data, &rep)
	}
	if err != nil {
		return nil, fmt.Errorf("reading the stage's report: %w", err)
	}
	var set struct {
		Images          int64   `json:"images"`
		Provider        string  `json:"provider"`
		PipelineSeconds float64 `json:"pipeline_seconds"`
		PipelineImages  int     `json:"pipeline_images"`
	}
	raw, _ := json.Marshal(rep.Stages["embed"].Extra["bench"])
	if err := json.Unmarshal(raw, &set); err != nil || set.PipelineSeconds <= 0 {
		return nil, fmt.Errorf("embed stage report without pipeline time: %s", raw)
	}
	rate := float64(set.PipelineImages) / set.PipelineSeconds
	refRate := float64(ref.NQ) / ref.Seconds
	m := Measurement{Op: "embed", Impl: "hpcrun", Host: b.host, DType: "float32", NQ: set.PipelineImages, Dim: ref.Dim, Seconds: set.PipelineSeconds,
		Note: fmt.Sprintf("%.1f images/s = %.0f%% of ort; decode (%s) + preprocess of 500x375 JPEGs overlapped with inference, batch %d, %d threads, %s; whole stage %.2f s",
			rate, 100*rate/refRate, clip.JPEGDecoder(), b.batch, b.threads, set.Provider, total)}
	if b.flops > 0 {
		m.GFLOPS = b.flops * rate / 1e9
	}
	return []Measurement{m, ref}, nil
}

// writeBenchImages writes n ImageNet-sized photo-like JPEGs (500x375 or
// 375x500, quality 90) into 8 class folders; 16 distinct images, repeated.
func writeBenchImages(root string, n int) error {
	var distinct [][]byte
	for i := 0; i < 16; i++ {
		w, h := 500, 375
		if i%4 == 3 {
			w, h = h, w
		}
		rng := rand.New(rand.NewPCG(uint64(i), 77))
		img := image.NewRGBA(image.Rect(0, 0, w, h))
		fx, fy := 5+20*rng.Float64(), 5+20*rng.Float64()
		for y := 0; y < h; y++ {
			for x := 0; x < w; x++ {
				r := 128 + 90*math.Sin(float64(x)/fx)*math.Cos(float64(y)/fy) + 20*rng.NormFloat64()
				g := 100 + 100*float64(x)/float64(w) + 20*rng.NormFloat64()
				bl := 60 + 150*float64(y)/float64(h) + 20*rng.NormFloat64()
				img.SetRGBA(x, y, color.RGBA{clamp255(r), clamp255(g), clamp255(bl), 255})
			}
		}
		var buf bytes.Buffer
		if err := jpeg.Encode(&buf, img, &jpeg.Options{Quality: 90}); err != nil {
			return err
		}
		distinct = append(distinct, buf.Bytes())
	}
	for i := 0; i < n; i++ {
		dir := filepath.Join(root, fmt.Sprintf("class%02d", i%8))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("img_%06d.jpg", i)), distinct[i%len(distinct)], 0o644); err != nil {
			return err
		}
	}
	return nil
}

func clamp255(v float64) uint8 { return uint8(math.Max(0, math.Min(255, v))) }
