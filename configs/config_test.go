package configs

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestQuickstartLoads(t *testing.T) {
	cfg, err := Load("quickstart.toml", nil)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Job.Name != "quickstart" || cfg.KMeans.K != 64 || cfg.Dedup.Eps != 0.124 {
		t.Fatalf("unexpected values: %+v %+v %+v", cfg.Job, cfg.KMeans, cfg.Dedup)
	}
	if !filepath.IsAbs(cfg.Job.Workdir) || !filepath.IsAbs(cfg.Datasets["laion"].Path) {
		t.Fatalf("paths not resolved: %q %q", cfg.Job.Workdir, cfg.Datasets["laion"].Path)
	}
	want := filepath.Join(cfg.Job.Workdir, "prune/combined/keep_ids.npy")
	if cfg.Subsample.Keep != want {
		t.Fatalf("subsample.keep = %q, want %q (relative to workdir)", cfg.Subsample.Keep, want)
	}
	for _, s := range Stages {
		if s != "embed" && !cfg.Has(s) {
			t.Errorf("stage %s absent from quickstart", s)
		}
	}
}

func TestDefaultsFilled(t *testing.T) {
	cfg, err := Parse([]byte(`
[job]
name = "x"
workdir = "/tmp/w"
[datasets.a]
path = "/data/a"
[kmeans]
dataset = "a"
k = 10
`), "", nil)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.KMeans.MaxIter != 50 || cfg.KMeans.ChangeLowerBound != 1e-7 || cfg.KMeans.Metric != "l2" || cfg.KMeans.InitDupThreshold != 0.9 {
		t.Errorf("kmeans defaults not filled: %+v", cfg.KMeans)
	}
	if cfg.Datasets["a"].Layout != "embeddings" || cfg.Datasets["a"].IDColumn != "image_path" {
		t.Errorf("dataset defaults not filled: %+v", cfg.Datasets["a"])
	}
	if cfg.Runtime.Timeout.Duration != 60*time.Second || cfg.Runtime.Ranks != 2 || cfg.Seed() != 333 {
		t.Errorf("runtime defaults: %+v", cfg.Runtime)
	}
	if cfg.Dedup != nil || cfg.Sims != nil {
		t.Errorf("absent sections must stay nil")
	}
}

func (c *Config) Seed() int64 { return c.Job.Seed }

func TestErrorsNameKeyAndLine(t *testing.T) {
	cases := []struct {
		name, doc, key string
		line           int
		msg            string
	}{
		{"unknown key", "[job]\nname = \"x\"\nworkdir = \"/w\"\n\n[kmeans]\ndataset = \"a\"\nkk = 3\n[datasets.a]\npath = \"/a\"\n", "kmeans.kk", 7, "unknown key"},
		{"unknown section", "[job]\nname = \"x\"\n[kmean]\nk = 3\n", "kmean", 3, "unknown key"},
		{"unknown dataset key", "[datasets.a]\npath = \"/a\"\nlayuot = \"x\"\n", "datasets.a.layuot", 3, "unknown key"},
		{"wrong type", "[job]\nname = \"x\"\n[datasets.a]\npath = \"/a\"\n[kmeans]\ndataset = \"a\"\nk = \"many\"\n", "kmeans.k", 7, "incompatible types"},
		{"bad duration", "[runtime]\ntimeout = \"soon\"\n", "runtime.timeout", 2, "bad duration"},
		{"bad enum", "[runtime]\nbackend = \"tpu\"\n", "runtime.backend", 2, "must be auto, cpu or cuda"},
		{"unknown dataset ref", "[sims]\nbase = [\"laion\"]\neval = []\n", "sims.base", 2, "unknown dataset \"laion\""},
		{"syntax", "[job\nname = 1\n", "", 2, "to end table name"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse([]byte(c.doc), "exp.toml", nil)
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("want *Error, got %v", err)
			}
			if e.Key != c.key || e.Line != c.line || !strings.Contains(e.Msg, c.msg) {
				t.Fatalf("got key %q line %d msg %q; want key %q line %d msg ~%q", e.Key, e.Line, e.Msg, c.key, c.line, c.msg)
			}
			if !strings.HasPrefix(err.Error(), "config exp.toml:") {
				t.Fatalf("error does not name the file: %v", err)
			}
		})
	}
}

func TestSetOverrides(t *testing.T) {
	sets := []string{"kmeans.k=7", "sims.worst=true", "job.name=renamed", "runtime.timeout=\"5s\"", "datasets.laion.normalize=true", "prune.random_sizes=[1, 2]"}
	cfg, err := Load("quickstart.toml", sets)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.KMeans.K != 7 || !cfg.Sims.Worst || cfg.Job.Name != "renamed" || cfg.Runtime.Timeout.Duration != 5*time.Second {
		t.Fatalf("sets not applied: k=%d worst=%v name=%q timeout=%v", cfg.KMeans.K, cfg.Sims.Worst, cfg.Job.Name, cfg.Runtime.Timeout)
	}
	d := cfg.Datasets["laion"]
	if !d.Normalize || d.Layout != "clip-retrieval" || d.IDColumn != "image_path" {
		t.Fatalf("--set on a dataset lost its other keys: %+v", d)
	}
	if len(cfg.Prune.RandomSizes) != 2 || cfg.Prune.RandomSizes[1] != 2 {
		t.Fatalf("array set: %v", cfg.Prune.RandomSizes)
	}
	// untouched keys keep the file's values
	if cfg.Dedup.Eps != 0.124 {
		t.Fatalf("dedup.eps = %v", cfg.Dedup.Eps)
	}
	for _, bad := range []string{"kmeans.kk=3", "kmeans.k=many", "kmeans"} {
		_, err := Load("quickstart.toml", []string{bad})
		var e *Error
		if !errors.As(err, &e) || !strings.Contains(err.Error(), "kmeans") {
			t.Errorf("--set %s: want an error naming the key, got %v", bad, err)
		}
	}
}

func TestEncodeRoundTrip(t *testing.T) {
	cfg, err := Load("quickstart.toml", nil)
	if err != nil {
		t.Fatal(err)
	}
	out, err := cfg.Encode()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"[kmeans]", "change_lower_bound = 1e-07", "[datasets.laion]", "timeout = \"1m0s\""} {
		if !strings.Contains(string(out), want) {
			t.Errorf("effective config lacks %q:\n%s", want, out)
		}
	}
	// the printed config is itself a valid config giving the same values
	p := filepath.Join(t.TempDir(), "eff.toml")
	if err := os.WriteFile(p, out, 0o644); err != nil {
		t.Fatal(err)
	}
	again, err := Load(p, nil)
	if err != nil {
		t.Fatalf("printed config does not load: %v\n%s", err, out)
	}
	if again.KMeans.K != cfg.KMeans.K || again.Job.Workdir != cfg.Job.Workdir || again.Subsample.Keep != cfg.Subsample.Keep {
		t.Fatalf("round trip changed values")
	}
}

// FuzzParse: any bytes give a config or an *Error, never a panic.
func FuzzParse(f *testing.F) {
	if b, err := os.ReadFile("quickstart.toml"); err == nil {
		f.Add(string(b))
	}
	f.Add("[job]\nname = \"x\"\n[kmeans]\nk = \"a\"\n")
	f.Add("[datasets.a]\npath = 1\n")
	f.Add("[[kmeans]]\n")
	f.Fuzz(func(t *testing.T, doc string) {
		cfg, err := Parse([]byte(doc), "fuzz.toml", nil)
		if err != nil {
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("error of type %T: %v", err, err)
			}
			return
		}
		if cfg.Job.Workdir == "" || cfg.Runtime.Ranks < 1 {
			t.Fatalf("accepted an invalid config: %+v", cfg.Job)
		}
	})
}
