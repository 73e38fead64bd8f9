package cuda

import (
	"embed"
	"fmt"
	"strings"
	"unsafe"
)

// The PTX modules, generated from the .cu files beside them by
// scripts/ptx.sh (clang-19 NVPTX, sm_80, PTX ISA 7.0) and committed;
// TestPTXFresh fails when they are stale, TestPTXStructure checks them.
//
//go:embed topk.ptx maxarg.ptx centroid.ptx prefixmax.ptx
var ptxFS embed.FS

// ptxModule is one embedded module and the entry points the host uses.
type ptxModule struct {
	file    string
	entries []string
}

var ptxModules = []ptxModule{
	{"topk.ptx", []string{"topk_kernel1_f32", "topk_kernel1_f16", "topk_kernel2_f16", "topk_kernel3_f16", "topk_kernel4_f16", "topk_select"}},
	{"maxarg.ptx", []string{"maxarg_kernel1_f32", "maxarg_kernel1_f16", "maxarg_kernel2_f16", "maxarg_kernel3_f16", "maxarg_kernel4_f16"}},
	{"centroid.ptx", []string{"centroid_kernel1_f32", "centroid_kernel1_f16", "centroid_kernel2_f16", "centroid_kernel3_f16", "centroid_kernel4_f16",
		"centroid_sums_kernel1_f32", "centroid_sums_kernel1_f16", "centroid_sums_kernel2_f32", "centroid_sums_kernel2_f16"}},
	{"prefixmax.ptx", []string{"prefixmax_kernel1_f32", "prefixmax_kernel1_f16", "prefixmax_kernel2_f16", "prefixmax_kernel3_f16", "prefixmax_kernel4_f16"}},
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
	threads    = 256 // every kernel's block size
	maxGridY   = 65535
	sumsBlocks = 4096 // grid of the grid-stride sums kernel (at most)
)

// v4SharedBytes is the dynamic shared memory of the version-4 kernels
// (common.cuh V4_SMEM_BYTES: 4 stages x (128 + 128) rows x 40 halves).
const v4SharedBytes = 4 * 2 * 128 * 40 * 2

// dynamicShared returns the dynamic shared memory a kernel is launched with.
func dynamicShared(kernel string) int {
	if strings.Contains(kernel, "_kernel4_") {
		return v4SharedBytes
	}
	return 0
}

func tileOf(version int) int {
	if version >= 2 {
		return v2Tile
	}
	return v1Tile
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
}

// selectArgs is the Go twin of struct SelectArgs in topk.cu.
type selectArgs struct {
	Keys, Count, Thr, Out dptr
	NQ, Cap, K            int64
	Flags                 int64 // selGlobalOnly
}

// selGlobalOnly (SEL_GLOBAL_ONLY in topk.cu): topk_select never stages the
// keys in shared memory (the tests check both paths).
const selGlobalOnly = 1

// sumArgs is the Go twin of struct SumArgs in centroid.cu.
type sumArgs struct {
	X, Best, Sums dptr
	N, Dim, LD    int64
}

// words returns the 8-byte fields of an argument struct (all fields of the
// three types above are 8 bytes, so the struct is its words in order).
func words[T simArgs | selectArgs | sumArgs](a *T) []uint64 {
	n := int(unsafe.Sizeof(*a)) / 8
	out := make([]uint64, n)
	copy(out, unsafe.Slice((*uint64)(unsafe.Pointer(a)), n))
	return out
}

// fromWords is the inverse of words (used by the emulator).
func fromWords[T simArgs | selectArgs | sumArgs](w []uint64) (T, error) {
	var a T
	n := int(unsafe.Sizeof(a)) / 8
	if len(w) != n {
		return a, fmt.Errorf("kernels/cuda: %d parameter words, want %d", len(w), n)
	}
	copy(unsafe.Slice((*uint64)(unsafe.Pointer(&a)), n), w)
	return a, nil
}
