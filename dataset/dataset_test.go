package dataset

import (
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func unitRows(rng *rand.Rand, n, d int) []float32 {
	x := make([]float32, n*d)
	for i := 0; i < n; i++ {
		var ss float64
		for j := 0; j < d; j++ {
			v := rng.NormFloat64()
			x[i*d+j] = float32(v)
			ss += v * v
		}
		for j := 0; j < d; j++ {
			x[i*d+j] /= float32(math.Sqrt(ss))
		}
	}
	return x
}

// clipRetrieval writes a clip-retrieval dataset with shards of the given
// row counts; shard s row j has id s*1000+j.
func clipRetrieval(t *testing.T, root string, rows []int, dim int) {
	t.Helper()
	rng := rand.New(rand.NewPCG(3, 4))
	for s, n := range rows {
		mw, err := CreateMatrix(filepath.Join(root, "img_emb", fmt.Sprintf("img_emb_%d.npy", s)), Float16, dim)
		if err != nil {
			t.Fatal(err)
		}
		if err := mw.Write(unitRows(rng, n, dim)); err != nil {
			t.Fatal(err)
		}
		if err := mw.Close(); err != nil {
			t.Fatal(err)
		}
		meta := make([]MetadataRow, n)
		for j := range meta {
			meta[j] = MetadataRow{ImagePath: int64(s*1000 + j), Key: fmt.Sprintf("%09d", s*1000+j)}
		}
		if err := WriteMetadata(filepath.Join(root, "metadata", fmt.Sprintf("metadata_%d.parquet", s)), meta); err != nil {
			t.Fatal(err)
		}
	}
}

func TestOpenClipRetrievalSortsNumerically(t *testing.T) {
	root := t.TempDir()
	rows := []int{3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8} // 12 shards: 10 and 11 sort after 9
	clipRetrieval(t, root, rows, 7)
	d, err := Open("laion", root, Options{Layout: ClipRetrieval})
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Shards) != 12 || d.Dim != 7 || d.DType != Float16 || d.Rows != 52 {
		t.Fatalf("opened %d shards, dim %d, %s, %d rows", len(d.Shards), d.Dim, d.DType, d.Rows)
	}
	var off int64
	for i, s := range d.Shards {
		if s.N != i || s.Rows != rows[i] || s.Offset != off {
			t.Fatalf("shard %d: %+v", i, s)
		}
		off += int64(s.Rows)
		ids, err := d.IDs(i)
		if err != nil {
			t.Fatal(err)
		}
		if len(ids) != rows[i] || (len(ids) > 0 && ids[len(ids)-1] != int64(i*1000+rows[i]-1)) {
			t.Fatalf("shard %d ids %v", i, ids)
		}
	}
	all, err := d.ReadAll(4)
	if err != nil || len(all) != 52*7 {
		t.Fatalf("ReadAll: %d values, %v", len(all), err)
	}
	parts := d.Partition(3)
	seen := 0
	for _, p := range parts {
		seen += len(p)
	}
	if seen != 12 || len(parts) != 3 {
		t.Fatalf("partition %v", parts)
	}
	// key column as ids: digit strings
	d2, err := Open("laion", root, Options{Layout: ClipRetrieval, IDColumn: "key"})
	if err != nil {
		t.Fatal(err)
	}
	ids, err := d2.IDs(10)
	if err != nil || ids[0] != 10000 {
		t.Fatalf("key ids %v %v", ids, err)
	}
}

func TestOpenErrorsNameTheFile(t *testing.T) {
	type setup func(t *testing.T, root string)
	cases := []struct {
		name string
		mk   setup
		want string
	}{
		{"no shards", func(t *testing.T, root string) { os.MkdirAll(filepath.Join(root, "img_emb"), 0o755) }, "no img_emb_N.npy files"},
		{"missing dir", func(t *testing.T, root string) {}, "no such file"},
		{"missing shard", func(t *testing.T, root string) {
			clipRetrieval(t, root, []int{2, 2, 2}, 4)
			os.Remove(filepath.Join(root, "img_emb", "img_emb_1.npy"))
		}, "img_emb_1.npy missing"},
		{"missing metadata", func(t *testing.T, root string) {
			clipRetrieval(t, root, []int{2, 2}, 4)
			os.Remove(filepath.Join(root, "metadata", "metadata_1.parquet"))
		}, "metadata_1.parquet: no such file"},
		{"metadata rows", func(t *testing.T, root string) {
			clipRetrieval(t, root, []int{2, 2}, 4)
			WriteMetadata(filepath.Join(root, "metadata", "metadata_1.parquet"), []MetadataRow{{ImagePath: 1}})
		}, "metadata_1.parquet has 1 rows but"},
		{"dims disagree", func(t *testing.T, root string) {
			clipRetrieval(t, root, []int{2, 2}, 4)
			WriteNPY(filepath.Join(root, "img_emb", "img_emb_1.npy"), Float32, []int{2, 5}, make([]float32, 10))
		}, "img_emb_1.npy has dim 5 but"},
		{"dtype disagrees", func(t *testing.T, root string) {
			clipRetrieval(t, root, []int{2, 2}, 4)
			WriteNPY(filepath.Join(root, "img_emb", "img_emb_1.npy"), Float32, []int{2, 4}, make([]float32, 8))
		}, "img_emb_1.npy is float32 but"},
		{"truncated shard", func(t *testing.T, root string) {
			clipRetrieval(t, root, []int{2, 2}, 4)
			p := filepath.Join(root, "img_emb", "img_emb_0.npy")
			b, _ := os.ReadFile(p)
			os.WriteFile(p, b[:len(b)-3], 0o644)
		}, "img_emb_0.npy: truncated"},
		{"int shard", func(t *testing.T, root string) {
			clipRetrieval(t, root, []int{2}, 4)
			WriteInt64(filepath.Join(root, "img_emb", "img_emb_0.npy"), []int64{1, 2})
		}, "embeddings must be float16 or float32, got int64"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			root := filepath.Join(t.TempDir(), "ds")
			c.mk(t, root)
			_, err := Open("laion", root, Options{Layout: ClipRetrieval})
			if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "dataset laion") {
				t.Fatalf("got %v, want ~%q", err, c.want)
			}
		})
	}
}

func TestEmbeddingsWriterAndLayout(t *testing.T) {
	root := t.TempDir()
	rng := rand.New(rand.NewPCG(5, 6))
	w := &EmbeddingsWriter{Root: root, DType: Float32, Dim: 5, ShardRows: 4}
	x := unitRows(rng, 10, 5)
	labels := []int64{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}
	paths := []string{"a", "b", "c", "d", "e", "f", "g", "h", "i", "j"}
	if err := w.Add(x[:15], labels[:3], paths[:3]); err != nil {
		t.Fatal(err)
	}
	if err := w.Add(x[15:], labels[3:], paths[3:]); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	d, err := Open("val", root, Options{Layout: Embeddings})
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Shards) != 3 || d.Rows != 10 {
		t.Fatalf("%d shards, %d rows", len(d.Shards), d.Rows)
	}
	ids, _ := d.AllIDs()
	lab, err := d.AllLabels()
	if err != nil || ids[9] != 9 || lab[7] != 7 {
		t.Fatalf("ids %v labels %v %v", ids, lab, err)
	}
	p, err := d.Paths(2)
	if err != nil || len(p) != 2 || p[1] != "j" {
		t.Fatalf("paths %v %v", p, err)
	}
	got, err := d.ReadAll(3)
	if err != nil {
		t.Fatal(err)
	}
	for i := range x {
		if got[i] != x[i] {
			t.Fatalf("row data differs at %d", i)
		}
	}
	// a labels file of the wrong length is caught at open
	WriteInt64(filepath.Join(root, "labels", "labels_1.npy"), []int64{1})
	if _, err := Open("val", root, Options{Layout: Embeddings}); err == nil || !strings.Contains(err.Error(), "labels_1.npy has shape [1] but") {
		t.Fatalf("labels mismatch: %v", err)
	}
}

// BenchmarkReadShard streams a float16 shard (decode + NaN/norm checks);
// `make bench` runs the 1 GiB version beside `cat` (see cmd/hpcrun bench).
func BenchmarkReadShard(b *testing.B) {
	dir := b.TempDir()
	rng := rand.New(rand.NewPCG(1, 1))
	const n, d = 65536, 512
	path := filepath.Join(dir, "img_emb_0.npy")
	mw, _ := CreateMatrix(path, Float16, d)
	mw.Write(unitRows(rng, n, d))
	mw.Close()
	b.SetBytes(n * d * 2)
	for i := 0; i < b.N; i++ {
		m, err := OpenMatrix(path)
		if err != nil {
			b.Fatal(err)
		}
		if err := m.Blocks(16384, Check{}, func(Block) error { return nil }); err != nil {
			b.Fatal(err)
		}
		m.Close()
	}
}

func TestDuplicateIDs(t *testing.T) {
	root := t.TempDir()
	clipRetrieval(t, root, []int{3, 3}, 4)
	WriteMetadata(filepath.Join(root, "metadata", "metadata_1.parquet"), []MetadataRow{{ImagePath: 7}, {ImagePath: 8}, {ImagePath: 7}})
	d, err := Open("laion", root, Options{Layout: ClipRetrieval})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.IDs(1); err == nil || !strings.Contains(err.Error(), "metadata_1.parquet") || !strings.Contains(err.Error(), "id 7 appears more than once (first at row 0)") {
		t.Fatalf("duplicate ids: %v", err)
	}
	if _, err := d.IDs(0); err != nil {
		t.Fatal(err)
	}
}
