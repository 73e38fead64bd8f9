package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// rankPID finds the pid of the child of launcher whose environment says
// HPCRUN_RANK=rank (Linux /proc); 0 when it is not (yet) there.
func rankPID(launcher, rank int) int {
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// "pid (comm) state ppid ..."; comm may hold spaces, so cut at the last ')'
		f := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
		if len(f) < 2 || f[1] != strconv.Itoa(launcher) {
			continue
		}
		env, _ := os.ReadFile("/proc/" + e.Name() + "/environ")
		for _, kv := range bytes.Split(env, []byte{0}) {
			if string(kv) == "HPCRUN_RANK="+strconv.Itoa(rank) {
				return pid
			}
		}
	}
	return 0
}

// kmeansIteration is the iteration of kmeans/checkpoint/state.json (0 if none).
func kmeansIteration(work string) int {
	b, err := os.ReadFile(filepath.Join(work, "kmeans", "checkpoint", "state.json"))
	if err != nil {
		return 0
	}
	var ck struct {
		State struct {
			Iterations int `json:"iterations"`
		} `json:"state"`
	}
	json.Unmarshal(b, &ck)
	return ck.State.Iterations
}

// TestKillRankMidKMeansThenResume first runs the job uninterrupted (and
// checks its secret stays in the ranks' environment: not on command lines,
// in the output or in any file). Then it SIGKILLs rank 1 of a 3-process job in
// the middle of k-means: every other rank must fail within the timeout (+10
// s) naming rank 1, and the job started again must end with outputs
// byte-identical to an uninterrupted run. SIGTERM to the launcher must end
// the job cleanly too, and resume the same way.
func TestKillRankMidKMeansThenResume(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs the quickstart k-means three times")
	}
	if _, err := os.Stat("/proc/self/environ"); err != nil {
		t.Skip("needs Linux /proc to find the rank processes")
	}
	bin := buildBinary(t)
	dir := t.TempDir()
	cfg := quickstartCopy(t, dir)
	sets := func(work string) []string {
		return []string{"--set", "job.workdir=\"" + work + "\"", "--set", "runtime.timeout=\"4s\"",
			"--set", "kmeans.change_lower_bound=0.0", "--set", "kmeans.max_iter=30", "--only", "kmeans,dedup"}
	}
	ref := filepath.Join(dir, "ref")
	refCmd := exec.Command(bin, append([]string{"run", cfg, "--ranks", "3", "--set", "runtime.block_rows=4096"}, sets(ref)...)...)
	var refOut bytes.Buffer
	refCmd.Stdout, refCmd.Stderr = &refOut, &refOut
	if err := refCmd.Start(); err != nil {
		t.Fatal(err)
	}
	// While it runs: the job secret is in the ranks' environment only,
	// never in a command line.
	var secret string
	var cmdlines [][]byte
	for deadline := time.Now().Add(time.Minute); secret == "" && time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		for r := 0; r < 3; r++ {
			pid := rankPID(refCmd.Process.Pid, r)
			if pid == 0 {
				continue
			}
			env, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/environ")
			for _, kv := range bytes.Split(env, []byte{0}) {
				if v, ok := bytes.CutPrefix(kv, []byte("HPCRUN_JOB_SECRET=")); ok && len(v) > 0 {
					secret = string(v)
				}
			}
			cl, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
			cmdlines = append(cmdlines, cl)
		}
	}
	if err := refCmd.Wait(); err != nil {
		t.Fatalf("uninterrupted run: %v\n%s", err, refOut.String())
	}
	if len(secret) < 32 {
		t.Fatalf("no job secret found in the ranks' environment (%q)", secret)
	}
	for _, cl := range cmdlines {
		if bytes.Contains(cl, []byte(secret)) {
			t.Fatal("the job secret is on a rank's command line")
		}
	}
	if bytes.Contains(refOut.Bytes(), []byte(secret)) {
		t.Fatal("the job secret appears in the job's output")
	}
	filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
		if err == nil && !info.IsDir() && info.Size() < 64<<20 {
			if b, _ := os.ReadFile(p); bytes.Contains(b, []byte(secret)) {
				t.Errorf("the job secret is written in %s", p)
			}
		}
		return nil
	})
	want := outputs(t, ref)
	if len(want) != 5 {
		t.Fatalf("want 5 kmeans/dedup outputs, got %d", len(want))
	}

	for _, how := range []string{"SIGKILL rank 1", "SIGTERM launcher"} {
		t.Run(strings.ReplaceAll(how, " ", "_"), func(t *testing.T) {
			work := filepath.Join(dir, strings.ReplaceAll(how, " ", "_"))
			cmd := exec.Command(bin, append([]string{"run", cfg, "--ranks", "3"}, sets(work)...)...)
			var out bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &out
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			// wait until k-means has checkpointed iteration 2, then strike
			deadline := time.Now().Add(5 * time.Minute)
			for kmeansIteration(work) < 2 {
				select {
				case err := <-done:
					t.Fatalf("the job ended before iteration 2 (%v):\n%s", err, out.String())
				case <-time.After(20 * time.Millisecond):
				}
				if time.Now().After(deadline) {
					cmd.Process.Kill()
					t.Fatalf("no iteration 2 checkpoint:\n%s", out.String())
				}
			}
			struck := time.Now()
			if how == "SIGKILL rank 1" {
				pid := rankPID(cmd.Process.Pid, 1)
				if pid == 0 {
					t.Fatal("rank 1's process not found")
				}
				syscall.Kill(pid, syscall.SIGKILL)
			} else {
				cmd.Process.Signal(syscall.SIGTERM)
			}
			select {
			case err := <-done:
				if err == nil {
					t.Fatalf("the job succeeded after %s:\n%s", how, out.String())
				}
				if how == "SIGKILL rank 1" && !strings.Contains(out.String(), "rank 1") {
					t.Fatalf("no error names rank 1:\n%s", out.String())
				}
				t.Logf("%s: the job ended %v later: %v", how, time.Since(struck).Round(time.Millisecond), err)
			case <-time.After(4*time.Second + 10*time.Second + 5*time.Second):
				cmd.Process.Kill()
				t.Fatalf("the job did not end within timeout + 10 s after %s:\n%s", how, out.String())
			}
			if _, err := os.Stat(filepath.Join(work, "kmeans", "centroids.npy")); err == nil {
				t.Fatal("a final output exists after the interrupted run")
			}
			// start again: it resumes and ends as the uninterrupted run did
			again, err := exec.Command(bin, append([]string{"run", cfg, "--ranks", "3"}, sets(work)...)...).CombinedOutput()
			if err != nil {
				t.Fatalf("restart: %v\n%s", err, again)
			}
			if !strings.Contains(string(again), "resumes from checkpoint") {
				t.Errorf("the restart did not resume from the checkpoint:\n%s", again)
			}
			got := outputs(t, work)
			for name, b := range want {
				if !bytes.Equal(got[name], b) {
					t.Errorf("%s differs from the uninterrupted run", name)
				}
			}
		})
	}
}

// TestFaultEveryStage strikes rank 1 of a 3-process quickstart job at a
// random point of every stage — SIGKILL (a crash) and SIGTERM (a graceful
// stop) — and checks: the job fails within timeout + 10 s, an error names
// rank 1 (for the crash), and the job started again ends with outputs
// byte-identical to an uninterrupted run.
func TestFaultEveryStage(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the quickstart 29 times")
	}
	bin := buildBinary(t)
	dir := t.TempDir()
	cfg := quickstartCopy(t, dir)
	if os.Getenv("HPCRUN_ORT_LIB") == "" {
		lib, _ := filepath.Abs("../../third_party/onnxruntime/libonnxruntime.so.1")
		t.Setenv("HPCRUN_ORT_LIB", lib)
	}
	const timeout = 4 * time.Second
	job := func(work, fault string) (string, time.Duration, error) {
		cmd := exec.Command(bin, "run", cfg, "--ranks", "3", "--set", "job.workdir=\""+work+"\"",
			"--set", "runtime.timeout=\""+timeout.String()+"\"")
		cmd.Env = append(os.Environ(), "HPCRUN_FAULT="+fault)
		out, err := cmd.CombinedOutput()
		// from the fault to the end of the job
		end := time.Now()
		var since time.Duration
		if i := bytes.Index(out, []byte("HPCRUN_FAULT strikes")); i >= 0 {
			line := string(out[i:])
			line = line[strings.Index(line, " at ")+4:]
			if at, perr := time.Parse(time.RFC3339Nano, strings.TrimSpace(strings.SplitN(line, "\n", 2)[0])); perr == nil {
				since = end.Sub(at)
			}
		}
		return string(out), since, err
	}
	ref := filepath.Join(dir, "ref")
	out, _, err := job(ref, "")
	if err != nil {
		t.Fatalf("uninterrupted run: %v\n%s", err, out)
	}
	want := outputs(t, ref)
	t.Logf("uninterrupted: %d outputs", len(want))
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
	for _, stage := range []string{"embed", "kmeans", "dedup", "sims", "prune", "subsample", "zeroshot"} {
		for _, mode := range []string{"kill", "term"} {
			t.Run(stage+"/"+mode, func(t *testing.T) {
				after := time.Duration(rng.IntN(300)) * time.Millisecond
				if stage == "zeroshot" {
					after = 0 // it lasts milliseconds
				}
				work := filepath.Join(dir, stage+"-"+mode)
				out, took, err := job(work, fmt.Sprintf("rank=1,stage=%s,mode=%s,after=%s", stage, mode, after))
				if err == nil {
					t.Fatalf("the job succeeded though rank 1 got SIG%s %v into %s:\n%s", strings.ToUpper(mode), after, stage, out)
				}
				if took == 0 {
					t.Fatalf("the fault never struck:\n%s", out)
				}
				if took > timeout+10*time.Second {
					t.Errorf("the job ended %v after the fault, more than timeout + 10 s", took)
				}
				t.Logf("SIG%s %v into %s: the job ended %v after it", strings.ToUpper(mode), after, stage, took.Round(time.Millisecond))
				if mode == "kill" && !strings.Contains(out, "rank 1") {
					t.Errorf("no error names rank 1:\n%s", out)
				}
				out, _, err = job(work, "")
				if err != nil {
					t.Fatalf("restart: %v\n%s", err, out)
				}
				got := outputs(t, work)
				if len(got) != len(want) {
					t.Errorf("%d outputs after the restart, want %d", len(got), len(want))
				}
				for name, b := range want {
					if !bytes.Equal(got[name], b) {
						t.Errorf("%s differs from the uninterrupted run", name)
					}
				}
			})
		}
	}
}
