/*
NearestCentroid: every point's nearest centroid and the k-means partial sums.
L2 maximises x·c - ‖c‖²/2 (bias[j] = float32(-‖c_j‖²/2), from float64 on
the host as the CPU backend does); Cosine maximises (x·c)·scale[j] with
scale[j] = float32(1/‖c_j‖) (1 for a zero centroid). Sums are fixed point as
kernels.ToFixed: round-to-nearest-even(x·2^32) as int64, added with 64-bit
integer atomics, so they are exact and independent of order and chunking.

CPU reference: kernels.Naive.NearestCentroid (nearestCentroidRef). Host
driver: kernels/cuda/ops.go (NearestCentroid); emulated by kernels/cuda/emu.go.

The kernels (A = a chunk of points, B = all centroids; common.cuh argmax
epilogue):
  centroid_kernel1_f32       version 1: FFMA 64x64 tile, float32 inputs
  centroid_kernel1_f16       version 1: FFMA 64x64 tile, float16 inputs
  centroid_kernel2_f16       version 2: mma.sync m16n8k16 128x128 tile, float16 inputs
  centroid_kernel3_f16       version 3: v2 fed by cp.async double buffering + ldmatrix
  centroid_kernel4_f16       version 4: v3 with a four-stage pipeline (dynamic shared memory)
  centroid_kernel6_f32       version 6: FFMA 128x128 tile, 8x8 per thread (common.cuh v6):
  centroid_kernel6_f16       version 1's bits, float32 or float16 inputs
  centroid_kernel5_f16       version 5: wgmma.m64n256k16 128x256 tile (common.cuh v5), sm_90a
  centroid_kernel7_f16       version 7: version 5 with the lean argmax epilogue (common.cuh argmax_cols), sm_90a
                         only: versions 5 and 7 are the kernels of centroid_sm90a.ptx (built with -DHPCRUN_SM90A)
  centroid_sums_kernel1_f32  sums, version 1: one thread per (point, coordinate),
  centroid_sums_kernel1_f16  atom.add.u64 into sums[c*dim + k]
  centroid_sums_kernel2_f32  sums, version 2 (used with tile versions 2 and 3): one
  centroid_sums_kernel2_f16  warp per point, lanes over coordinates, red.global.add.u64
(The counts are a histogram of the assignment, which the host has anyway.)

Regenerate the PTX (clang-19, no CUDA toolkit): scripts/ptx.sh
*/
#include "common.cuh"

#ifdef HPCRUN_SM90A
KERNEL __launch_bounds__(V2_THREADS) void centroid_kernel5_f16(SimArgs a) { argmax_wg<false>(a); }
KERNEL __launch_bounds__(V2_THREADS) void centroid_kernel7_f16(SimArgs a) { argmax_wg<false, false, true>(a); }
#else
KERNEL __launch_bounds__(V1_THREADS) void centroid_kernel1_f32(SimArgs a) { argmax_v1<float, false>(a); }
KERNEL __launch_bounds__(V1_THREADS) void centroid_kernel1_f16(SimArgs a) { argmax_v1<u16, false>(a); }
KERNEL __launch_bounds__(V2_THREADS) void centroid_kernel2_f16(SimArgs a) { argmax_mma<2, false>(a); }
KERNEL __launch_bounds__(V2_THREADS) void centroid_kernel3_f16(SimArgs a) { argmax_mma<3, false>(a); }
KERNEL __launch_bounds__(V2_THREADS) void centroid_kernel4_f16(SimArgs a) { argmax_mma<4, false>(a); }
KERNEL __launch_bounds__(V1_THREADS, 2) void centroid_kernel6_f32(SimArgs a) { argmax_v6<float, false>(a); }
KERNEL __launch_bounds__(V1_THREADS, 2) void centroid_kernel6_f16(SimArgs a) { argmax_v6<u16, false>(a); }

// SumArgs is the by-value parameter of the sums kernels (all fields 8 bytes;
// Go twin: sumArgs in ptx.go).
struct SumArgs {
    const void* X;    // n x ld points (the A chunk of the assignment kernel)
    const u64* best;  // n keys from the assignment kernel (0: no centroid)
    u64* sums;        // K x dim, int64 two's complement
    i64 n;
    i64 dim;
    i64 ld;
};

#define SUM_THREADS 256

// grid-stride over the n·dim (point, coordinate) pairs, coordinate fastest
// (coalesced reads; the 32 lanes of a warp add to 32 different sums).
template <typename T>
DEV void centroid_sums(const SumArgs& s) {
    const T* X = (const T*)s.X;
    const i64 total = s.n * s.dim;
    const i64 stride = (i64)nctaid_x() * SUM_THREADS;
    for (i64 idx = (i64)ctaid_x() * SUM_THREADS + tid_x(); idx < total; idx += stride) {
        const i64 i = idx / s.dim, k = idx - i * s.dim;
        const u64 key = s.best[i];
        if (key == 0) continue;
        const u32 c = ~(u32)key;
        const float x = to_f(X[i * s.ld + k]);
        atomic_add_u64(&s.sums[(i64)c * s.dim + k], (u64)f2ll_rn(x * 4294967296.0f)); // 2^FixedShift, exact
    }
}

KERNEL __launch_bounds__(SUM_THREADS) void centroid_sums_kernel1_f32(SumArgs s) { centroid_sums<float>(s); }
KERNEL __launch_bounds__(SUM_THREADS) void centroid_sums_kernel1_f16(SumArgs s) { centroid_sums<u16>(s); }


// version 2: one warp per point (grid-stride over points), lanes over its
// coordinates: the point's key is one broadcast load, no 64-bit division,
// and each warp instruction adds to 32 consecutive sums (red, no return).
template <typename T>
DEV void centroid_sums_w(const SumArgs& s) {
    const int lane = tid_x() & 31;
    const i64 stride = ((i64)nctaid_x() * SUM_THREADS) >> 5;
    for (i64 i = ((i64)ctaid_x() * SUM_THREADS + tid_x()) >> 5; i < s.n; i += stride) {
        const u64 key = s.best[i];
        if (key == 0) continue;
        const T* x = (const T*)s.X + i * s.ld;
        u64* dst = s.sums + (i64)(~(u32)key) * s.dim;
        for (i64 k = lane; k < s.dim; k += 32) red_add_u64(dst + k, (u64)f2ll_rn(to_f(x[k]) * 4294967296.0f));
    }
}

KERNEL __launch_bounds__(SUM_THREADS) void centroid_sums_kernel2_f32(SumArgs s) { centroid_sums_w<float>(s); }
KERNEL __launch_bounds__(SUM_THREADS) void centroid_sums_kernel2_f16(SumArgs s) { centroid_sums_w<u16>(s); }
#endif // HPCRUN_SM90A
