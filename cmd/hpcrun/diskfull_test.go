package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"hpcrun/dataset"
)

// TestDiskFull runs k-means and dedup with the workdir on a tmpfs too small
// for their outputs: the run fails with a clear error, leaves no final
// output behind; after the tmpfs grows, the rerun completes.
func TestDiskFull(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting a tmpfs needs root")
	}
	dir, world := tinyWorld(t)
	mnt := filepath.Join(dir, "small")
	os.MkdirAll(mnt, 0o755)
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", mnt).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs here: %v %s", err, out)
	}
	defer exec.Command("umount", "-l", mnt).Run()
	work := filepath.Join(mnt, "work")
	cfg := writeConfig(t, dir, tinyConfig(world, work)+`
[kmeans]
dataset = "laion"
k = 8
[dedup]
eps = 0.124
`)
	code, out := run(t, "run", cfg, "--ranks", "1")
	if code != 1 || !strings.Contains(out, "no space left on device") {
		t.Fatalf("disk full: exit %d, want 1 and a 'no space left on device' error:\n%s", code, out)
	}
	first := strings.SplitN(out, "\n", 2)[0]
	t.Logf("first line: %s", first)
	if !strings.Contains(first, work) {
		t.Errorf("the first error line does not name the file: %s", first)
	}
	// the stage that failed left none of its outputs; what exists is whole
	for _, f := range []string{"dedup/keep_ids.npy", "dedup/remove_ids.npy", "dedup/stats.json", "report.json"} {
		if _, err := os.Stat(filepath.Join(work, f)); err == nil {
			t.Errorf("%s exists after the failed run", f)
		}
	}
	filepath.Walk(work, func(p string, info os.FileInfo, err error) error {
		if err == nil && !info.IsDir() && filepath.Ext(p) == ".npy" && !strings.Contains(p, ".parts") && !strings.Contains(p, "shuffle") {
			if _, err := dataset.HeaderOf(p); err != nil {
				t.Errorf("a broken output survived: %v", err)
			}
		}
		if err == nil && strings.Contains(filepath.Base(p), ".tmp-") {
			t.Errorf("temp file left: %s", p)
		}
		return nil
	})
	if out, err := exec.Command("mount", "-o", "remount,size=64m", mnt).CombinedOutput(); err != nil {
		t.Fatalf("remount: %v %s", err, out)
	}
	if code, out := run(t, "run", cfg, "--ranks", "1"); code != 0 {
		t.Fatalf("rerun after freeing space: exit %d\n%s", code, out)
	}
	for _, f := range []string{"kmeans/centroids.npy", "dedup/keep_ids.npy", "report.json"} {
		if _, err := os.Stat(filepath.Join(work, f)); err != nil {
			t.Errorf("%s missing after the rerun: %v", f, err)
		}
	}
}
