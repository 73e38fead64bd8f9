/*
PrefixMax: for every row i of an ordered set x, max over j < i of x_i·x_j
and the j reaching it (the semantic dedup order: a row is compared only with
the rows before it). Tiles entirely at or above the diagonal exit at once,
so the work is about half of x·xᵀ.

CPU reference: kernels.Naive.PrefixMax (prefixMaxRef). Host driver:
kernels/cuda/ops.go (argmaxOp with prefix); emulated by kernels/cuda/emu.go.

The kernels (A = a chunk of x rows at global offset aOff, B = all of x;
common.cuh argmax epilogue with the mask bOff+j < aOff+i):
  prefixmax_kernel1_f32  version 1: FFMA 64x64 tile, float32 inputs
  prefixmax_kernel1_f16  version 1: FFMA 64x64 tile, float16 inputs
  prefixmax_kernel2_f16  version 2: mma.sync m16n8k16 128x128 tile, float16 inputs
  prefixmax_kernel3_f16       version 3: v2 fed by cp.async double buffering + ldmatrix
  prefixmax_kernel4_f16       version 4: v3 with a four-stage pipeline (dynamic shared memory)
  prefixmax_kernel6_f32       version 6: FFMA 128x128 tile, 8x8 per thread (common.cuh v6):
  prefixmax_kernel6_f16       version 1's bits, float32 or float16 inputs
  prefixmax_kernel5_f16       version 5: wgmma.m64n256k16 128x256 tile (common.cuh v5), sm_90a
  prefixmax_kernel7_f16       version 7: version 5 with the lean argmax epilogue (common.cuh argmax_cols), sm_90a
                         only: versions 5 and 7 are the kernels of prefixmax_sm90a.ptx (built with -DHPCRUN_SM90A)

Regenerate the PTX (clang-19, no CUDA toolkit): scripts/ptx.sh
*/
#include "common.cuh"

#ifdef HPCRUN_SM90A
KERNEL __launch_bounds__(V2_THREADS) void prefixmax_kernel5_f16(SimArgs a) { argmax_wg<true>(a); }
KERNEL __launch_bounds__(V2_THREADS) void prefixmax_kernel7_f16(SimArgs a) { argmax_wg<true, false, true>(a); }
#else
KERNEL __launch_bounds__(V1_THREADS) void prefixmax_kernel1_f32(SimArgs a) { argmax_v1<float, true>(a); }
KERNEL __launch_bounds__(V1_THREADS) void prefixmax_kernel1_f16(SimArgs a) { argmax_v1<u16, true>(a); }
KERNEL __launch_bounds__(V2_THREADS) void prefixmax_kernel2_f16(SimArgs a) { argmax_mma<2, true>(a); }
KERNEL __launch_bounds__(V2_THREADS) void prefixmax_kernel3_f16(SimArgs a) { argmax_mma<3, true>(a); }
KERNEL __launch_bounds__(V2_THREADS) void prefixmax_kernel4_f16(SimArgs a) { argmax_mma<4, true>(a); }
KERNEL __launch_bounds__(V1_THREADS, 2) void prefixmax_kernel6_f32(SimArgs a) { argmax_v6<float, true>(a); }
KERNEL __launch_bounds__(V1_THREADS, 2) void prefixmax_kernel6_f16(SimArgs a) { argmax_v6<u16, true>(a); }
#endif // HPCRUN_SM90A
