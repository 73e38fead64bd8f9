// Package configs turns an experiment's TOML file into validated, typed
// structs: strict (an unknown key or a wrong type is an error naming the key
// and its line), defaults filled, `--set key=value` overrides applied, and
// relative paths resolved against the config file's folder. It imports
// nothing of hpcrun.
package configs

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
)

// Config is one experiment. A stage section that is nil was absent from the
// file, and that stage does not run.
type Config struct {
	Job      Job                 `toml:"job"`
	Runtime  Runtime             `toml:"runtime"`
	Datasets map[string]*Dataset `toml:"datasets,omitempty"`
	Embed    map[string]*Embed   `toml:"embed,omitempty"`

	KMeans    *KMeans    `toml:"kmeans,omitempty"`
	Dedup     *Dedup     `toml:"dedup,omitempty"`
	Sims      *Sims      `toml:"sims,omitempty"`
	Prune     *Prune     `toml:"prune,omitempty"`
	Subsample *Subsample `toml:"subsample,omitempty"`
	Zeroshot  *Zeroshot  `toml:"zeroshot,omitempty"`
	Slurm     *Slurm     `toml:"slurm,omitempty"`

	// File is the absolute path of the config file ("" when built in code).
	File string `toml:"-"`
}

// Job names the experiment and where its outputs go.
type Job struct {
	Name    string `toml:"name"`
	Workdir string `toml:"workdir"` // every output goes under here
	Seed    int64  `toml:"seed"`
}

// Runtime says how ranks run and talk.
type Runtime struct {
	Backend string   `toml:"backend"`  // auto | cpu | cuda
	NatsURL string   `toml:"nats_url"` // "" = rank 0 embeds a NATS server
	Ranks   int      `toml:"ranks"`    // local ranks when not launched by Slurm
	Timeout Duration `toml:"timeout"`  // a collective that waits longer fails
	Threads int      `toml:"threads"`  // compute threads per rank; 0 = all cores (or SLURM_CPUS_PER_TASK)
	// BlockRows is how many embedding rows a reader holds at once.
	BlockRows int `toml:"block_rows"`
	// GPUPrecision is what float32 embeddings become on a GPU: "float32"
	// (exact, as the CPU backend; FFMA kernels when an operand is float32),
	// "float16x2" (split into two float16 halves: tensor cores, float32
	// tolerances, 2-3x the tensor work) or "float16" (rounded, as the
	// paper's PyTorch code; tensor cores).
	GPUPrecision string `toml:"gpu_precision"`
	// GPUFilter turns on the GPU's exact filter for the ops on float16
	// embeddings (k-means assignment, top-k, per-base-point max, dedup) with
	// gpu_precision "float32": tensor cores with error-bounded candidates
	// recomputed by the FMA chain, so the CPU backend's results bit for
	// bit. On by default since an H200 run checked it
	// (docs/gpu/2026-11-27-h200); false runs those ops on the FFMA kernels.
	GPUFilter bool `toml:"gpu_filter"`
}

// Dataset is a set of embeddings on disk.
type Dataset struct {
	Path     string `toml:"path"`
	Layout   string `toml:"layout"`    // clip-retrieval | embeddings
	IDColumn string `toml:"id_column"` // clip-retrieval: integer (or digit-string) id column of metadata_N.parquet
	// Normalize L2-normalises rows whose norm is off by more than 1e-2
	// instead of failing.
	Normalize bool `toml:"normalize"`
}

// Embed makes dataset <name> from images with an ONNX image encoder.
type Embed struct {
	Model       string `toml:"model"`
	Input       string `toml:"input"`
	InputLayout string `toml:"input_layout"` // imagefolder | webdataset
	ImageSize   int    `toml:"image_size"`
	BatchSize   int    `toml:"batch_size"`
	DType       string `toml:"dtype"`      // float32 | float16 on disk
	ShardSize   int    `toml:"shard_size"` // rows per output shard
	Workers     int    `toml:"workers"`    // decode workers; 0 = cores
	FailCorrupt bool   `toml:"fail_on_corrupt"`
}

// KMeans clusters one dataset.
type KMeans struct {
	Dataset             string  `toml:"dataset"`
	K                   int     `toml:"k"`
	MaxIter             int     `toml:"max_iter"`
	ChangeLowerBound    float64 `toml:"change_lower_bound"`
	InitDupThreshold    float64 `toml:"init_dup_threshold"`
	Metric              string  `toml:"metric"` // l2 | cosine
	CheckpointEveryIter bool    `toml:"checkpoint"`
}

// Dedup removes near-duplicates inside each k-means cluster.
type Dedup struct {
	Eps   float64 `toml:"eps"`
	Order string  `toml:"order"` // file | hard | easy | random
}

// Sims finds, for each eval image, its most (or least) similar base points.
type Sims struct {
	Base  []string `toml:"base"`
	Eval  []string `toml:"eval"`
	K     int      `toml:"k"`
	Worst bool     `toml:"worst"`
}

// Prune removes base points closer to an eval image than that image's
// nearest reference neighbour.
type Prune struct {
	Base         string   `toml:"base"`
	Reference    string   `toml:"reference"`
	Eval         []string `toml:"eval"`
	RandomSizes  []int    `toml:"random_sizes"`
	NearFarSizes []int    `toml:"near_far_sizes"`
	Candidates   int      `toml:"candidates"` // the paper's approximate rule: top-candidates then threshold
}

// Subsample writes the kept samples of webdataset tars into new tars.
type Subsample struct {
	Tars     string `toml:"tars"`
	Keep     string `toml:"keep"` // relative to workdir
	NPerTar  int    `toml:"n_per_tar"`
	WriteCls bool   `toml:"write_cls"`
}

// Zeroshot scores image embeddings against a class-embedding matrix.
type Zeroshot struct {
	Eval        []string          `toml:"eval"`
	ClassMatrix string            `toml:"class_matrix"`
	Masks       map[string]string `toml:"masks,omitempty"` // eval set -> class mask (.npy int64 class indices, or imagenet-r | imagenet-a | objectnet)
}

// Slurm holds optional sbatch settings.
type Slurm struct {
	Partition     string   `toml:"partition"`
	Account       string   `toml:"account"`
	QOS           string   `toml:"qos"`
	Constraint    string   `toml:"constraint"`
	Time          string   `toml:"time"`
	Nodes         int      `toml:"nodes"`
	NTasksPerNode int      `toml:"ntasks_per_node"`
	GPUsPerNode   int      `toml:"gpus_per_node"`
	CPUsPerTask   int      `toml:"cpus_per_task"`
	Template      string   `toml:"template"` // a text/template file replacing the built-in script
	Extra         []string `toml:"extra"`    // extra #SBATCH lines
}

// Duration is a time.Duration written as "60s" in TOML.
type Duration struct{ time.Duration }

// UnmarshalText parses "60s", "2m30s".
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("bad duration %q (want e.g. \"60s\")", string(b))
	}
	d.Duration = v
	return nil
}

// MarshalText prints the duration as Go does ("1m0s").
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.Duration.String()), nil }

// Stages in pipeline order.
var Stages = []string{"embed", "kmeans", "dedup", "sims", "prune", "subsample", "zeroshot"}

// Has reports whether the stage's section is present (so the stage runs).
func (c *Config) Has(stage string) bool {
	switch stage {
	case "embed":
		return len(c.Embed) > 0
	case "kmeans":
		return c.KMeans != nil
	case "dedup":
		return c.Dedup != nil
	case "sims":
		return c.Sims != nil
	case "prune":
		return c.Prune != nil
	case "subsample":
		return c.Subsample != nil
	case "zeroshot":
		return c.Zeroshot != nil
	}
	return false
}

// Error is a config error; Key and Line say where (Line 0 when unknown).
type Error struct {
	File string
	Key  string
	Line int
	Msg  string
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("config")
	if e.File != "" {
		b.WriteString(" " + e.File)
	}
	if e.Line > 0 {
		fmt.Fprintf(&b, ":%d", e.Line)
	}
	if e.Key != "" {
		fmt.Fprintf(&b, ": key %q", e.Key)
	}
	b.WriteString(": " + e.Msg)
	return b.String()
}

// Load reads path, applies the `key=value` overrides in sets, fills
// defaults, resolves relative paths against the file's folder and validates.
func Load(path string, sets []string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, &Error{File: path, Msg: err.Error()}
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, err
	}
	return Parse(data, abs, sets)
}

// Parse is Load on bytes already read; file names the source in errors and
// its folder anchors relative paths ("" = current directory).
func Parse(data []byte, file string, sets []string) (*Config, error) {
	// Pass 1: the file as written, so errors carry its line numbers.
	if _, err := decodeStrict(data, file, nil); err != nil {
		return nil, err
	}
	doc := data
	if len(sets) > 0 {
		var err error
		if doc, err = applySets(data, file, sets); err != nil {
			return nil, err
		}
	}
	cfg, err := decodeStrict(doc, file, sets)
	if err != nil {
		return nil, err
	}
	cfg.File = file
	base := "."
	if file != "" {
		base = filepath.Dir(file)
	}
	cfg.resolvePaths(base)
	if err := cfg.Validate(); err != nil {
		if e, ok := err.(*Error); ok {
			e.File = file
			if e.Line == 0 && len(sets) == 0 {
				e.Line = keyLine(data, e.Key)
			}
		}
		return nil, err
	}
	return cfg, nil
}

// raw mirrors Config with undecoded sections, so each present section is
// decoded over its defaults.
type raw struct {
	Job       toml.Primitive            `toml:"job"`
	Runtime   toml.Primitive            `toml:"runtime"`
	Datasets  map[string]toml.Primitive `toml:"datasets"`
	Embed     map[string]toml.Primitive `toml:"embed"`
	KMeans    *toml.Primitive           `toml:"kmeans"`
	Dedup     *toml.Primitive           `toml:"dedup"`
	Sims      *toml.Primitive           `toml:"sims"`
	Prune     *toml.Primitive           `toml:"prune"`
	Subsample *toml.Primitive           `toml:"subsample"`
	Zeroshot  *toml.Primitive           `toml:"zeroshot"`
	Slurm     *toml.Primitive           `toml:"slurm"`
}

func decodeStrict(data []byte, file string, sets []string) (*Config, error) {
	var r raw
	md, err := toml.Decode(string(data), &r)
	if err != nil {
		return nil, tomlError(err, file, sets)
	}
	cfg := Default()
	dec := func(p toml.Primitive, v any) error {
		if err := md.PrimitiveDecode(p, v); err != nil {
			return tomlError(err, file, sets)
		}
		return nil
	}
	if md.IsDefined("job") {
		if err := dec(r.Job, &cfg.Job); err != nil {
			return nil, err
		}
	}
	if md.IsDefined("runtime") {
		if err := dec(r.Runtime, &cfg.Runtime); err != nil {
			return nil, err
		}
	}
	for _, name := range sortedKeys(r.Datasets) {
		d := defaultDataset()
		if err := dec(r.Datasets[name], d); err != nil {
			return nil, err
		}
		cfg.Datasets[name] = d
	}
	for _, name := range sortedKeys(r.Embed) {
		e := defaultEmbed()
		if err := dec(r.Embed[name], e); err != nil {
			return nil, err
		}
		cfg.Embed[name] = e
	}
	type section struct {
		p   *toml.Primitive
		dst any
		set func()
	}
	km, dd, sm, pr, ss, zs, sl := defaultKMeans(), defaultDedup(), defaultSims(), defaultPrune(), defaultSubsample(), defaultZeroshot(), &Slurm{}
	for _, s := range []section{
		{r.KMeans, km, func() { cfg.KMeans = km }},
		{r.Dedup, dd, func() { cfg.Dedup = dd }},
		{r.Sims, sm, func() { cfg.Sims = sm }},
		{r.Prune, pr, func() { cfg.Prune = pr }},
		{r.Subsample, ss, func() { cfg.Subsample = ss }},
		{r.Zeroshot, zs, func() { cfg.Zeroshot = zs }},
		{r.Slurm, sl, func() { cfg.Slurm = sl }},
	} {
		if s.p == nil {
			continue
		}
		if err := dec(*s.p, s.dst); err != nil {
			return nil, err
		}
		s.set()
	}
	if und := md.Undecoded(); len(und) > 0 {
		key := und[0].String()
		e := &Error{File: file, Key: key, Msg: "unknown key"}
		if len(sets) == 0 {
			e.Line = keyLine(data, key)
		} else if s := setNaming(sets, key); s != "" {
			e.Msg = "unknown key (from --set " + s + ")"
		}
		if len(und) > 1 {
			var rest []string
			for _, k := range und[1:] {
				rest = append(rest, k.String())
			}
			e.Msg += " (also unknown: " + strings.Join(rest, ", ") + ")"
		}
		return nil, e
	}
	return cfg, nil
}

func tomlError(err error, file string, sets []string) error {
	var pe toml.ParseError
	if errors.As(err, &pe) {
		e := &Error{File: file, Key: pe.LastKey, Line: pe.Position.Line, Msg: pe.Message}
		if len(sets) > 0 {
			e.Line = 0
			if s := setNaming(sets, pe.LastKey); s != "" {
				e.Msg += " (from --set " + s + ")"
			}
		}
		return e
	}
	// Type errors come as "toml: line 7 (last key "kmeans.k"): incompatible types ...".
	msg := strings.TrimPrefix(err.Error(), "toml: ")
	e := &Error{File: file, Msg: msg}
	if m := typeErrRE.FindStringSubmatch(msg); m != nil {
		e.Line, _ = strconv.Atoi(m[1])
		e.Key, e.Msg = m[2], m[3]
		if len(sets) > 0 {
			e.Line = 0
			if s := setNaming(sets, e.Key); s != "" {
				e.Msg += " (from --set " + s + ")"
			}
		}
	}
	return e
}

var typeErrRE = regexp.MustCompile(`^line (\d+) \(last key "([^"]*)"\): (.*)$`)

func setNaming(sets []string, key string) string {
	for _, s := range sets {
		if k, _, _ := strings.Cut(s, "="); strings.TrimSpace(k) == key {
			return s
		}
	}
	return ""
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// applySets merges `a.b.c=value` overrides into the document: the value is
// typed as in TOML (`k=64` is an integer, `name=foo` falls back to a string).
func applySets(data []byte, file string, sets []string) ([]byte, error) {
	var tree map[string]any
	if _, err := toml.Decode(string(data), &tree); err != nil {
		return nil, tomlError(err, file, nil)
	}
	for _, s := range sets {
		k, v, ok := strings.Cut(s, "=")
		k = strings.TrimSpace(k)
		if !ok || k == "" {
			return nil, &Error{File: file, Key: s, Msg: "--set wants KEY=VALUE"}
		}
		var one map[string]any
		if _, err := toml.Decode("v = "+v, &one); err != nil {
			one = map[string]any{"v": v} // a bare word is a string
		}
		parts := strings.Split(k, ".")
		node := tree
		for _, p := range parts[:len(parts)-1] {
			next, ok := node[p].(map[string]any)
			if !ok {
				if _, exists := node[p]; exists {
					return nil, &Error{File: file, Key: k, Msg: "--set " + s + ": " + p + " is not a table"}
				}
				next = map[string]any{}
				node[p] = next
			}
			node = next
		}
		node[parts[len(parts)-1]] = one["v"]
	}
	var buf bytes.Buffer
	if err := toml.NewEncoder(&buf).Encode(tree); err != nil {
		return nil, &Error{File: file, Msg: "applying --set: " + err.Error()}
	}
	return buf.Bytes(), nil
}

// keyLine finds the line that defines dotted key in a TOML document, by
// tracking table headers; 0 when not found.
func keyLine(data []byte, key string) int {
	if key == "" {
		return 0
	}
	table := ""
	for i, line := range strings.Split(string(data), "\n") {
		t := strings.TrimSpace(line)
		if strings.HasPrefix(t, "[") {
			h := strings.Trim(strings.SplitN(t, "]", 2)[0], "[ ")
			table = normKey(h)
			if table == key {
				return i + 1
			}
			continue
		}
		lhs, _, ok := strings.Cut(t, "=")
		if !ok || strings.HasPrefix(t, "#") {
			continue
		}
		full := normKey(lhs)
		if table != "" {
			full = table + "." + full
		}
		if full == key || strings.HasPrefix(key, full+".") {
			return i + 1
		}
	}
	return 0
}

func normKey(k string) string {
	parts := strings.Split(k, ".")
	for i, p := range parts {
		parts[i] = strings.Trim(strings.TrimSpace(p), `"'`)
	}
	return strings.Join(parts, ".")
}

// resolvePaths makes relative paths absolute against base.
func (c *Config) resolvePaths(base string) {
	abs := func(p *string) {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(base, *p)
		}
	}
	abs(&c.Job.Workdir)
	for _, d := range c.Datasets {
		abs(&d.Path)
	}
	for _, e := range c.Embed {
		abs(&e.Model)
		abs(&e.Input)
	}
	if c.Subsample != nil {
		abs(&c.Subsample.Tars)
		if c.Subsample.Keep != "" && !filepath.IsAbs(c.Subsample.Keep) {
			c.Subsample.Keep = filepath.Join(c.Job.Workdir, c.Subsample.Keep)
		}
	}
	if c.Zeroshot != nil {
		abs(&c.Zeroshot.ClassMatrix)
		for k, v := range c.Zeroshot.Masks {
			if strings.HasSuffix(v, ".npy") && !filepath.IsAbs(v) {
				c.Zeroshot.Masks[k] = filepath.Join(base, v)
			}
		}
	}
	if c.Slurm != nil {
		abs(&c.Slurm.Template)
	}
}

// Encode writes the effective config as TOML.
func (c *Config) Encode() ([]byte, error) {
	var buf bytes.Buffer
	enc := toml.NewEncoder(&buf)
	enc.Indent = ""
	if err := enc.Encode(c); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
