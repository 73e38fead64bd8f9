package synth

import (
	"archive/tar"
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"hpcrun/dataset"
)

func dot(a, b []float32) float32 {
	var s float32
	for i := range a {
		s += a[i] * b[i]
	}
	return s
}

func TestTinyWorld(t *testing.T) {
	out := t.TempDir()
	p := Presets["tiny"]
	truth, err := Write(out, p, 7)
	if err != nil {
		t.Fatal(err)
	}
	if !Exists(out) {
		t.Fatal("truth.json missing")
	}
	laion, err := dataset.Open("laion", filepath.Join(out, "laion"), dataset.Options{Layout: dataset.ClipRetrieval})
	if err != nil {
		t.Fatal(err)
	}
	if int(laion.Rows) != truth.BaseRows || len(laion.Shards) != p.BaseShards || laion.DType != dataset.Float16 {
		t.Fatalf("laion: %d rows in %d shards (%s), truth says %d", laion.Rows, len(laion.Shards), laion.DType, truth.BaseRows)
	}
	x, err := laion.ReadAll(1000)
	if err != nil {
		t.Fatal(err)
	}
	ids, err := laion.AllIDs()
	if err != nil {
		t.Fatal(err)
	}
	row := map[int64]int{}
	for i, id := range ids {
		if _, dup := row[id]; dup {
			t.Fatalf("id %d twice", id)
		}
		row[id] = i
	}
	d := p.Dim
	vec := func(id int64) []float32 { r := row[id]; return x[r*d : (r+1)*d] }
	// planted groups are near-duplicates; nothing else is
	inGroup := map[int64]int{}
	for g, ids := range truth.DupGroups {
		if len(ids) < 2 {
			t.Fatalf("group %d has %d members", g, len(ids))
		}
		for _, id := range ids {
			inGroup[id] = g + 1
			if s := dot(vec(ids[0]), vec(id)); s < 0.98 {
				t.Fatalf("group %d: similarity %v", g, s)
			}
		}
	}
	n := int(laion.Rows)
	for i := 0; i < n; i++ {
		for j := i + 1; j < n; j++ {
			if s := dot(x[i*d:(i+1)*d], x[j*d:(j+1)*d]); s > 1-0.124 {
				gi, gj := inGroup[ids[i]], inGroup[ids[j]]
				if gi == 0 || gi != gj {
					t.Fatalf("unplanted near-duplicates %d, %d (similarity %v)", ids[i], ids[j], s)
				}
			}
		}
	}
	// every planted near-eval point beats its eval image's best ImageNet-train match
	train, err := dataset.Open("t", filepath.Join(out, "imagenet-train"), dataset.Options{})
	if err != nil {
		t.Fatal(err)
	}
	tx, _ := train.ReadAll(1000)
	for name, pts := range truth.NearEval {
		ev, err := dataset.Open(name, filepath.Join(out, name), dataset.Options{})
		if err != nil {
			t.Fatal(err)
		}
		ex, _ := ev.ReadAll(1000)
		if len(pts) != p.NearEval {
			t.Fatalf("%s: %d planted", name, len(pts))
		}
		for _, q := range pts {
			e := ex[q.EvalRow*d : (q.EvalRow+1)*d]
			best := float32(-2)
			for r := 0; r < int(train.Rows); r++ {
				best = max(best, dot(e, tx[r*d:(r+1)*d]))
			}
			if s := dot(e, vec(q.ID)); s <= best {
				t.Fatalf("%s row %d: planted similarity %v <= reference %v", name, q.EvalRow, s, best)
			}
		}
		labels, err := ev.AllLabels()
		if err != nil || len(labels) != p.Classes*p.EvalPerCls {
			t.Fatalf("%s labels: %d %v", name, len(labels), err)
		}
	}
	// tars hold every base sample, three files each, keys in order
	tars, _ := filepath.Glob(filepath.Join(out, "laion-tars", "*.tar"))
	count := 0
	var last string
	for _, tp := range tars {
		f, _ := os.Open(tp)
		tr := tar.NewReader(f)
		for {
			h, err := tr.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			key := strings.SplitN(h.Name, ".", 2)[0]
			if _, ok := row[mustAtoi(t, key)]; !ok || len(key) != 9 {
				t.Fatalf("tar key %q not a base id", key)
			}
			if key < last {
				t.Fatalf("keys out of order: %s after %s", key, last)
			}
			last = key
			count++
		}
		f.Close()
	}
	if count != 3*truth.BaseRows {
		t.Fatalf("%d tar members for %d samples", count, truth.BaseRows)
	}
	cm, shape, err := dataset.ReadFloat32(filepath.Join(out, "text", "class_matrix.npy"))
	if err != nil || shape[0] != p.Classes || shape[1] != d || len(cm) != p.Classes*d {
		t.Fatalf("class matrix %v %v", shape, err)
	}
}

func mustAtoi(t *testing.T, s string) int64 {
	var v int64
	for _, c := range s {
		if c < '0' || c > '9' {
			t.Fatalf("key %q is not digits", s)
		}
		v = v*10 + int64(c-'0')
	}
	return v
}

func TestDeterministic(t *testing.T) {
	a, b := t.TempDir(), t.TempDir()
	if _, err := Write(a, Presets["tiny"], 11); err != nil {
		t.Fatal(err)
	}
	if _, err := Write(b, Presets["tiny"], 11); err != nil {
		t.Fatal(err)
	}
	n := 0
	filepath.Walk(a, func(p string, info os.FileInfo, err error) error {
		if err != nil || info.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(a, p)
		x, _ := os.ReadFile(p)
		y, err := os.ReadFile(filepath.Join(b, rel))
		if err != nil || !bytes.Equal(x, y) {
			t.Errorf("%s differs between two runs with the same seed", rel)
		}
		n++
		return nil
	})
	if n < 15 {
		t.Fatalf("only %d files", n)
	}
	c := t.TempDir()
	Write(c, Presets["tiny"], 12)
	x, _ := os.ReadFile(filepath.Join(a, "laion", "img_emb", "img_emb_0.npy"))
	y, _ := os.ReadFile(filepath.Join(c, "laion", "img_emb", "img_emb_0.npy"))
	if bytes.Equal(x, y) {
		t.Fatal("another seed gave the same data")
	}
}
