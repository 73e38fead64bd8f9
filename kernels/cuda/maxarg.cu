/*
MaxArg and ShiftedMax: for every base row, the best query. MaxArg maximises
q·b; ShiftedMax maximises q·b - thr[q] (the exact prune rule) through the
bias (bias[j] = -thr[j], added after the dot product exactly as the CPU
backend does). Ties go to the smaller query index.

CPU reference: kernels.Naive.MaxArg / ShiftedMax (maxArgRef, shiftedMaxRef).
Host driver: kernels/cuda/ops.go (argmaxOp); emulated by kernels/cuda/emu.go.

The kernels (A = a chunk of base rows, B = all queries; common.cuh argmax
epilogue: best[i] = max over j of key(dot·scale[j] + bias[j], j)):
  maxarg_kernel1_f32  version 1: FFMA 64x64 tile, float32 inputs
  maxarg_kernel1_f16  version 1: FFMA 64x64 tile, float16 inputs
  maxarg_kernel2_f16  version 2: mma.sync m16n8k16 128x128 tile, float16 inputs
  maxarg_kernel3_f16       version 3: v2 fed by cp.async double buffering + ldmatrix
  maxarg_kernel4_f16       version 4: v3 with a four-stage pipeline (dynamic shared memory)
  maxarg_kernel6_f32       version 6: FFMA 128x128 tile, 8x8 per thread (common.cuh v6):
  maxarg_kernel6_f16       version 1's bits, float32 or float16 inputs
  maxarg_kernel5_f16       version 5: wgmma.m64n256k16 128x256 tile (common.cuh v5), sm_90a
  maxarg_kernel7_f16       version 7: version 5 with the lean argmax epilogue (common.cuh argmax_cols), sm_90a
                         only: versions 5 and 7 are the kernels of maxarg_sm90a.ptx (built with -DHPCRUN_SM90A)

Regenerate the PTX (clang-19, no CUDA toolkit): scripts/ptx.sh
*/
#include "common.cuh"

#ifdef HPCRUN_SM90A
KERNEL __launch_bounds__(V2_THREADS) void maxarg_kernel5_f16(SimArgs a) { argmax_wg<false>(a); }
KERNEL __launch_bounds__(V2_THREADS) void maxarg_kernel7_f16(SimArgs a) { argmax_wg<false, false, true>(a); }
#else
KERNEL __launch_bounds__(V1_THREADS) void maxarg_kernel1_f32(SimArgs a) { argmax_v1<float, false>(a); }
KERNEL __launch_bounds__(V1_THREADS) void maxarg_kernel1_f16(SimArgs a) { argmax_v1<u16, false>(a); }
KERNEL __launch_bounds__(V2_THREADS) void maxarg_kernel2_f16(SimArgs a) { argmax_mma<2, false>(a); }
KERNEL __launch_bounds__(V2_THREADS) void maxarg_kernel3_f16(SimArgs a) { argmax_mma<3, false>(a); }
KERNEL __launch_bounds__(V2_THREADS) void maxarg_kernel4_f16(SimArgs a) { argmax_mma<4, false>(a); }
KERNEL __launch_bounds__(V1_THREADS, 2) void maxarg_kernel6_f32(SimArgs a) { argmax_v6<float, false>(a); }
KERNEL __launch_bounds__(V1_THREADS, 2) void maxarg_kernel6_f16(SimArgs a) { argmax_v6<u16, false>(a); }
#endif // HPCRUN_SM90A
