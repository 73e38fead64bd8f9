package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// netHosts builds n "hosts": network namespaces hpcN-<id>-r joined by veth
// pairs to a bridge in a hub namespace, host r at 10.211.<id>.(r+1)/24.
// Only these namespaces' addresses are used. It returns the namespace
// names and the address of each; the cleanup deletes them.
func netHosts(t *testing.T, n int) ([]string, []string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("network namespaces need root")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("iproute2 (ip) not installed")
	}
	id := os.Getpid() % 200
	ip := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v %s", strings.Join(args, " "), err, out)
		}
	}
	hub := fmt.Sprintf("hpcnh-%d", id)
	if out, err := exec.Command("ip", "netns", "add", hub).CombinedOutput(); err != nil {
		t.Skipf("cannot create network namespaces here: %v %s", err, out)
	}
	var names, addrs []string
	t.Cleanup(func() {
		for _, ns := range append(names, hub) {
			exec.Command("ip", "netns", "del", ns).Run()
		}
	})
	ip("-n", hub, "link", "add", "br0", "type", "bridge")
	ip("-n", hub, "link", "set", "br0", "up")
	for r := 0; r < n; r++ {
		ns := fmt.Sprintf("hpcn%d-%d", r, id)
		names = append(names, ns)
		addrs = append(addrs, fmt.Sprintf("10.211.%d.%d", id, r+1))
		ip("netns", "add", ns)
		ip("-n", ns, "link", "set", "lo", "up")
		ip("-n", hub, "link", "add", "p"+strconv.Itoa(r), "type", "veth", "peer", "name", "eth0", "netns", ns)
		ip("-n", hub, "link", "set", "p"+strconv.Itoa(r), "master", "br0", "up")
		ip("-n", ns, "addr", "add", addrs[r]+"/24", "dev", "eth0")
		ip("-n", ns, "link", "set", "eth0", "up")
	}
	return names, addrs
}

// TestSeveralHostsLinkCut runs a 3-rank job with one rank per network
// namespace, rank 0's embedded NATS server reached over the veth address;
// then cuts rank 2's link mid-k-means: the job must fail cleanly (every
// rank exits non-zero) within the timeout, naming rank 2.
func TestSeveralHostsLinkCut(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the quickstart k-means across network namespaces")
	}
	names, addrs := netHosts(t, 3)
	bin := buildBinary(t)
	dir := t.TempDir()
	cfg := quickstartCopy(t, dir)
	work := filepath.Join(dir, "work")
	const timeout = 4 * time.Second
	secret := "netns-test-secret-0123456789abcdef"
	type rank struct {
		cmd  *exec.Cmd
		out  bytes.Buffer
		done chan error
	}
	ranks := make([]*rank, 3)
	for r := range ranks {
		rk := &rank{done: make(chan error, 1)}
		rk.cmd = exec.Command("ip", "netns", "exec", names[r], bin, "run", cfg,
			"--set", "job.workdir=\""+work+"\"", "--set", "runtime.timeout=\""+timeout.String()+"\"",
			"--set", "kmeans.change_lower_bound=0.0", "--set", "kmeans.max_iter=40", "--only", "kmeans")
		rk.cmd.Env = append(os.Environ(), "HPCRUN_RANK="+strconv.Itoa(r), "HPCRUN_SIZE=3", "HPCRUN_JOB_ID=netns",
			"HPCRUN_JOB_SECRET="+secret, "HPCRUN_HOST0="+addrs[0], "HPCRUN_TIMEOUT="+timeout.String())
		rk.cmd.Stdout, rk.cmd.Stderr = &rk.out, &rk.out
		if err := rk.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		go func() { rk.done <- rk.cmd.Wait() }()
		ranks[r] = rk
	}
	defer func() {
		for _, rk := range ranks {
			rk.cmd.Process.Kill()
		}
	}()
	for deadline := time.Now().Add(5 * time.Minute); kmeansIteration(work) < 2; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no iteration 2 checkpoint; rank 0 said:\n%s", ranks[0].out.String())
		}
		select {
		case err := <-ranks[0].done:
			t.Fatalf("rank 0 ended before iteration 2 (%v):\n%s", err, ranks[0].out.String())
		default:
		}
	}
	if !strings.Contains(ranks[0].out.String(), addrs[0]) {
		t.Errorf("rank 0's server is not on its veth address %s:\n%s", addrs[0], ranks[0].out.String())
	}
	cut := time.Now()
	if out, err := exec.Command("ip", "-n", names[2], "link", "set", "eth0", "down").CombinedOutput(); err != nil {
		t.Fatalf("cutting the link: %v %s", err, out)
	}
	for r, rk := range ranks {
		select {
		case err := <-rk.done:
			if err == nil {
				t.Errorf("rank %d succeeded after rank 2's link was cut", r)
			}
			t.Logf("rank %d ended %v after the cut: %v", r, time.Since(cut).Round(time.Millisecond), err)
		case <-time.After(timeout + 10*time.Second):
			t.Fatalf("rank %d still running %v after the cut:\n%s", r, timeout+10*time.Second, rk.out.String())
		}
	}
	for r := 0; r < 2; r++ {
		if !strings.Contains(ranks[r].out.String(), "rank 2") {
			t.Errorf("rank %d's error does not name rank 2:\n%s", r, ranks[r].out.String())
		}
	}
	if _, err := os.Stat(filepath.Join(work, "kmeans", "centroids.npy")); err == nil {
		t.Error("final k-means outputs exist after the failed job")
	}
}
