package stages

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"hpcrun/configs"
	"hpcrun/dataset"
	"hpcrun/synth"
)

// subsampleSetup writes the tiny world, a keep list (ids not divisible by
// 3, plus one id no tar holds) and k-means labels (id % 5) into workdir.
func subsampleSetup(t *testing.T, dir, workdir string, truth *synth.Truth, nPerTar int) (*configs.Config, []int64) {
	t.Helper()
	cfg := simsConfig(t, dir, workdir, fmt.Sprintf(`
[subsample]
tars = "data/laion-tars"
n_per_tar = %d
write_cls = true
`, nPerTar))
	var keep, ids []int64
	var cls []int32
	for id := int64(0); id < int64(truth.BaseRows); id++ {
		if id%3 != 0 {
			keep = append(keep, id)
		}
		ids = append(ids, id)
		cls = append(cls, int32(id%5))
	}
	keep = append(keep, 999999999)
	w := cfg.Job.Workdir
	if err := dataset.WriteInt64(filepath.Join(w, "prune", "combined", "keep_ids.npy"), keep); err != nil {
		t.Fatal(err)
	}
	if err := dataset.WriteInt64(filepath.Join(w, "kmeans", "ids.npy"), ids); err != nil {
		t.Fatal(err)
	}
	if err := dataset.WriteInt32(filepath.Join(w, "kmeans", "assignments.npy"), cls); err != nil {
		t.Fatal(err)
	}
	return cfg, keep[:len(keep)-1]
}

type tarMember struct {
	name string
	data []byte
}

func readTar(t *testing.T, p string) []tarMember {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []tarMember
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, tarMember{h.Name, b})
	}
}

// TestSubsample: the kept samples, each exactly once, in key order, all
// members together with their original bytes plus a .cls; n_per_tar per
// tar; GNU tar and Python's tarfile read them; 1 and 3 ranks write the
// same bytes; a rerun skips, a lost tar is rewritten.
func TestSubsample(t *testing.T) {
	dir, truth := simsWorld(t)
	const per = 250
	cfg1, keep := subsampleSetup(t, dir, "run1", truth, per)
	simsRun(t, cfg1, 1, "subsample")
	cfg3, _ := subsampleSetup(t, dir, "run3", truth, per)
	simsRun(t, cfg3, 3, "subsample")

	// the input samples, by key
	in := map[string][]tarMember{}
	inTars, _ := filepath.Glob(filepath.Join(dir, "data", "laion-tars", "*.tar"))
	for _, p := range inTars {
		for _, m := range readTar(t, p) {
			key, _, _ := strings.Cut(m.name, ".")
			in[key] = append(in[key], m)
		}
	}
	out1, _ := filepath.Glob(filepath.Join(cfg1.Job.Workdir, "subsample", "*.tar"))
	out3, _ := filepath.Glob(filepath.Join(cfg3.Job.Workdir, "subsample", "*.tar"))
	if want := (len(keep) + per - 1) / per; len(out1) != want || len(out3) != want {
		t.Fatalf("%d and %d output tars, want %d", len(out1), len(out3), want)
	}
	var keys []string
	for i, p := range out1 {
		if filepath.Base(p) != fmt.Sprintf("%05d.tar", i) {
			t.Fatalf("output %d is %s", i, p)
		}
		b1, _ := os.ReadFile(p)
		b3, _ := os.ReadFile(out3[i])
		if !bytes.Equal(b1, b3) {
			t.Fatalf("%s differs between 1 and 3 ranks", filepath.Base(p))
		}
		ms := readTar(t, p)
		n := 0
		for j := 0; j < len(ms); {
			key, _, _ := strings.Cut(ms[j].name, ".")
			src := in[key]
			if len(src) == 0 {
				t.Fatalf("%s: sample %s is not in the input", p, key)
			}
			for _, m := range src {
				if ms[j].name != m.name || !bytes.Equal(ms[j].data, m.data) {
					t.Fatalf("%s: member %s, want %s with the input's bytes", p, ms[j].name, m.name)
				}
				j++
			}
			id, _ := strconv.ParseInt(key, 10, 64)
			if ms[j].name != key+".cls" || string(ms[j].data) != fmt.Sprint(id%5) {
				t.Fatalf("%s: %s = %q, want %s.cls = %d", p, ms[j].name, ms[j].data, key, id%5)
			}
			j++
			keys = append(keys, key)
			n++
		}
		if want := min(per, len(keep)-i*per); n != want {
			t.Fatalf("%s: %d samples, want %d", p, n, want)
		}
		// GNU tar lists it
		lst, err := exec.Command("tar", "-tf", p).Output()
		if err != nil {
			t.Fatalf("tar -tf %s: %v", p, err)
		}
		if got := strings.Count(string(lst), "\n"); got != len(ms) {
			t.Fatalf("tar -tf %s: %d members, want %d", p, got, len(ms))
		}
	}
	// every kept key exactly once, in order
	if len(keys) != len(keep) {
		t.Fatalf("%d samples written, want %d", len(keys), len(keep))
	}
	for i, id := range keep {
		if keys[i] != fmt.Sprintf("%09d", id) {
			t.Fatalf("sample %d is %s, want %09d", i, keys[i], id)
		}
	}
	// Python's tarfile reads them
	if py := simsPython(t); py != "" {
		code := `import sys, tarfile
n = 0
for p in sys.argv[1:]:
    with tarfile.open(p) as tf:
        for m in tf:
            tf.extractfile(m).read(); n += 1
print(n)`
		outp, err := exec.Command(py, append([]string{"-c", code}, out1...)...).CombinedOutput()
		if err != nil || strings.TrimSpace(string(outp)) != fmt.Sprint(len(keep)*4) {
			t.Fatalf("python tarfile: %v %s, want %d members", err, outp, len(keep)*4)
		}
	}
	// rerun: skipped; a lost tar is rewritten, the others kept
	simsRun(t, cfg3, 3, "subsample")
	if s := reportStatus(t, cfg3.Job.Workdir)["subsample"]; s != "skipped" {
		t.Fatalf("rerun: %s", s)
	}
	lost := out3[2]
	st0, _ := os.Stat(out3[0])
	os.Remove(lost)
	simsRun(t, cfg3, 3, "subsample")
	if s := reportStatus(t, cfg3.Job.Workdir)["subsample"]; s != "done" {
		t.Fatalf("rerun with a tar lost: %s", s)
	}
	b1, _ := os.ReadFile(out1[2])
	b3, err := os.ReadFile(lost)
	if err != nil || !bytes.Equal(b1, b3) {
		t.Fatalf("lost tar not rewritten identically: %v", err)
	}
	if st, _ := os.Stat(out3[0]); !st.ModTime().Equal(st0.ModTime()) {
		t.Fatalf("resume rewrote a tar that was there")
	}
	// a different plan removes the old tars
	cfg3.Subsample.NPerTar = 5000
	simsRun(t, cfg3, 3, "subsample")
	if out, _ := filepath.Glob(filepath.Join(cfg3.Job.Workdir, "subsample", "*.tar")); len(out) != 1 {
		t.Fatalf("n_per_tar=5000: %d tars, want 1", len(out))
	}
}

// TestSubsampleCorruptTar: a truncated or garbled input tar is an error
// naming it, and no output tar is left half-written.
func TestSubsampleCorruptTar(t *testing.T) {
	for _, c := range []struct {
		name   string
		damage func(b []byte) []byte
	}{
		{"truncated", func(b []byte) []byte { return b[:len(b)/2+100] }},
		{"cut at a member", func(b []byte) []byte { return b[:headerOffset(b, 10)] }},
		{"bad header", func(b []byte) []byte { b[headerOffset(b, 7)+148] ^= 0x55; return b }},
		{"empty", func(b []byte) []byte { return nil }},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir, truth := simsWorld(t)
			cfg, _ := subsampleSetup(t, dir, "run", truth, 300)
			bad := filepath.Join(dir, "data", "laion-tars", "00001.tar")
			b, err := os.ReadFile(bad)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(bad, c.damage(b), 0o644); err != nil {
				t.Fatal(err)
			}
			for _, ranks := range []int{1, 2} {
				err := RunInProcess(context.Background(), cfg, ranks, []string{"subsample"}, slog.New(slog.NewTextHandler(io.Discard, nil)))
				if err == nil || !strings.Contains(err.Error(), bad) {
					t.Fatalf("ranks=%d: error %v, want one naming %s", ranks, err, bad)
				}
				left, _ := filepath.Glob(filepath.Join(cfg.Job.Workdir, "subsample", ".*"))
				if len(left) > 0 {
					t.Fatalf("left behind: %v", left)
				}
			}
		})
	}
}

// headerOffset is where member i's header starts in a plain ustar tar.
func headerOffset(b []byte, i int) int {
	off := 0
	for ; i > 0; i-- {
		size, _ := strconv.ParseInt(strings.Trim(string(b[off+124:off+136]), " \x00"), 8, 64)
		off += 512 + int((size+511)/512*512)
	}
	return off
}

func TestSampleKey(t *testing.T) {
	for _, c := range []struct {
		name, prefix string
		id           int64
		ok           bool
	}{
		{"000123456.jpg", "000123456", 123456, true},
		{"000123456.seg.png", "000123456", 123456, true},
		{"dir/000000007.json", "dir/000000007", 7, true},
		{"cat.jpg", "", 0, false},
		{"-12.jpg", "", 0, false},
		{".jpg", "", 0, false},
	} {
		p, id, err := sampleKey(c.name)
		if (err == nil) != c.ok || p != c.prefix || id != c.id {
			t.Errorf("sampleKey(%q) = %q, %d, %v", c.name, p, id, err)
		}
	}
}
