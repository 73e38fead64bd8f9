package configs

import (
	"fmt"
	"time"
)

// Default is the config every file starts from.
func Default() *Config {
	return &Config{
		Job: Job{Name: "hpcrun", Workdir: "runs/hpcrun", Seed: 333},
		Runtime: Runtime{
			Backend:      "auto",
			Ranks:        2,
			Timeout:      Duration{60 * time.Second},
			BlockRows:    16384,
			GPUPrecision: "float32",
			GPUFilter:    true,
		},
		Datasets: map[string]*Dataset{},
		Embed:    map[string]*Embed{},
	}
}

func defaultDataset() *Dataset {
	return &Dataset{Layout: "embeddings", IDColumn: "image_path"}
}

func defaultEmbed() *Embed {
	return &Embed{InputLayout: "imagefolder", ImageSize: 224, BatchSize: 64, DType: "float32", ShardSize: 100000}
}

func defaultKMeans() *KMeans {
	return &KMeans{K: 64, MaxIter: 50, ChangeLowerBound: 1e-7, InitDupThreshold: 0.9, Metric: "l2", CheckpointEveryIter: true}
}

func defaultDedup() *Dedup { return &Dedup{Eps: 0.124, Order: "file"} }

func defaultSims() *Sims { return &Sims{K: 100} }

func defaultPrune() *Prune { return &Prune{Candidates: 20000} }

func defaultSubsample() *Subsample {
	return &Subsample{Keep: "prune/combined/keep_ids.npy", NPerTar: 100000}
}

func defaultZeroshot() *Zeroshot { return &Zeroshot{} }

// Validate checks values and cross-references (a stage naming a dataset
// that no section defines or makes).
func (c *Config) Validate() error {
	bad := func(key, format string, a ...any) error {
		return &Error{Key: key, Msg: fmt.Sprintf(format, a...)}
	}
	if c.Job.Name == "" {
		return bad("job.name", "must not be empty")
	}
	if c.Job.Workdir == "" {
		return bad("job.workdir", "must not be empty")
	}
	switch c.Runtime.Backend {
	case "auto", "cpu", "cuda":
	default:
		return bad("runtime.backend", "must be auto, cpu or cuda, not %q", c.Runtime.Backend)
	}
	if c.Runtime.Ranks < 1 {
		return bad("runtime.ranks", "must be at least 1")
	}
	if c.Runtime.Timeout.Duration <= 0 {
		return bad("runtime.timeout", "must be positive")
	}
	if c.Runtime.Threads < 0 {
		return bad("runtime.threads", "must be >= 0")
	}
	switch c.Runtime.GPUPrecision {
	case "float32", "float16x2", "float16":
	default:
		return bad("runtime.gpu_precision", "must be float32, float16x2 or float16, not %q", c.Runtime.GPUPrecision)
	}
	if c.Runtime.BlockRows < 1 {
		return bad("runtime.block_rows", "must be at least 1")
	}
	for name, d := range c.Datasets {
		key := "datasets." + name
		if d.Path == "" {
			return bad(key+".path", "must not be empty")
		}
		switch d.Layout {
		case "clip-retrieval", "embeddings":
		default:
			return bad(key+".layout", "must be clip-retrieval or embeddings, not %q", d.Layout)
		}
		if d.Layout == "clip-retrieval" && d.IDColumn == "" {
			return bad(key+".id_column", "must not be empty")
		}
	}
	for name, e := range c.Embed {
		key := "embed." + name
		if _, dup := c.Datasets[name]; dup {
			return bad(key, "dataset %q is defined twice: [datasets.%s] and [embed.%s]", name, name, name)
		}
		if e.Model == "" {
			return bad(key+".model", "must not be empty")
		}
		if e.Input == "" {
			return bad(key+".input", "must not be empty")
		}
		switch e.InputLayout {
		case "imagefolder", "webdataset":
		default:
			return bad(key+".input_layout", "must be imagefolder or webdataset, not %q", e.InputLayout)
		}
		if e.ImageSize < 1 || e.BatchSize < 1 || e.ShardSize < 1 {
			return bad(key, "image_size, batch_size and shard_size must be positive")
		}
		if e.DType != "float32" && e.DType != "float16" {
			return bad(key+".dtype", "must be float32 or float16, not %q", e.DType)
		}
	}
	known := func(key, name string) error {
		if name == "" {
			return bad(key, "must name a dataset")
		}
		if c.Datasets[name] == nil && c.Embed[name] == nil {
			return bad(key, "unknown dataset %q (define [datasets.%s] or [embed.%s])", name, name, name)
		}
		return nil
	}
	if k := c.KMeans; k != nil {
		if err := known("kmeans.dataset", k.Dataset); err != nil {
			return err
		}
		if k.K < 1 {
			return bad("kmeans.k", "must be at least 1")
		}
		if k.MaxIter < 1 {
			return bad("kmeans.max_iter", "must be at least 1")
		}
		if k.ChangeLowerBound < 0 || k.ChangeLowerBound > 1 {
			return bad("kmeans.change_lower_bound", "must be in [0, 1]")
		}
		if k.InitDupThreshold <= -1 || k.InitDupThreshold > 1 {
			return bad("kmeans.init_dup_threshold", "must be in (-1, 1]")
		}
		if k.Metric != "l2" && k.Metric != "cosine" {
			return bad("kmeans.metric", "must be l2 or cosine, not %q", k.Metric)
		}
	}
	if d := c.Dedup; d != nil {
		if c.KMeans == nil {
			return bad("dedup", "needs a [kmeans] section (dedup works per cluster)")
		}
		if d.Eps < 0 || d.Eps > 2 {
			return bad("dedup.eps", "must be in [0, 2]")
		}
		switch d.Order {
		case "file", "hard", "easy", "random":
		default:
			return bad("dedup.order", "must be file, hard, easy or random, not %q", d.Order)
		}
	}
	if s := c.Sims; s != nil {
		for _, n := range s.Base {
			if err := known("sims.base", n); err != nil {
				return err
			}
		}
		for _, n := range s.Eval {
			if err := known("sims.eval", n); err != nil {
				return err
			}
		}
		if s.K < 1 {
			return bad("sims.k", "must be at least 1")
		}
	}
	if p := c.Prune; p != nil {
		if err := known("prune.base", p.Base); err != nil {
			return err
		}
		if err := known("prune.reference", p.Reference); err != nil {
			return err
		}
		for _, n := range p.Eval {
			if err := known("prune.eval", n); err != nil {
				return err
			}
		}
		for _, n := range append(append([]int{}, p.RandomSizes...), p.NearFarSizes...) {
			if n < 0 {
				return bad("prune", "subset sizes must be >= 0")
			}
		}
		if p.Candidates < 1 {
			return bad("prune.candidates", "must be at least 1")
		}
	}
	if s := c.Subsample; s != nil {
		if s.Tars == "" {
			return bad("subsample.tars", "must not be empty")
		}
		if s.NPerTar < 1 {
			return bad("subsample.n_per_tar", "must be at least 1")
		}
	}
	if z := c.Zeroshot; z != nil {
		for _, n := range z.Eval {
			if err := known("zeroshot.eval", n); err != nil {
				return err
			}
		}
		if z.ClassMatrix == "" {
			return bad("zeroshot.class_matrix", "must not be empty")
		}
	}
	return nil
}
