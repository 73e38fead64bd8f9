package cuda

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// TestPTXAssemble assembles every embedded module with NVIDIA's ptxas, as
// the driver's JIT does on a GPU: the sm_80 modules for sm_80 and sm_90,
// the sm_90a ones (wgmma) for sm_90a. Without a GPU this is the check that
// the PTX is valid for the real assembler (clang emits inline asm
// unchecked), that no kernel spills or uses a stack, that ptxas did not
// serialise the wgmma pipeline (its "Potential Performance Loss" note), and
// that versions 2-4 and 6 fit two 256-thread blocks per SM (at most 128
// registers). ptxas comes from scripts/deps.sh
// (third_party/ptxas/ptxas), HPCRUN_PTXAS or PATH; without it the test
// skips (fails with HPCRUN_REQUIRE_PTXAS=1).
func TestPTXAssemble(t *testing.T) {
	ptxas := findPTXAS()
	if ptxas == "" {
		if os.Getenv("HPCRUN_REQUIRE_PTXAS") == "1" {
			t.Fatal("ptxas not found (scripts/deps.sh fetches it into third_party/ptxas) and HPCRUN_REQUIRE_PTXAS=1")
		}
		t.Skip("ptxas not found: the PTX was not assembled (scripts/deps.sh fetches it; or set HPCRUN_PTXAS)")
	}
	ver, _ := exec.Command(ptxas, "--version").CombinedOutput()
	t.Logf("%s: %s", ptxas, lastLine(string(ver)))
	dir := t.TempDir()
	for _, m := range ptxModules {
		src, err := ptxSource(m.file)
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(dir, m.file)
		if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
		archs := []string{"sm_80", "sm_90"}
		if m.arch != "" {
			archs = []string{m.arch}
		}
		for _, arch := range archs {
			out, err := exec.Command(ptxas, "-arch="+arch, "-v", path, "-o", filepath.Join(dir, "out.cubin")).CombinedOutput()
			if err != nil {
				t.Errorf("ptxas -arch=%s %s: %v\n%s", arch, m.file, err, out)
				continue
			}
			kernels, notes := parsePTXAS(string(out))
			for _, n := range notes {
				t.Errorf("ptxas -arch=%s %s: %s", arch, m.file, n)
			}
			for _, name := range m.entries {
				k, ok := kernels[name]
				switch {
				case !ok:
					t.Errorf("ptxas -arch=%s %s: no report for %s", arch, m.file, name)
				case k.spill != 0 || k.stack != 0:
					t.Errorf("%s (%s): %d bytes of spill stores, %d bytes of stack", name, arch, k.spill, k.stack)
				case k.regs > 128 && twoBlocksPerSM(name):
					t.Errorf("%s (%s): %d registers: two 256-thread blocks per SM need at most 128", name, arch, k.regs)
				}
				t.Logf("%-26s %-6s %3d registers, %6d bytes static smem", name, arch, k.regs, k.smem)
			}
		}
	}
}

// twoBlocksPerSM reports the kernels meant to run two 256-thread blocks per
// SM: tensor-core versions 2-4 and the FFMA version 6.
func twoBlocksPerSM(name string) bool {
	for _, v := range []string{"_kernel2_", "_kernel3_", "_kernel4_", "_kernel6_"} {
		if strings.Contains(name, v) && !strings.HasPrefix(name, "centroid_sums") {
			return true
		}
	}
	return false
}

func findPTXAS() string {
	if p := os.Getenv("HPCRUN_PTXAS"); p != "" {
		return p
	}
	if p, err := filepath.Abs("../../third_party/ptxas/ptxas"); err == nil {
		if st, err := os.Stat(p); err == nil && st.Mode()&0o111 != 0 {
			return p
		}
	}
	if p, err := exec.LookPath("ptxas"); err == nil {
		return p
	}
	return ""
}

type ptxasKernel struct{ regs, spill, stack, smem int }

var (
	rePTXASEntry = regexp.MustCompile(`Compiling entry function '(\w+)'`)
	rePTXASFrame = regexp.MustCompile(`(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads`)
	rePTXASRegs  = regexp.MustCompile(`Used (\d+) registers(?:, (\d+) bytes smem)?`)
)

// parsePTXAS reads ptxas -v's report: per kernel its registers, spills,
// stack and static shared memory; and every warning or performance note.
func parsePTXAS(out string) (map[string]ptxasKernel, []string) {
	kernels := map[string]ptxasKernel{}
	var notes []string
	cur := ""
	atoi := func(s string) int { n, _ := strconv.Atoi(s); return n }
	for _, line := range strings.Split(out, "\n") {
		if m := rePTXASEntry.FindStringSubmatch(line); m != nil {
			cur = m[1]
			kernels[cur] = ptxasKernel{}
			continue
		}
		k := kernels[cur]
		if m := rePTXASFrame.FindStringSubmatch(line); m != nil && cur != "" {
			k.stack, k.spill = atoi(m[1]), atoi(m[2])+atoi(m[3])
			kernels[cur] = k
		} else if m := rePTXASRegs.FindStringSubmatch(line); m != nil && cur != "" {
			k.regs, k.smem = atoi(m[1]), atoi(m[2])
			kernels[cur] = k
		} else if strings.Contains(line, "warning") || strings.Contains(line, "Performance Loss") || strings.Contains(line, "serialized") {
			notes = append(notes, fmt.Sprintf("%s: %s", cur, strings.TrimSpace(line)))
		}
	}
	return kernels, notes
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}
