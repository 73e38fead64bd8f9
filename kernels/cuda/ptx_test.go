package cuda

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// staticSharedLimit is the static shared memory a kernel may declare
// (48 KiB on every GPU since sm_20; more needs dynamic shared memory and an
// opt-in attribute, which these kernels do not use).
const staticSharedLimit = 48 << 10

var (
	reEntry  = regexp.MustCompile(`(?m)^\.visible \.entry (\w+)\(`)
	reParam  = regexp.MustCompile(`\.param \.align 8 \.b8 (\w+)_param_(\d+)\[(\d+)\]`)
	reShared = regexp.MustCompile(`(?m)^\s*\.shared\s+\.align\s+\d+\s+\.(\w+)\s+\w+(?:\[(\d+)\])?;`)
	// reSharedVar: a shared variable's declaration, [2] its name
	reSharedVar = regexp.MustCompile(`(?m)^\s*\.shared\s+\.align\s+\d+\s+\.(\w+)\s+(\w+)(?:\[\d+\])?;`)
	reVersion   = regexp.MustCompile(`(?m)^\.version (\d+)\.(\d+)$`)
)

// TestPTXStructure checks every embedded module without a GPU: PTX ISA
// 7.0+ (mma.m16n8k16) and target sm_80, or 8.0+ and sm_90a for the
// version-5 modules (wgmma), 64-bit addresses, exactly the entry
// points the host launches, one by-value parameter of the Go argument
// struct's size, no calls or external functions, no local memory (no stack
// or spills at the PTX level), 256-thread launch bounds, tensor-core
// instructions exactly in the version-2 kernels, and static shared memory
// per kernel within 48 KiB.
func TestPTXStructure(t *testing.T) {
	simSize := 8 * len(words(&simArgs{}))
	paramSize := func(entry string) int {
		switch {
		case entry == "topk_select":
			return 8 * len(words(&selectArgs{}))
		case strings.HasPrefix(entry, "centroid_sums"):
			return 8 * len(words(&sumArgs{}))
		case entry == "band_width" || strings.HasPrefix(entry, "rescore_"):
			return 8 * len(words(&rescoreArgs{}))
		case entry == "topk_filter_thr" || entry == "topk_rescore":
			return 8 * len(words(&topkFilterArgs{}))
		}
		return simSize
	}
	largest := 0
	for _, m := range ptxModules {
		src, err := ptxSource(m.file)
		if err != nil {
			t.Fatal(err)
		}
		v := reVersion.FindStringSubmatch(src)
		if v == nil {
			t.Fatalf("%s: no .version", m.file)
		}
		target, isa := "sm_80", 7
		if m.arch != "" {
			target, isa = m.arch, 8 // wgmma needs PTX ISA 8.0
		}
		if maj, _ := strconv.Atoi(v[1]); maj < isa {
			t.Errorf("%s: .version %s.%s, want %d.0 or newer", m.file, v[1], v[2], isa)
		}
		for _, want := range []string{"\n.target " + target + "\n", "\n.address_size 64\n"} {
			if !strings.Contains(src, want) {
				t.Errorf("%s: missing %q", m.file, strings.TrimSpace(want))
			}
		}
		for _, bad := range []string{".extern .func", "call.uni", "\tcall ", ".func ", ".local", "__local_depot"} {
			if strings.Contains(src, bad) {
				t.Errorf("%s: contains %q (calls, external functions or local memory)", m.file, bad)
			}
		}
		var entries []string
		for _, e := range reEntry.FindAllStringSubmatch(src, -1) {
			entries = append(entries, e[1])
		}
		if !slices.Equal(entries, m.entries) {
			t.Errorf("%s: entries %v, the host uses %v", m.file, entries, m.entries)
		}
		// per entry body: from its .entry to the next
		locs := reEntry.FindAllStringIndex(src, -1)
		// module-scope shared variables (clang hoists those of device
		// functions two kernels share) count for the kernels naming them
		moduleVars := reSharedVar.FindAllStringSubmatch(src[:locs[0][0]], -1)
		for i, loc := range locs {
			end := len(src)
			if i+1 < len(locs) {
				end = locs[i+1][0]
			}
			body := src[loc[0]:end]
			name := reEntry.FindStringSubmatch(body)[1]
			params := reParam.FindAllStringSubmatch(body, -1)
			if len(params) != 1 || params[0][2] != "0" {
				t.Errorf("%s: %d parameters, want one by-value struct", name, len(params))
			} else if n, _ := strconv.Atoi(params[0][3]); n != paramSize(name) {
				t.Errorf("%s: parameter is %d bytes, the Go argument struct %d", name, n, paramSize(name))
			}
			if !strings.Contains(body, ".maxntid 256, 1, 1") {
				t.Errorf("%s: no .maxntid 256 (launch bounds)", name)
			}
			mma := strings.Count(body, "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32")
			sums := strings.HasPrefix(name, "centroid_sums")
			tc := !sums && (strings.Contains(name, "_kernel2_") || strings.Contains(name, "_kernel3_") || strings.Contains(name, "_kernel4_"))
			if sums && strings.Contains(name, "_kernel2_") != strings.Contains(body, "red.global.add.u64") {
				t.Errorf("%s: red.global.add.u64 is the sums kernel 2's (and only its) atomic", name)
			}
			switch {
			case tc && mma != 32:
				t.Errorf("%s: %d mma.sync, want 32 (4x4 tiles x 2 k-steps)", name, mma)
			case !tc && mma != 0:
				t.Errorf("%s: %d mma.sync in a non-tensor-core kernel", name, mma)
			}
			// version 3: 4 A + 2 B ldmatrix.x4 per 16-k step, 2+2 cp.async per
			// stage (in the prologue and in the loop), both wait_group forms
			ldm := strings.Count(body, "ldmatrix.sync.aligned.m8n8.x4.shared.b16")
			cpa := strings.Count(body, "cp.async.cg.shared.global")
			v3 := strings.Contains(name, "_kernel3_")
			v4 := strings.Contains(name, "_kernel4_")
			v5 := wgmmaEngine(kernelVersion(name)) // versions 5 and 7: the v5 engine
			dyn := strings.Contains(body, "dsmem")
			switch {
			case v3 && (ldm != 12 || cpa != 8 || !strings.Contains(body, "cp.async.wait_group 1") || !strings.Contains(body, "cp.async.wait_group 0")):
				t.Errorf("%s: %d ldmatrix.x4, %d cp.async, want 12 and 8 and both wait_group forms", name, ldm, cpa)
			case v4 && (ldm != 12 || cpa < 8 || !strings.Contains(body, "cp.async.wait_group 2") || strings.Count(body, "bar.sync") != 1):
				// version 4: one barrier per k step, three steps in flight
				t.Errorf("%s: %d ldmatrix.x4, %d cp.async, %d bar.sync; want 12, >= 8, wait_group 2 and one barrier", name, ldm, cpa, strings.Count(body, "bar.sync"))
			case !v3 && !v4 && !v5 && ldm+cpa != 0:
				t.Errorf("%s: ldmatrix / cp.async outside versions 3, 4, 5 and 7", name)
			}
			// version 5: 4 wgmma m64n256k16 per 64-k stage (one group, fenced),
			// 4 + 8 cp.async per stage, the proxy fence before the one barrier,
			// wgmma.wait_group 1 in the loop and 0 after it; nothing else is async
			wg := strings.Count(body, "wgmma.mma_async.sync.aligned.m64n256k16.f32.f16.f16")
			if v5 {
				for _, want := range []string{"wgmma.fence.sync.aligned", "wgmma.commit_group.sync.aligned", "wgmma.wait_group.sync.aligned 1",
					"wgmma.wait_group.sync.aligned 0", "fence.proxy.async.shared::cta", "cp.async.wait_group 1", "cp.async.wait_group 0"} {
					if !strings.Contains(body, want) {
						t.Errorf("%s: no %s", name, want)
					}
				}
				if wg != 4 || cpa < 12 || mma != 0 || ldm != 0 || strings.Count(body, "bar.sync") != 1 {
					t.Errorf("%s: %d wgmma, %d cp.async, %d mma.sync, %d ldmatrix, %d bar.sync; want 4, >= 12, 0, 0, 1", name, wg, cpa, mma, ldm, strings.Count(body, "bar.sync"))
				}
			} else if wg != 0 || strings.Contains(body, "wgmma") {
				t.Errorf("%s: wgmma outside version 5", name)
			}
			if m.arch != "" && !v5 {
				t.Errorf("%s: only version-5 kernels belong in %s", name, m.file)
			}
			if dyn != (dynamicShared(name) > 0) {
				t.Errorf("%s: uses dynamic shared memory %v, host launches it with %d bytes", name, dyn, dynamicShared(name))
			}
			if (strings.Contains(name, "_kernel1_") || strings.Contains(name, "_kernel6_")) && !strings.HasPrefix(name, "centroid_sums") && !strings.Contains(body, "fma.rn.f32") {
				t.Errorf("%s: no fma.rn.f32", name)
			}
			sh := sharedBytes(body)
			for _, v := range moduleVars {
				if strings.Contains(body, v[2]) {
					sh += sharedBytes(v[0])
				}
			}
			if sh > staticSharedLimit {
				t.Errorf("%s: %d bytes of static shared memory, limit %d", name, sh, staticSharedLimit)
			}
			largest = max(largest, sh)
		}
	}
	t.Logf("largest static shared memory of a kernel: %d bytes", largest)
}

func sharedBytes(s string) int {
	n := 0
	for _, m := range reShared.FindAllStringSubmatch(s, -1) {
		size := map[string]int{"b8": 1, "u8": 1, "b16": 2, "u16": 2, "b32": 4, "u32": 4, "f32": 4, "b64": 8, "u64": 8}[m[1]]
		count := 1
		if m[2] != "" {
			count, _ = strconv.Atoi(m[2])
		}
		n += size * count
	}
	return n
}

// TestArgStructs compares the kernel argument structs of the .cu files
// with their Go twins field by field (names, order, 8-byte types).
func TestArgStructs(t *testing.T) {
	for _, c := range []struct {
		file, name string
		goType     reflect.Type
	}{
		{"common.cuh", "SimArgs", reflect.TypeOf(simArgs{})},
		{"topk.cu", "SelectArgs", reflect.TypeOf(selectArgs{})},
		{"centroid.cu", "SumArgs", reflect.TypeOf(sumArgs{})},
		{"exact.cu", "RescoreArgs", reflect.TypeOf(rescoreArgs{})},
		{"exact.cu", "TopkFilterArgs", reflect.TypeOf(topkFilterArgs{})},
	} {
		src, err := os.ReadFile(c.file)
		if err != nil {
			t.Fatal(err)
		}
		m := regexp.MustCompile(`(?s)struct ` + c.name + ` \{(.*?)\n\};`).FindSubmatch(src)
		if m == nil {
			t.Fatalf("%s: struct %s not found", c.file, c.name)
		}
		var cFields []string
		reField := regexp.MustCompile(`^\s*(const\s+)?(\w+)\s*(\*?)\s*(\w+);`)
		for _, line := range strings.Split(string(m[1]), "\n") {
			f := reField.FindStringSubmatch(line)
			if f == nil {
				continue
			}
			if f[3] != "*" && f[2] != "i64" && f[2] != "u64" && f[2] != "double" {
				t.Errorf("%s.%s: type %s is not 8 bytes", c.name, f[4], f[2])
			}
			cFields = append(cFields, strings.ToLower(f[4]))
		}
		var goFields []string
		for i := 0; i < c.goType.NumField(); i++ {
			f := c.goType.Field(i)
			if f.Type.Size() != 8 {
				t.Errorf("%s.%s is %d bytes", c.goType.Name(), f.Name, f.Type.Size())
			}
			goFields = append(goFields, strings.ToLower(f.Name))
		}
		if !slices.Equal(cFields, goFields) {
			t.Errorf("%s: C fields %v, Go fields %v", c.name, cFields, goFields)
		}
	}
}

// TestDefines compares the #define constants the host side mirrors with
// their Go twins.
func TestDefines(t *testing.T) {
	for _, c := range []struct {
		file, name string
		want       int
	}{
		{"topk.cu", "SEL_THREADS", threads},
		{"topk.cu", "SEL_GLOBAL_ONLY", selGlobalOnly},
		{"topk.cu", "SEL_SORT_OUT", selSortOut},
		{"topk.cu", "SEL_SMEM_KEYS", selSmemKeys},
		{"exact.cu", "TF_QF32", tfQF32},
	} {
		src, err := os.ReadFile(c.file)
		if err != nil {
			t.Fatal(err)
		}
		m := regexp.MustCompile(`(?m)^#define ` + c.name + `\s+(\d+)`).FindSubmatch(src)
		if m == nil {
			t.Errorf("%s: no #define %s", c.file, c.name)
			continue
		}
		if got, _ := strconv.Atoi(string(m[1])); got != c.want {
			t.Errorf("%s: %s = %d, Go has %d", c.file, c.name, got, c.want)
		}
	}
	if selSortMax > selSmemKeys {
		t.Errorf("selSortMax %d > selSmemKeys %d: topk_select would leave larger k unsorted", selSortMax, selSmemKeys)
	}
}

// TestPTXFresh regenerates the PTX with scripts/ptx.sh into a temp dir and
// fails when a committed .ptx differs (run scripts/ptx.sh, i.e. make ptx).
// Skipped without clang-19 (failed then with HPCRUN_REQUIRE_CLANG=1).
func TestPTXFresh(t *testing.T) {
	if _, err := exec.LookPath("clang-19"); err != nil {
		if os.Getenv("HPCRUN_REQUIRE_CLANG") == "1" {
			t.Fatal("clang-19 not installed (apt-get install clang-19) and HPCRUN_REQUIRE_CLANG=1")
		}
		t.Skip("clang-19 not installed: PTX staleness not checked (apt-get install clang-19)")
	}
	cus, _ := filepath.Glob("*.cu")
	var mods []string
	for _, m := range ptxModules {
		if m.arch == "" {
			mods = append(mods, strings.TrimSuffix(m.file, ".ptx"))
		} else if want := strings.TrimSuffix(m.file, "_"+strings.ReplaceAll(m.arch, "_", "")+".ptx") + ".ptx"; !slices.ContainsFunc(ptxModules, func(o ptxModule) bool { return o.file == want }) {
			t.Errorf("%s has no sm_80 module %s beside it", m.file, want)
		}
	}
	for i := range cus {
		cus[i] = strings.TrimSuffix(cus[i], ".cu")
	}
	slices.Sort(cus)
	slices.Sort(mods)
	if !slices.Equal(cus, mods) {
		t.Errorf(".cu files %v, embedded modules %v", cus, mods)
	}
	dir := t.TempDir()
	cmd := exec.Command("bash", "../../scripts/ptx.sh", dir)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("scripts/ptx.sh: %v\n%s", err, out)
	}
	for _, m := range ptxModules {
		fresh, err := os.ReadFile(filepath.Join(dir, m.file))
		if err != nil {
			t.Fatal(err)
		}
		committed, err := ptxSource(m.file)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(fresh, []byte(committed)) {
			t.Errorf("%s is stale: regenerate with scripts/ptx.sh (make ptx) and commit it", m.file)
		}
	}
}
