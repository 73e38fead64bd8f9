package cuda

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestHostSim compiles the kernels' own CUDA C for the CPU against
// hostsim/hostsim.h (one thread per GPU thread; cp.async and wgmma done
// eagerly or as late as the PTX allows) and runs hostsim/sim.cc, which
// checks top-k, MaxArg and PrefixMax bit for bit on exactly representable
// inputs, and the FFMA versions (1 and 6) on random float32 and float16
// inputs against the fma chain in k order (the CPU backend's arithmetic):
// the sm_80 build runs versions 1-4 (which passed on an H100, so the model
// agrees with the hardware there) and 6, topk_select (shared-memory and
// global paths) and the centroid sums kernels; the sm_90a build version 5.
// Skipped without clang++-19 (failed then with HPCRUN_REQUIRE_CLANG=1).
func TestHostSim(t *testing.T) {
	cxx, err := exec.LookPath("clang++-19")
	if err != nil {
		if os.Getenv("HPCRUN_REQUIRE_CLANG") == "1" {
			t.Fatal("clang++-19 not installed (apt-get install clang-19) and HPCRUN_REQUIRE_CLANG=1")
		}
		t.Skip("clang++-19 not installed: the kernels were not simulated")
	}
	for _, b := range []struct{ name, define string }{{"sm80", ""}, {"sm90a", "-DHPCRUN_SM90A"}} {
		t.Run(b.name, func(t *testing.T) {
			bin := filepath.Join(t.TempDir(), "sim-"+b.name)
			args := []string{"-std=c++20", "-O1", "-pthread", "-ffp-contract=off", "-DHPCRUN_HOST_SIM", "-Wno-unknown-pragmas", "-o", bin, "hostsim/sim.cc"}
			if b.define != "" {
				args = append(args, b.define)
			}
			if out, err := exec.Command(cxx, args...).CombinedOutput(); err != nil {
				t.Fatalf("%s %s: %v\n%s", cxx, strings.Join(args, " "), err, out)
			}
			out, err := exec.Command(bin).CombinedOutput()
			lines := strings.Split(strings.TrimSpace(string(out)), "\n")
			ok := 0
			for _, l := range lines {
				if strings.HasPrefix(l, "ok") {
					ok++
				} else if !strings.HasSuffix(l, " failures") {
					t.Log(l)
				}
			}
			if err != nil {
				t.Fatalf("%s: %v", bin, err)
			}
			if ok == 0 {
				t.Fatal("no case ran")
			}
			t.Logf("%d cases passed: %s", ok, lines[len(lines)-1])
		})
	}
}
