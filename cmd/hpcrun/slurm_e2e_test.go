package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"hpcrun/synth"
)

// slurmUp skips unless a Slurm controller answers (make test starts the
// local one-node cluster); with HPCRUN_REQUIRE_SLURM=1 it fails instead.
func slurmUp(t *testing.T) {
	t.Helper()
	why := ""
	if _, err := exec.LookPath("sbatch"); err != nil {
		why = "sbatch not on PATH"
	} else {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		out, err := exec.CommandContext(ctx, "scontrol", "ping").CombinedOutput()
		if err != nil || !strings.Contains(string(out), "UP") {
			why = "no Slurm controller answers `scontrol ping`"
		}
	}
	if why == "" {
		return
	}
	if os.Getenv("HPCRUN_REQUIRE_SLURM") == "1" {
		t.Fatal(why + " (start it with ../shared/slurm/start-local-slurm.sh)")
	}
	t.Skip(why + " (start it with ../shared/slurm/start-local-slurm.sh)")
}

// quickstartCopy lays out DIR/configs/quickstart.toml and DIR/data/quickstart
// (the synthetic world), so the config's relative paths resolve inside DIR.
func quickstartCopy(t *testing.T, dir string) string {
	t.Helper()
	b, err := os.ReadFile("../../configs/quickstart.toml")
	if err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "configs", "quickstart.toml")
	os.MkdirAll(filepath.Dir(cfg), 0o755)
	if err := os.WriteFile(cfg, b, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := synth.Write(filepath.Join(dir, "data", "quickstart"), synth.Presets["quickstart"], 333); err != nil {
		t.Fatal(err)
	}
	return cfg
}

// outputs maps every .npy, .tar and result file under dir to its bytes
// (report.json and files holding timings are left out).
func outputs(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		switch filepath.Ext(p) {
		case ".npy", ".tar":
		default:
			if filepath.Base(p) != "accuracy.json" {
				return nil
			}
		}
		rel, _ := filepath.Rel(dir, p)
		if strings.Contains(rel, "checkpoint") || strings.HasPrefix(filepath.Base(rel), ".") {
			return nil
		}
		b, err := os.ReadFile(p)
		out[rel] = b
		return err
	})
	return out
}

// TestSlurmQuickstartMatchesLocal submits the quickstart as a real 4-task
// Slurm job (`hpcrun sbatch --submit --wait`) and checks its outputs are
// byte-identical to a local one-rank run; then a job whose rank 2 fails
// must make --wait exit non-zero.
func TestSlurmQuickstartMatchesLocal(t *testing.T) {
	slurmUp(t)
	bin := buildBinary(t)
	dir := t.TempDir()
	os.Chmod(dir, 0o755)
	cfg := quickstartCopy(t, dir)
	// the job runs from its workdir in a temp folder: point it at the repo's ONNX Runtime
	if os.Getenv("HPCRUN_ORT_LIB") == "" {
		lib, _ := filepath.Abs("../../third_party/onnxruntime/libonnxruntime.so.1")
		t.Setenv("HPCRUN_ORT_LIB", lib)
	}
	run := func(timeout time.Duration, args ...string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		cmd := exec.CommandContext(ctx, bin, args...)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		err := cmd.Run()
		return out.String(), err
	}
	local := filepath.Join(dir, "runs", "local")
	if out, err := run(10*time.Minute, "run", cfg, "--ranks", "1", "--set", "job.workdir=\""+local+"\""); err != nil {
		t.Fatalf("local run: %v\n%s", err, out)
	}
	job := filepath.Join(dir, "runs", "slurm")
	out, err := run(15*time.Minute, "sbatch", cfg, "--ntasks-per-node", "4", "--time", "00:15:00", "--submit", "--wait",
		"--set", "job.workdir=\""+job+"\"")
	if err != nil {
		logs, _ := filepath.Glob(filepath.Join(job, "slurm-*.err"))
		var tail []byte
		if len(logs) > 0 {
			tail, _ = os.ReadFile(logs[0])
		}
		t.Fatalf("sbatch --submit --wait: %v\n%s\njob stderr:\n%s", err, out, tail)
	}
	want, got := outputs(t, local), outputs(t, job)
	if len(want) < 5 {
		t.Fatalf("the local run wrote only %d outputs", len(want))
	}
	var names []string
	for n := range want {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if g, ok := got[n]; !ok {
			t.Errorf("%s: missing from the Slurm job's outputs", n)
		} else if !bytes.Equal(g, want[n]) {
			t.Errorf("%s: differs between the 4-rank Slurm job and the local 1-rank run", n)
		}
	}
	for n := range got {
		if _, ok := want[n]; !ok {
			t.Errorf("%s: only in the Slurm job's outputs", n)
		}
	}
	t.Logf("%d outputs byte-identical", len(want))

	// The script made the job secret (64 hex digits) at run time: it must not
	// appear in the job's output files (which slurmd creates world-readable).
	hex64 := regexp.MustCompile(`[0-9a-f]{64}`)
	logs, _ := filepath.Glob(filepath.Join(job, "slurm-*"))
	if len(logs) != 2 {
		t.Fatalf("want the job's .out and .err, got %v", logs)
	}
	for _, l := range logs {
		b, _ := os.ReadFile(l)
		if hex64.Match(b) || bytes.Contains(b, []byte("HPCRUN_JOB_SECRET=")) {
			t.Errorf("%s may hold the job secret:\n%s", l, b)
		}
	}

	// A job whose rank 2 fails: --wait exits non-zero and names the job.
	t.Setenv("HPCRUN_FAULT", "rank=2,stage=kmeans")
	bad := filepath.Join(dir, "runs", "fail")
	out, err = run(10*time.Minute, "sbatch", cfg, "--ntasks-per-node", "4", "--time", "00:10:00", "--submit", "--wait",
		"--set", "job.workdir=\""+bad+"\"")
	if err == nil || !strings.Contains(out, "ended FAILED") {
		t.Fatalf("a job with a failing rank: err %v\n%s", err, out)
	}
}

// TestSlurmBenchPerRankTable runs `hpcrun bench` as a 4-task Slurm job
// (`hpcrun sbatch --bench`): rank 0 prints a line per rank and the
// min/median/max summary into the job's output, and writes the JSON.
func TestSlurmBenchPerRankTable(t *testing.T) {
	slurmUp(t)
	bin := buildBinary(t)
	dir := t.TempDir()
	os.Chmod(dir, 0o755)
	work := filepath.Join(dir, "work")
	cfg := writeConfig(t, dir, "[job]\nname = \"bench\"\nworkdir = \""+work+"\"\n")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, "sbatch", cfg, "--ntasks-per-node", "4", "--time", "00:10:00",
		"--bench", "peak,maxarg", "--bench-args", "--nq 256 --nb 4096 --dim 64 --dtype float32", "--submit", "--wait").CombinedOutput()
	if err != nil {
		t.Fatalf("bench job: %v\n%s", err, out)
	}
	id := strings.TrimSpace(strings.SplitN(string(out), "\n", 2)[0])
	table, err := os.ReadFile(filepath.Join(work, "slurm-"+id+".out"))
	if err != nil {
		t.Fatal(err)
	}
	for r := 0; r < 4; r++ {
		if !strings.Contains(string(table), fmt.Sprintf("  maxarg  hpcrun     %d  float32", r)) {
			t.Errorf("no maxarg line for rank %d:\n%s", r, table)
		}
	}
	if !strings.Contains(string(table), "median") || !strings.Contains(string(table), "slowest") {
		t.Errorf("no min/median/max summary:\n%s", table)
	}
	var ms []Measurement
	b, err := os.ReadFile(filepath.Join(work, "bench-"+id+".json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &ms); err != nil || len(ms) != 8 {
		t.Fatalf("bench JSON: %d measurements, %v", len(ms), err)
	}
	t.Logf("job %s:\n%s", id, table)
}
