package collective_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"hpcrun/collective"
	"hpcrun/collective/natstest"
)

// The separate-process tests re-execute this test binary as the ranks of a
// job: with COLLECTIVE_TEST_SCENARIO set, TestMain runs helperMain instead of
// the tests. Ranks learn everything else from the environment that Launch
// sets, exactly as hpcrun's own ranks do.
const (
	envScenario = "COLLECTIVE_TEST_SCENARIO" // ops, kill or stop
	envVictim   = "COLLECTIVE_TEST_VICTIM"   // the rank that dies or stops
	envOut      = "COLLECTIVE_TEST_OUT"      // where ranks write what they saw
)

func TestMain(m *testing.M) {
	if s := os.Getenv(envScenario); s != "" {
		os.Exit(helperMain(s))
	}
	os.Exit(m.Run())
}

func helperMain(scenario string) int {
	o, err := collective.OptionsFromEnv(os.Getenv)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	if scenario != "bench" {
		o.MaxPayload = 1 << 20 // keep "above max_payload" small
	} else if kib, _ := strconv.Atoi(os.Getenv("COLLECTIVE_BENCH_CHUNK_KIB")); kib > 0 {
		o.MaxChunk = kib << 10
	}
	ctx := context.Background()
	c, err := collective.Connect(ctx, o)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer c.Close()
	switch scenario {
	case "ops":
		err = natstest.CheckAll(ctx, c, sizesAbove(o.MaxPayload))
	case "bench":
		err = benchMain(ctx, c)
	case "kill", "stop":
		victim, _ := strconv.Atoi(os.Getenv(envVictim))
		err = loopUntilFailure(ctx, c, scenario, victim)
	default:
		err = fmt.Errorf("unknown scenario %q", scenario)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// loopUntilFailure runs collectives until one fails; the victim rank kills
// or stops itself after a few, noting the time in $COLLECTIVE_TEST_OUT/victim.
// Every other rank writes the time and error of its failure to
// $COLLECTIVE_TEST_OUT/rank-N.
func loopUntilFailure(ctx context.Context, c *collective.Comm, scenario string, victim int) error {
	out := os.Getenv(envOut)
	buf := make([]float32, 5000)
	for i := 0; ; i++ {
		if c.Rank() == victim && i == 3 {
			_ = os.WriteFile(filepath.Join(out, "victim"), []byte(strconv.FormatInt(time.Now().UnixNano(), 10)), 0o600)
			sig := syscall.SIGKILL
			if scenario == "stop" {
				sig = syscall.SIGSTOP
			}
			_ = syscall.Kill(os.Getpid(), sig)
		}
		err := collective.Allreduce(ctx, c, buf, collective.Max)
		if err == nil {
			err = c.Barrier(ctx)
		}
		if err != nil {
			note := fmt.Sprintf("%d\n%v", time.Now().UnixNano(), err)
			_ = os.WriteFile(filepath.Join(out, fmt.Sprintf("rank-%d", c.Rank())), []byte(note), 0o600)
			return err
		}
	}
}

func launch(t *testing.T, n int, env []string, timeout time.Duration, url, secret string) (error, string) {
	t.Helper()
	var stderr bytes.Buffer
	l := &collective.Launch{
		Ranks: n, Argv: []string{os.Args[0]}, Env: append(os.Environ(), env...),
		Timeout: timeout, Grace: time.Second, URL: url, Secret: secret,
		Stderr: &stderr,
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	err := l.Run(ctx)
	return err, stderr.String()
}

func TestProcessesOps(t *testing.T) {
	for _, server := range []string{"embedded", "external"} {
		for n := 1; n <= 4; n++ {
			t.Run(fmt.Sprintf("%s/ranks=%d", server, n), func(t *testing.T) {
				var url, secret string
				if server == "external" {
					srv := natstest.RunExternalServer(t, 1<<20)
					url, secret = srv.URL, srv.Secret
				}
				err, stderr := launch(t, n, []string{envScenario + "=ops"}, 20*time.Second, url, secret)
				if err != nil {
					t.Fatalf("%v\n%s", err, stderr)
				}
			})
		}
	}
}

// Killing one rank's process fails every other rank within the timeout,
// naming it, and the job exits non-zero naming it too. Rank 0 hosts the
// embedded server: when it dies the others lose their connection at once.
func TestProcessKilled(t *testing.T) {
	const timeout = 2 * time.Second
	for _, victim := range []int{2, 0} {
		t.Run(fmt.Sprintf("rank=%d", victim), func(t *testing.T) {
			out := t.TempDir()
			env := []string{envScenario + "=kill", envVictim + "=" + strconv.Itoa(victim), envOut + "=" + out}
			err, stderr := launch(t, 4, env, timeout, "", "")
			t.Logf("launch: %v\n%s", err, stderr)
			var le *collective.LaunchError
			if !errors.As(err, &le) {
				t.Fatalf("launch error %v, want a LaunchError", err)
			}
			first := le.Failed[0].String()
			if !strings.HasPrefix(first, fmt.Sprintf("rank %d (pid ", victim)) || !strings.HasSuffix(first, "exited: signal: killed") {
				t.Errorf("first failure %q, want rank %d killed", first, victim)
			}
			if len(le.Failed) != 4 {
				t.Errorf("%d ranks failed, want 4: %v", len(le.Failed), err)
			}
			var others []int
			for r := range 4 {
				if r != victim {
					others = append(others, r)
				}
			}
			checkVictimNamed(t, out, victim, others, timeout)
		})
	}
}

// A rank that stops answering (SIGSTOP: alive, but silent) fails the
// others within the timeout, naming it; the launcher kills it afterwards.
func TestProcessStopped(t *testing.T) {
	const timeout = 2 * time.Second
	out := t.TempDir()
	err, stderr := launch(t, 3, []string{envScenario + "=stop", envVictim + "=1", envOut + "=" + out}, timeout, "", "")
	t.Logf("launch: %v\n%s", err, stderr)
	var le *collective.LaunchError
	if !errors.As(err, &le) {
		t.Fatalf("launch error %v, want a LaunchError", err)
	}
	if !strings.Contains(err.Error(), "rank 1 (pid ") || !strings.Contains(err.Error(), "killed by the launcher") {
		t.Errorf("launch error %q does not say rank 1 was killed by the launcher", err)
	}
	checkVictimNamed(t, out, 1, []int{0, 2}, timeout)
}

func checkVictimNamed(t *testing.T, out string, victim int, others []int, timeout time.Duration) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(out, "victim"))
	if err != nil {
		t.Fatal(err)
	}
	died, _ := strconv.ParseInt(string(b), 10, 64)
	for _, r := range others {
		b, err := os.ReadFile(filepath.Join(out, fmt.Sprintf("rank-%d", r)))
		if err != nil {
			t.Errorf("rank %d: %v", r, err)
			continue
		}
		when, msg, _ := strings.Cut(string(b), "\n")
		at, _ := strconv.ParseInt(when, 10, 64)
		after := time.Duration(at - died)
		t.Logf("rank %d failed %v after rank %d died: %s", r, after, victim, msg)
		answer, unreachable := fmt.Sprintf("rank %d did not answer", victim), fmt.Sprintf("rank %d is unreachable", victim)
		if !strings.Contains(msg, answer) && !strings.Contains(msg, unreachable) {
			t.Errorf("rank %d: error %q says neither %q nor %q", r, msg, answer, unreachable)
		}
		if after > timeout {
			t.Errorf("rank %d failed %v after rank %d died, more than the timeout %v", r, after, victim, timeout)
		}
	}
}

// TestBenchProcesses is not a test but the measurement behind `hpcrun
// bench`, with ranks as separate processes: set COLLECTIVE_BENCH to a list
// of sizes in MiB (e.g. "1,16,64,256") and COLLECTIVE_BENCH_RANKS to the
// rank counts (default "2,4"). Rank 0 prints one JSON Measurement per line;
// the test logs a table of the best of COLLECTIVE_BENCH_REPEAT (default 3)
// runs of each. COLLECTIVE_BENCH_CHUNK_KIB sets Options.MaxChunk.
func TestBenchProcesses(t *testing.T) {
	sizes := os.Getenv("COLLECTIVE_BENCH")
	if sizes == "" {
		t.Skip("set COLLECTIVE_BENCH=1,16,64 (MiB) to measure bandwidth")
	}
	ranks := os.Getenv("COLLECTIVE_BENCH_RANKS")
	if ranks == "" {
		ranks = "2,4"
	}
	for f := range strings.SplitSeq(ranks, ",") {
		n, err := strconv.Atoi(f)
		if err != nil {
			t.Fatal(err)
		}
		var out bytes.Buffer
		l := &collective.Launch{
			Ranks: n, Argv: []string{os.Args[0]}, Env: append(os.Environ(), envScenario+"=bench"),
			Timeout: time.Minute, Stdout: &out, Stderr: os.Stderr,
		}
		if err := l.Run(context.Background()); err != nil {
			t.Fatal(err)
		}
		best := map[string]collective.Measurement{}
		var keys []string
		for line := range strings.SplitSeq(strings.TrimSpace(out.String()), "\n") {
			var m collective.Measurement
			if err := json.Unmarshal([]byte(line), &m); err != nil {
				t.Fatalf("%q: %v", line, err)
			}
			k := fmt.Sprintf("%s/%d", m.Op, m.Bytes)
			if _, ok := best[k]; !ok {
				keys = append(keys, k)
			}
			if m.GBps > best[k].GBps {
				best[k] = m
			}
		}
		for _, k := range keys {
			if m := best[k]; m.Op == "allreduce" {
				p := best[fmt.Sprintf("pubsub/%d", m.Bytes)]
				t.Logf("ranks=%d bytes=%4dMiB  allreduce busbw %.3f GB/s  raw pubsub %.3f GB/s  ratio %3.0f%%",
					n, m.Bytes>>20, m.GBps, p.GBps, 100*m.GBps/p.GBps)
			}
		}
	}
}

// benchMain is rank code of TestBenchProcesses: what `hpcrun bench --ops
// pubsub,allreduce` does.
func benchMain(ctx context.Context, c *collective.Comm) error {
	repeat := 3
	if s := os.Getenv("COLLECTIVE_BENCH_REPEAT"); s != "" {
		repeat, _ = strconv.Atoi(s)
	}
	enc := json.NewEncoder(os.Stdout)
	for f := range strings.SplitSeq(os.Getenv("COLLECTIVE_BENCH"), ",") {
		mib, err := strconv.Atoi(f)
		if err != nil {
			return err
		}
		size := mib << 20
		iters := max(2, (64<<20)/size)
		for range repeat {
			p, err := collective.BenchPubSub(ctx, c, size, iters)
			if err != nil {
				return err
			}
			a, err := collective.BenchAllreduce(ctx, c, size, iters)
			if err != nil {
				return err
			}
			if c.Rank() == 0 {
				_ = enc.Encode(p)
				_ = enc.Encode(a)
			}
		}
	}
	return nil
}
