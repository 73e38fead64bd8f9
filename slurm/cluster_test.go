package slurm

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

// The tests in this file submit real jobs to a Slurm cluster: the one-node
// cluster of ../shared/slurm/start-local-slurm.sh (relative to the
// repository root), which the Makefile starts before the tests. With
// HPCRUN_TEST_SLURM=1 the first test runs the start script itself (it is
// idempotent; it needs root). Without sbatch or a responding slurmctld
// they skip.

var (
	clusterOnce sync.Once
	clusterSkip string // why cluster tests skip ("" = cluster ready)
	clusterErr  error  // HPCRUN_TEST_SLURM=1 and the start script failed
)

func startScript() string {
	if p := os.Getenv("HPCRUN_SLURM_START_SCRIPT"); p != "" {
		return p
	}
	return filepath.Join("..", "..", "shared", "slurm", "start-local-slurm.sh")
}

func needCluster(t *testing.T) {
	t.Helper()
	clusterOnce.Do(func() {
		if os.Getenv("HPCRUN_TEST_SLURM") == "1" {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
			defer cancel()
			out, err := exec.CommandContext(ctx, "bash", startScript()).CombinedOutput()
			if err != nil {
				clusterErr = errors.New("HPCRUN_TEST_SLURM=1 but " + startScript() + " failed: " + err.Error() + "\n" + string(out))
				return
			}
		}
		if _, err := exec.LookPath("sbatch"); err != nil {
			clusterSkip = "sbatch not on PATH (no Slurm; HPCRUN_TEST_SLURM=1 starts the local test cluster)"
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		out, err := exec.CommandContext(ctx, "scontrol", "ping").CombinedOutput()
		if err != nil || !strings.Contains(string(out), "is UP") {
			clusterSkip = "slurmctld not responding to scontrol ping (start ../shared/slurm/start-local-slurm.sh or set HPCRUN_TEST_SLURM=1)"
		}
	})
	if clusterErr != nil {
		t.Fatal(clusterErr)
	}
	if clusterSkip != "" {
		t.Skip(clusterSkip)
	}
}

// clusterJob renders a 4-task script whose tasks run bash -c body in a
// work folder with awkward characters, submits it and waits.
func clusterJob(t *testing.T, body string) (work, jobID string, code int, state string) {
	t.Helper()
	work = filepath.Join(t.TempDir(), `work dir "it's" #1`)
	if err := os.Mkdir(work, 0o755); err != nil {
		t.Fatal(err)
	}
	script, err := Render(ScriptOptions{
		JobName:       "hpcrun-test " + t.Name(),
		Nodes:         1,
		NTasksPerNode: 4,
		Time:          "00:05:00",
		WorkDir:       work,
		Command:       []string{"bash", "-c", body},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := &Client{CommandTimeout: 30 * time.Second, PollInterval: 500 * time.Millisecond}
	jobID, err = c.Submit(ctx, script, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("job %s", jobID)
	code, state, err = c.Wait(ctx, jobID)
	if err != nil {
		t.Fatalf("Wait(%s): %v", jobID, err)
	}
	return work, jobID, code, state
}

func TestClusterFourTasks(t *testing.T) {
	needCluster(t)
	t.Parallel()
	// Each task records its rank and a digest of the job secret.
	work, jobID, code, state := clusterJob(t,
		`printf '%s %s %s\n' "$SLURM_PROCID" "${#HPCRUN_JOB_SECRET}" "$(printf %s "$HPCRUN_JOB_SECRET" | sha256sum | cut -c1-16)" > "rank.$SLURM_PROCID"`)
	if code != 0 || state != "COMPLETED" {
		t.Fatalf("job %s: exit %d, state %s; want 0, COMPLETED", jobID, code, state)
	}
	files, _ := filepath.Glob(filepath.Join(work, "rank.*"))
	sort.Strings(files)
	if len(files) != 4 {
		t.Fatalf("%d rank files, want 4: %q", len(files), files)
	}
	var digest string
	for i, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		fields := strings.Fields(string(b))
		if len(fields) != 3 || fields[0] != string(rune('0'+i)) || fields[1] != "64" {
			t.Errorf("%s: %q, want rank %d and a 64-character secret", filepath.Base(f), b, i)
			continue
		}
		if digest == "" {
			digest = fields[2]
		} else if fields[2] != digest {
			t.Errorf("%s: the ranks saw different secrets", filepath.Base(f))
		}
	}
	log, err := os.ReadFile(filepath.Join(work, "slurm-"+jobID+".out"))
	if err != nil {
		t.Fatalf("job output under the work dir: %v", err)
	}
	if !strings.Contains(string(log), "hpcrun: job "+jobID+" ") {
		t.Errorf("job output lacks the start line:\n%s", log)
	}
	if regexp.MustCompile(`[0-9a-f]{64}`).Match(log) {
		t.Errorf("job output holds something like the secret:\n%s", log)
	}
	fi, err := os.Stat(filepath.Join(work, "rank.0"))
	if err == nil && fi.Mode().Perm()&0o077 != 0 {
		t.Errorf("rank.0 has mode %v; umask 077 not in effect", fi.Mode().Perm())
	}
}

// TestClusterTaskFails: task 2 exits 3, --kill-on-bad-exit ends the
// others at once, and the job fails. The job's exit status is srun's, the
// highest of its tasks' statuses, so the SIGTERM that ended the other
// tasks (143) usually outranks the 3; srun's log names task 2 and its 3.
func TestClusterTaskFails(t *testing.T) {
	needCluster(t)
	t.Parallel()
	start := time.Now()
	work, jobID, code, state := clusterJob(t, `if [ "$SLURM_PROCID" = 2 ]; then exit 3; fi; sleep 60`)
	if code == 0 || state != "FAILED" {
		t.Fatalf("job %s: exit %d, state %s; want non-zero, FAILED", jobID, code, state)
	}
	if d := time.Since(start); d > 45*time.Second {
		t.Errorf("job took %v: the other tasks were not killed when task 2 failed", d)
	}
	log, err := os.ReadFile(filepath.Join(work, "slurm-"+jobID+".err"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(log), "task 2: Exited with exit code 3") {
		t.Errorf("srun's log does not name task 2's exit code 3:\n%s", log)
	}
	t.Logf("job %s: exit %d, state %s", jobID, code, state)
}

func TestClusterUnknownJob(t *testing.T) {
	needCluster(t)
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, _, err := Wait(ctx, "987654321")
	if !errors.Is(err, ErrJobUnknown) {
		t.Fatalf("Wait for a job that never existed: %v, want ErrJobUnknown", err)
	}
}
