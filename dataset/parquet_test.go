package dataset

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The testdata files were written by DuckDB (scripts/make-parquet-testdata.mjs):
// row i has image_path = (i/4)*7 + 100000000 and key = "%09d" of (i/4)*7 + 123.
func TestReadDuckDBParquet(t *testing.T) {
	for _, codec := range []string{"snappy", "zstd"} {
		path := filepath.Join("testdata", "duckdb_"+codec+".parquet")
		n, err := ParquetRows(path)
		if err != nil || n != 1000 {
			t.Fatalf("%s: rows %d, %v", path, n, err)
		}
		ids, err := ReadIDColumn(path, "image_path")
		if err != nil {
			t.Fatal(err)
		}
		keys, err := ReadIDColumn(path, "key")
		if err != nil {
			t.Fatal(err)
		}
		if len(ids) != 1000 || len(keys) != 1000 {
			t.Fatalf("%s: %d ids, %d keys", path, len(ids), len(keys))
		}
		for i := range ids {
			if want := int64(i/4)*7 + 100000000; ids[i] != want {
				t.Fatalf("%s: image_path[%d] = %d, want %d", path, i, ids[i], want)
			}
			if want := int64(i/4)*7 + 123; keys[i] != want {
				t.Fatalf("%s: key[%d] = %d, want %d", path, i, keys[i], want)
			}
		}
		if _, err := ReadIDColumn(path, "nope"); err == nil || !strings.Contains(err.Error(), `no column "nope"`) {
			t.Fatalf("missing column: %v", err)
		}
		if _, err := ReadIDColumn(path, "caption"); err == nil || !strings.Contains(err.Error(), "not a non-negative integer") {
			t.Fatalf("text column as ids: %v", err)
		}
	}
	ids, err := ReadIDColumn("testdata/duckdb_int32.parquet", "image_path")
	if err != nil || len(ids) != 10 || ids[9] != 9 {
		t.Fatalf("int32 ids: %v %v", ids, err)
	}
	if _, err := ReadIDColumn("testdata/duckdb_null.parquet", "image_path"); err == nil || !strings.Contains(err.Error(), "row 3") {
		t.Fatalf("null id: %v", err)
	}
}

func TestCorruptParquet(t *testing.T) {
	good, err := os.ReadFile("testdata/duckdb_zstd.parquet")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for name, b := range map[string][]byte{
		"truncated.parquet": good[:len(good)/2],
		"empty.parquet":     {},
		"text.parquet":      []byte("image_path\n1\n2\n"),
		"flipped.parquet":   flip(good, len(good)/3),
	} {
		p := filepath.Join(dir, name)
		os.WriteFile(p, b, 0o644)
		_, err := ReadIDColumn(p, "image_path")
		if err == nil && name != "flipped.parquet" {
			t.Errorf("%s: no error", name)
		}
		if err != nil && !strings.Contains(err.Error(), p) {
			t.Errorf("%s: error does not name the file: %v", name, err)
		}
	}
}

func flip(b []byte, at int) []byte {
	c := append([]byte{}, b...)
	for i := at; i < at+64 && i < len(c); i++ {
		c[i] ^= 0x5a
	}
	return c
}

func TestWriteMetadataRoundTrip(t *testing.T) {
	p := filepath.Join(t.TempDir(), "metadata_0.parquet")
	rows := []MetadataRow{{ImagePath: 5, Caption: "a", Key: "000000005"}, {ImagePath: 123456789, Caption: "a", Key: "123456789"}}
	if err := WriteMetadata(p, rows); err != nil {
		t.Fatal(err)
	}
	ids, err := ReadIDColumn(p, "image_path")
	if err != nil || len(ids) != 2 || ids[1] != 123456789 {
		t.Fatalf("%v %v", ids, err)
	}
	keys, err := ReadIDColumn(p, "key")
	if err != nil || keys[0] != 5 {
		t.Fatalf("%v %v", keys, err)
	}
}
