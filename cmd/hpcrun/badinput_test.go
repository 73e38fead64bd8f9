package main

import (
	"bytes"
	"encoding/binary"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"hpcrun/dataset"
	"hpcrun/synth"
)

var updateCorpus = flag.Bool("update-corpus", false, "rewrite testdata/bad from the tiny synthetic world")

// The bad-input corpus: testdata/bad/<format>/<case>, each a malformed
// version of one input of the tiny world. TestBadInputCorpus puts each in
// place of the good file and runs hpcrun: the run must exit 1 or 2 with a
// first line naming the file, and leave no final output behind.
//
// Formats and where a case goes:
//
//	npy/*      laion/img_emb/img_emb_1.npy     (run --only kmeans: values are read)
//	parquet/*  laion/metadata/metadata_1.parquet (run --only kmeans: ids are read)
//	tar/*      laion-tars/00001.tar            (run --only subsample)
//	onnx/*     models/clip-visual.onnx         (run --only embed)
//	image/*    images/imagenet-images/n00000000/img_000.jpg (fail_on_corrupt)
//	toml/*     the config itself
var corpusTargets = map[string]string{
	"npy":     "laion/img_emb/img_emb_1.npy",
	"parquet": "laion/metadata/metadata_1.parquet",
	"tar":     "laion-tars/00001.tar",
	"onnx":    "models/clip-visual.onnx",
	"image":   "images/imagenet-images/n00000000/img_000.jpg",
}

func corpusConfig(world, work string, extra string) string {
	return fmt.Sprintf(`
[job]
name = "bad"
workdir = %q
[datasets.laion]
path = %q
layout = "clip-retrieval"
[embed.imagenet-images]
model = %q
input = %q
image_size = 32
batch_size = 8
fail_on_corrupt = true
[subsample]
tars = %q
keep = %q
n_per_tar = 500
[kmeans]
dataset = "laion"
k = 4
max_iter = 3
%s`, work, filepath.Join(world, "laion"), filepath.Join(world, "models/clip-visual.onnx"),
		filepath.Join(world, "images/imagenet-images"), filepath.Join(world, "laion-tars"), filepath.Join(world, "keep_ids.npy"), extra)
}

// writeCorpus makes the malformed files from the good ones.
func writeCorpus(t *testing.T, world, out string) {
	read := func(rel string) []byte {
		b, err := os.ReadFile(filepath.Join(world, rel))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	put := func(format, name string, b []byte) {
		p := filepath.Join(out, format, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	npy := read(corpusTargets["npy"])
	h, _ := dataset.ReadHeader(bytes.NewReader(npy))
	hdr := func(dict string, data []byte) []byte {
		d := dict + strings.Repeat(" ", 127-10-len(dict)) + "\n"
		b := append([]byte("\x93NUMPY\x01\x00"), 0, 0)
		binary.LittleEndian.PutUint16(b[8:], uint16(len(d)))
		return append(append(b, d...), data...)
	}
	rows, dim := h.Shape[0], h.Shape[1]
	body := npy[h.DataOffset:]
	put("npy", "bad_magic.npy", append([]byte("PK\x03\x04"), npy[4:]...))
	put("npy", "truncated.npy", npy[:len(npy)-100])
	put("npy", "empty.npy", nil)
	put("npy", "trailing_bytes.npy", append(append([]byte{}, npy...), 1, 2, 3, 4))
	put("npy", "wrong_dtype.npy", hdr(fmt.Sprintf("{'descr': '<i2', 'fortran_order': False, 'shape': (%d, %d), }", rows, dim), body))
	put("npy", "dims_mismatch.npy", hdr(fmt.Sprintf("{'descr': '<f2', 'fortran_order': False, 'shape': (%d, %d), }", rows*2, dim/2), body))
	put("npy", "fortran.npy", hdr(fmt.Sprintf("{'descr': '<f2', 'fortran_order': True, 'shape': (%d, %d), }", rows, dim), body))
	put("npy", "huge_header.npy", append([]byte("\x93NUMPY\x02\x00"), 0xff, 0xff, 0xff, 0x7f))
	put("npy", "garbage_header.npy", hdr("{'descr': '<f2', 'shape': (3, x)}", body))
	nan := append([]byte{}, npy...)
	binary.LittleEndian.PutUint16(nan[h.DataOffset+2*(5*int64(dim)+7):], 0x7e00) // row 5, column 7
	put("npy", "nan.npy", nan)
	inf := append([]byte{}, npy...)
	binary.LittleEndian.PutUint16(inf[h.DataOffset:], 0xfc00)
	put("npy", "inf.npy", inf)
	unnorm := append([]byte{}, npy...)
	binary.LittleEndian.PutUint16(unnorm[h.DataOffset:], dataset.FloatToHalf(3))
	put("npy", "not_unit.npy", unnorm)

	pq := read(corpusTargets["parquet"])
	put("parquet", "truncated.parquet", pq[:len(pq)/2])
	put("parquet", "empty.parquet", nil)
	put("parquet", "csv.parquet", []byte("image_path,caption\n1,a\n"))
	short := filepath.Join(t.TempDir(), "short.parquet")
	if err := dataset.WriteMetadata(short, []dataset.MetadataRow{{ImagePath: 1}}); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(short)
	put("parquet", "rows_mismatch.parquet", b)
	ids, err := dataset.ReadIDColumn(filepath.Join(world, corpusTargets["parquet"]), "image_path")
	if err != nil {
		t.Fatal(err)
	}
	dup := make([]dataset.MetadataRow, len(ids))
	for i, id := range ids {
		dup[i] = dataset.MetadataRow{ImagePath: id}
	}
	dup[len(dup)-1].ImagePath = ids[0]
	dupPath := filepath.Join(t.TempDir(), "dup.parquet")
	if err := dataset.WriteMetadata(dupPath, dup); err != nil {
		t.Fatal(err)
	}
	b, _ = os.ReadFile(dupPath)
	put("parquet", "duplicate_ids.parquet", b)
	nullIDs, err := os.ReadFile("../../dataset/testdata/duckdb_null.parquet")
	if err != nil {
		t.Fatal(err)
	}
	put("parquet", "null_ids.parquet", nullIDs)

	tr := read(corpusTargets["tar"])
	put("tar", "truncated.tar", tr[:len(tr)/2+100])
	put("tar", "garbage.tar", bytes.Repeat([]byte("not a tar "), 300))
	put("tar", "empty.tar", nil)
	flipped := append([]byte{}, tr...)
	copy(flipped[512*3+100:], bytes.Repeat([]byte{0xff}, 64)) // a member header's checksum area
	put("tar", "bad_header.tar", flipped)

	model := read(corpusTargets["onnx"])
	put("onnx", "truncated.onnx", model[:len(model)/3])
	put("onnx", "empty.onnx", nil)
	put("onnx", "garbage.onnx", bytes.Repeat([]byte{0x08, 0xff, 0x12}, 100))

	img := read(corpusTargets["image"])
	put("image", "truncated.jpg", img[:len(img)/2])
	put("image", "empty.jpg", nil)
	put("image", "text.jpg", []byte("this is not an image\n"))

	put("toml", "unknown_key.toml", []byte("[kmeans]\ndataset = \"laion\"\nkay = 3\n"))
	put("toml", "wrong_type.toml", []byte("[kmeans]\ndataset = \"laion\"\nk = \"many\"\n"))
	put("toml", "syntax.toml", []byte("[kmeans\nk = 3\n"))
	put("toml", "unknown_dataset.toml", []byte("[kmeans]\ndataset = \"nope\"\n"))
	put("toml", "bad_duration.toml", []byte("[runtime]\ntimeout = \"soon\"\n"))
}

func TestBadInputCorpus(t *testing.T) {
	world := filepath.Join(t.TempDir(), "world")
	if _, err := synth.Write(world, synth.Presets["tiny"], 5); err != nil {
		t.Fatal(err)
	}
	// every base id is kept, so subsample reads every tar
	laion, err := dataset.Open("laion", filepath.Join(world, "laion"), dataset.Options{Layout: dataset.ClipRetrieval})
	if err != nil {
		t.Fatal(err)
	}
	ids, _ := laion.AllIDs()
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	dataset.WriteInt64(filepath.Join(world, "keep_ids.npy"), ids)

	corpus := "testdata/bad"
	if *updateCorpus {
		os.RemoveAll(corpus)
		writeCorpus(t, world, corpus)
	}
	var cases []string
	filepath.WalkDir(corpus, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			cases = append(cases, p)
		}
		return nil
	})
	if len(cases) < 30 {
		t.Fatalf("only %d corpus files under %s (regenerate with -update-corpus)", len(cases), corpus)
	}
	for _, c := range cases {
		format := filepath.Base(filepath.Dir(c))
		t.Run(format+"/"+filepath.Base(c), func(t *testing.T) {
			bad, err := os.ReadFile(c)
			if err != nil {
				t.Fatal(err)
			}
			work := filepath.Join(t.TempDir(), "work")
			dir := t.TempDir()
			var cfg, named string
			// npy values (NaN, norms) are checked when a stage reads the rows
			only := map[string]string{"tar": "subsample", "onnx": "embed", "image": "embed", "npy": "kmeans", "parquet": "kmeans"}[format]
			if format == "toml" {
				cfg = filepath.Join(dir, "exp.toml")
				doc := corpusConfig(world, work, "") + "\n" + string(bad)
				if filepath.Base(c) == "syntax.toml" || filepath.Base(c) == "bad_duration.toml" {
					doc = string(bad) // stands alone: the error must still name the file
				}
				os.WriteFile(cfg, []byte(doc), 0o644)
				named = cfg
			} else {
				target := filepath.Join(world, corpusTargets[format])
				good, err := os.ReadFile(target)
				if err != nil {
					t.Fatal(err)
				}
				os.WriteFile(target, bad, 0o644)
				defer os.WriteFile(target, good, 0o644)
				cfg = writeConfig(t, dir, corpusConfig(world, work, ""))
				named = target
			}
			args := []string{"run", cfg, "--ranks", "1"}
			if only != "" {
				args = append(args, "--only", only)
			} else if format != "toml" {
				args = append(args, "--only", "zeroshot") // datasets are opened (and checked) before any stage
			}
			code, out := run(t, args...)
			first := strings.SplitN(out, "\n", 2)[0]
			if code != 1 && code != 2 {
				t.Fatalf("exit %d, want 1 or 2:\n%s", code, out)
			}
			if !strings.Contains(first, named) {
				t.Fatalf("the first line does not name %s:\n%s", named, out)
			}
			t.Logf("exit %d: %s", code, strings.TrimPrefix(first, "hpcrun: "))
			filepath.WalkDir(work, func(p string, d fs.DirEntry, err error) error {
				if err != nil || d.IsDir() {
					return nil
				}
				name := d.Name()
				switch {
				case strings.Contains(name, ".tmp-"):
					t.Errorf("temp file left: %s", p)
				case strings.Contains(p, "/checkpoint/") || strings.Contains(p, ".parts"):
					// resumable intermediate state, not a final output
				case name == "report.json" || name == "done.json" || strings.HasSuffix(name, ".npy"):
					t.Errorf("final output written by a failed run: %s", p)
				}
				return nil
			})
		})
	}
}
