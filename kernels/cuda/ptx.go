package cuda

import (
	"embed"
	"fmt"
	"strconv"
	"strings"
	"unsafe"
)

// The PTX modules, generated from the .cu files beside them by
// scripts/ptx.sh (clang-19 NVPTX) and committed: <op>.ptx for sm_80 (PTX
// ISA 7.0, versions 1-4; the driver JIT-compiles it for any newer GPU) and
// <op>_sm90a.ptx for sm_90a only (PTX ISA 8.0, version 5: wgmma). TestPTXFresh
// fails when they are stale, TestPTXStructure checks them.
//
//go:embed topk.ptx maxarg.ptx centroid.ptx prefixmax.ptx exact.ptx
//go:embed topk_sm90a.ptx maxarg_sm90a.ptx centroid_sm90a.ptx prefixmax_sm90a.ptx exact_sm90a.ptx
var ptxFS embed.FS

// ptxModule is one embedded module and the entry points the host uses.
// arch is "" for the sm_80 modules every GPU loads (a failure is an
// error) and "sm_90a" for the optional ones, loaded only on sm_90 GPUs
// (a failure only makes their kernels missing, so version 5 falls back).
type ptxModule struct {
	file    string
	entries []string
	arch    string
}

var ptxModules = []ptxModule{
	{"topk.ptx", []string{"topk_kernel1_f32", "topk_kernel1_f16", "topk_kernel2_f16", "topk_kernel3_f16", "topk_kernel4_f16", "topk_kernel6_f32", "topk_kernel6_f16", "topk_select"}, ""},
	{"maxarg.ptx", []string{"maxarg_kernel1_f32", "maxarg_kernel1_f16", "maxarg_kernel2_f16", "maxarg_kernel3_f16", "maxarg_kernel4_f16", "maxarg_kernel6_f32", "maxarg_kernel6_f16"}, ""},
	{"centroid.ptx", []string{"centroid_kernel1_f32", "centroid_kernel1_f16", "centroid_kernel2_f16", "centroid_kernel3_f16", "centroid_kernel4_f16", "centroid_kernel6_f32", "centroid_kernel6_f16",
		"centroid_sums_kernel1_f32", "centroid_sums_kernel1_f16", "centroid_sums_kernel2_f32", "centroid_sums_kernel2_f16"}, ""},
	{"prefixmax.ptx", []string{"prefixmax_kernel1_f32", "prefixmax_kernel1_f16", "prefixmax_kernel2_f16", "prefixmax_kernel3_f16", "prefixmax_kernel4_f16", "prefixmax_kernel6_f32", "prefixmax_kernel6_f16"}, ""},
	{"exact.ptx", []string{"band_kernel2_f16", "band_kernel3_f16", "band_kernel4_f16", "bandprefix_kernel2_f16", "bandprefix_kernel3_f16", "bandprefix_kernel4_f16",
		"band_width", "rescore_argmax", "rescore_rows", "topk_filter_thr", "topk_rescore"}, ""},
	{"topk_sm90a.ptx", []string{"topk_kernel5_f16", "topk_kernel7_f16"}, "sm_90a"},
	{"maxarg_sm90a.ptx", []string{"maxarg_kernel5_f16", "maxarg_kernel7_f16"}, "sm_90a"},
	{"centroid_sm90a.ptx", []string{"centroid_kernel5_f16", "centroid_kernel7_f16"}, "sm_90a"},
	{"prefixmax_sm90a.ptx", []string{"prefixmax_kernel5_f16", "prefixmax_kernel7_f16"}, "sm_90a"},
	{"exact_sm90a.ptx", []string{"band_kernel5_f16", "bandprefix_kernel5_f16", "band_kernel7_f16", "bandprefix_kernel7_f16"}, "sm_90a"},
}

func ptxSource(file string) (string, error) {
	b, err := ptxFS.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("kernels/cuda: embedded %s: %w", file, err)
	}
	return string(b), nil
}

// Kernel geometry (common.cuh V1_*, V2_*, SEL_THREADS, SUM_THREADS).
const (
	v1Tile     = 64
	v2Tile     = 128
	v6Tile     = 128 // V6_TILE
	v5TileA    = 128 // V5_BM
	v5TileB    = 256 // V5_BN
	threads    = 256 // every kernel's block size
	maxGridY   = 65535
	sumsBlocks = 4096 // grid of the grid-stride sums kernel (at most)
)

// v4SharedBytes is the dynamic shared memory of the version-4 kernels
// (common.cuh V4_SMEM_BYTES: 4 stages x (128 + 128) rows x 40 halves).
const v4SharedBytes = 4 * 2 * 128 * 40 * 2

// v5SharedBytes is the dynamic shared memory of the version-5 kernels
// (common.cuh V5_SMEM_BYTES: 4 stages x (128 + 256) rows x 128 bytes, and
// 1 KiB to align the first 128-byte swizzle atom).
const v5SharedBytes = 4*(128+256)*128 + 1024

// dynamicShared returns the dynamic shared memory a kernel is launched with.
func dynamicShared(kernel string) int {
	switch v := kernelVersion(kernel); {
	case v == 4:
		return v4SharedBytes
	case wgmmaEngine(v):
		return v5SharedBytes
	}
	return 0
}

// kernelVersion is the version in a kernel's name ("<op>_kernel<v>_<dtype>",
// kernelName), 0 for a kernel without one (topk_select, band_width, ...).
func kernelVersion(name string) int {
	_, rest, ok := strings.Cut(name, "_kernel")
	if !ok {
		return 0
	}
	d, _, _ := strings.Cut(rest, "_")
	v, err := strconv.Atoi(d)
	if err != nil {
		return 0
	}
	return v
}

// tiles returns the rows of A and of B one block of a version's similarity
// kernel covers (grid x = ceil(nA/ta), grid y = ceil(nB/tb)).
func tiles(version int) (ta, tb int) {
	switch {
	case wgmmaEngine(version):
		return v5TileA, v5TileB
	case version == 6:
		return v6Tile, v6Tile
	case version >= 2:
		return v2Tile, v2Tile
	}
	return v1Tile, v1Tile
}

// simArgs is the Go twin of struct SimArgs in common.cuh: the same fields,
// all 8 bytes, in the same order (TestArgStructs compares the lists and the
// PTX parameter sizes).
type simArgs struct {
	A, B       dptr
	NA, NB, LD int64
	AOff, BOff int64
	Scale      dptr
	Bias       dptr
	Best       dptr
	Thr        dptr
	Count      dptr
	Keys       dptr
	Cap        int64
	Group      int64 // the v5 engine's tile order (tunables.group); launchSim sets it
}

// selectArgs is the Go twin of struct SelectArgs in topk.cu.
type selectArgs struct {
	Keys, Count, Thr, Out dptr
	NQ, Cap, K            int64
	Flags                 int64 // selGlobalOnly | selSortOut
}

// topk_select's flags (topk.cu): selGlobalOnly (SEL_GLOBAL_ONLY): never
// stage the keys in shared memory for the selection (the tests check both
// paths); selSortOut (SEL_SORT_OUT): the final keys in out best first
// (sorted on the device when k <= selSortMax; the host sorts larger k).
const (
	selGlobalOnly = 1
	selSortOut    = 2
	selSortMax    = 2048
	selSmemKeys   = 5888 // SEL_SMEM_KEYS: the sort needs k <= this
)

// sumArgs is the Go twin of struct SumArgs in centroid.cu.
type sumArgs struct {
	X, Best, Sums dptr
	N, Dim, LD    int64
}

// rescoreArgs is the Go twin of struct RescoreArgs in exact.cu.
type rescoreArgs struct {
	A, B             dptr
	NA, NB, LD, AOff int64
	Scale, Bias      dptr
	Best, Count      dptr
	Keys             dptr
	Cap              int64
	W, Over          dptr
	Flags            int64 // rsBF32 | rsPrefix | rsAll
	K1, K2           float64
}

// RescoreArgs.flags (exact.cu RS_*).
const (
	rsBF32   = 1 // B rows are float32 (else float16)
	rsPrefix = 2 // PrefixMax: B rows before the A row's global index only
	rsAll    = 4 // rescore_rows: every row of the chunk, not the over list
)

// topkFilterArgs is the Go twin of struct TopkFilterArgs in exact.cu.
type topkFilterArgs struct {
	Q, B          dptr
	NQ, LD, BOff  int64
	E, BNorm      dptr
	Thr, ThrF     dptr
	Before, Count dptr
	Keys          dptr
	Cap, Flags    int64 // tfQF32
}

// tfQF32 (exact.cu TF_QF32): the exact queries are float32.
const tfQF32 = 1

// argStruct is every kernel argument struct: all their fields are 8 bytes,
// so a struct is its words in order.
type argStruct interface {
	simArgs | selectArgs | sumArgs | rescoreArgs | topkFilterArgs
}

// words returns the 8-byte fields of an argument struct.
func words[T argStruct](a *T) []uint64 {
	n := int(unsafe.Sizeof(*a)) / 8
	out := make([]uint64, n)
	copy(out, unsafe.Slice((*uint64)(unsafe.Pointer(a)), n))
	return out
}

// fromWords is the inverse of words (used by the emulator).
func fromWords[T argStruct](w []uint64) (T, error) {
	var a T
	n := int(unsafe.Sizeof(a)) / 8
	if len(w) != n {
		return a, fmt.Errorf("kernels/cuda: %d parameter words, want %d", len(w), n)
	}
	copy(unsafe.Slice((*uint64)(unsafe.Pointer(&a)), n), w)
	return a, nil
}
