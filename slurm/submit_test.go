package slurm

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// fakeSlurm writes fake sbatch, scontrol and sacct scripts into a temp
// folder and returns a Client that runs them. scontrol prints the next
// line of the file "scontrol.lines" on each call (the last line repeats):
// a JobState/ExitCode pair, INVALID (unknown job), ERR (transient failure)
// or SLEEP (hang).
func fakeSlurm(t *testing.T, scontrolLines []string, sbatchOut, sacctOut string) (*Client, string) {
	t.Helper()
	if _, err := exec.LookPath("bash"); err != nil {
		t.Skip("bash not on PATH")
	}
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o755); err != nil {
			t.Fatal(err)
		}
		return p
	}
	write("scontrol.lines", strings.Join(scontrolLines, "\n")+"\n")
	write("sbatch.out", sbatchOut)
	write("sacct.out", sacctOut)
	sbatch := write("sbatch", `#!/bin/bash
D=$(dirname "$0")
printf '%s\n' "$*" > "$D/sbatch.args"
pwd > "$D/sbatch.pwd"
cat > "$D/sbatch.stdin"
if [ "$(cat "$D/sbatch.out")" = FAIL ]; then echo "sbatch: error: Batch job submission failed: Invalid partition name specified" >&2; exit 1; fi
cat "$D/sbatch.out"
`)
	scontrol := write("scontrol", `#!/bin/bash
D=$(dirname "$0")
echo "$*" >> "$D/scontrol.calls"
n=$(wc -l < "$D/scontrol.calls")
total=$(wc -l < "$D/scontrol.lines")
[ "$n" -le "$total" ] || n=$total
line=$(sed -n "${n}p" "$D/scontrol.lines")
case "$line" in
INVALID) echo "slurm_load_jobs error: Invalid job id specified" >&2; exit 1 ;;
ERR) echo "slurm_load_jobs error: Unable to contact slurm controller (connect failure)" >&2; exit 1 ;;
SLEEP) exec sleep 10 ;;
esac
echo "JobId=$4 JobName=x UserId=root(0) $line RunTime=00:00:01"
`)
	sacct := write("sacct", `#!/bin/bash
D=$(dirname "$0")
echo "$*" > "$D/sacct.args"
if [ "$(cat "$D/sacct.out")" = FAIL ]; then echo "sacct: error: Slurm accounting storage is disabled" >&2; exit 1; fi
cat "$D/sacct.out"
`)
	return &Client{Sbatch: sbatch, Scontrol: scontrol, Sacct: sacct,
		CommandTimeout: 2 * time.Second, PollInterval: 10 * time.Millisecond, GiveUpAfter: 300 * time.Millisecond}, dir
}

func TestSubmitFake(t *testing.T) {
	for _, out := range []string{"4242\n", "4242;localci\n", "sbatch: warning: x\n4242\n"} {
		c, dir := fakeSlurm(t, nil, out, "")
		work := t.TempDir()
		id, err := c.Submit(context.Background(), "#!/bin/bash\necho 'hi'\n", work)
		if err != nil || id != "4242" {
			t.Errorf("sbatch printing %q: Submit = %q, %v", out, id, err)
			continue
		}
		if b, _ := os.ReadFile(filepath.Join(dir, "sbatch.stdin")); string(b) != "#!/bin/bash\necho 'hi'\n" {
			t.Errorf("sbatch read %q on stdin", b)
		}
		if b, _ := os.ReadFile(filepath.Join(dir, "sbatch.args")); strings.TrimSpace(string(b)) != "--parsable" {
			t.Errorf("sbatch args %q", b)
		}
		if b, _ := os.ReadFile(filepath.Join(dir, "sbatch.pwd")); strings.TrimSpace(string(b)) != work {
			t.Errorf("sbatch ran in %q, want %q", b, work)
		}
	}
	c, _ := fakeSlurm(t, nil, "FAIL", "")
	_, err := c.Submit(context.Background(), "x", "")
	var ce *CommandError
	if !errors.As(err, &ce) || !strings.Contains(err.Error(), "Invalid partition name") {
		t.Errorf("failing sbatch: %v, want a *CommandError with sbatch's message", err)
	}
	c, _ = fakeSlurm(t, nil, "Submitted batch job 12\n", "")
	if id, err := c.Submit(context.Background(), "x", ""); err == nil {
		t.Errorf("non-parsable output: Submit = %q, want an error", id)
	}
	c, _ = fakeSlurm(t, nil, "1\n", "")
	c.Sbatch = filepath.Join(t.TempDir(), "no-such-sbatch")
	if _, err := c.Submit(context.Background(), "x", ""); err == nil {
		t.Errorf("missing sbatch: no error")
	}
}

func TestWaitFake(t *testing.T) {
	for _, tc := range []struct {
		name      string
		lines     []string
		sacct     string
		wantCode  int
		wantState string
		wantErr   error // nil, ErrJobUnknown, or errAny
	}{
		{"completed", []string{"JobState=PENDING Reason=None ExitCode=0:0", "JobState=RUNNING ExitCode=0:0",
			"JobState=COMPLETING ExitCode=0:0", "JobState=COMPLETED Reason=None ExitCode=0:0"}, "", 0, "COMPLETED", nil},
		{"failed", []string{"JobState=RUNNING ExitCode=0:0", "JobState=FAILED Reason=NonZeroExitCode ExitCode=3:0"}, "", 3, "FAILED", nil},
		{"signal", []string{"JobState=CANCELLED Reason=None ExitCode=0:15"}, "", 143, "CANCELLED", nil},
		{"cancelled pending", []string{"JobState=CANCELLED Reason=None ExitCode=0:0"}, "", 1, "CANCELLED", nil},
		{"timeout", []string{"JobState=TIMEOUT Reason=TimeLimit ExitCode=0:0"}, "", 1, "TIMEOUT", nil},
		{"oom", []string{"JobState=OUT_OF_MEMORY Reason=OutOfMemory ExitCode=0:125"}, "", 253, "OUT_OF_MEMORY", nil},
		{"transient", []string{"ERR", "ERR", "JobState=COMPLETED ExitCode=0:0"}, "", 0, "COMPLETED", nil},
		{"gone, sacct knows", []string{"JobState=RUNNING ExitCode=0:0", "INVALID"}, "77|FAILED|2:0\n", 2, "FAILED", nil},
		{"gone, sacct cancelled", []string{"INVALID"}, "77|CANCELLED by 0|0:0\n", 1, "CANCELLED", nil},
		{"gone, no sacct", []string{"INVALID"}, "FAIL", 0, "", ErrJobUnknown},
		{"gone, sacct empty", []string{"INVALID"}, "", 0, "", ErrJobUnknown},
		{"gone, sacct running", []string{"INVALID"}, "77|RUNNING|0:0\n", 0, "", ErrJobUnknown},
		{"scontrol down", []string{"ERR"}, "", 0, "", errAny},
		{"scontrol hangs", []string{"SLEEP"}, "", 0, "", errAny},
		{"bad exit code", []string{"JobState=RUNNING ExitCode=0:0", "JobState=COMPLETED ExitCode=zero"}, "", 0, "", errAny},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, _ := fakeSlurm(t, tc.lines, "", tc.sacct)
			if tc.name == "scontrol hangs" {
				c.CommandTimeout = 100 * time.Millisecond
			}
			code, state, err := c.Wait(context.Background(), "77")
			switch {
			case tc.wantErr == nil && err != nil:
				t.Fatalf("Wait: %v", err)
			case tc.wantErr == errAny && err == nil, tc.wantErr == ErrJobUnknown && !errors.Is(err, ErrJobUnknown):
				t.Fatalf("Wait = %d, %q, %v; want error %v", code, state, err, tc.wantErr)
			}
			if code != tc.wantCode || state != tc.wantState {
				t.Errorf("Wait = %d, %q; want %d, %q", code, state, tc.wantCode, tc.wantState)
			}
		})
	}
}

var errAny = errors.New("any error")

func TestWaitCancel(t *testing.T) {
	c, _ := fakeSlurm(t, []string{"JobState=RUNNING ExitCode=0:0"}, "", "")
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, _, err := c.Wait(ctx, "77")
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Wait after the context ended: %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Wait took %v to notice the context", d)
	}
	if _, _, err := c.Wait(context.Background(), "77; rm -rf /"); err == nil {
		t.Errorf("bad job id: no error")
	}
}

func TestParseShowJob(t *testing.T) {
	out := "JobId=10 ArrayJobId=10 JobState=RUNNING ExitCode=0:0\nJobId=11 JobState=FAILED ExitCode=1:0\n"
	st, err := parseShowJob(out, "11")
	if err != nil || st.state != "FAILED" || st.exit != 1 {
		t.Errorf("parseShowJob picked %+v, %v", st, err)
	}
	if _, err := parseShowJob("", "1"); err == nil {
		t.Errorf("empty output: no error")
	}
	if _, err := parseShowJob("JobId=1 JobState=RUNNING", "1"); err == nil {
		t.Errorf("no ExitCode: no error")
	}
	for _, s := range []string{"COMPLETED", "FAILED", "CANCELLED by 0", "CANCELLED+", "timeout", "NODE_FAIL"} {
		if !IsTerminal(s) {
			t.Errorf("IsTerminal(%q) = false", s)
		}
	}
	for _, s := range []string{"PENDING", "RUNNING", "COMPLETING", "REQUEUED", "SUSPENDED", "CONFIGURING", ""} {
		if IsTerminal(s) {
			t.Errorf("IsTerminal(%q) = true", s)
		}
	}
}
