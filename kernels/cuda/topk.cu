/*
Top-k similarities of every query over a base set, fused: C tiles are filtered
against a per-query threshold and only candidates are written.

CPU reference: kernels.Naive.TopK (topkRef, full sort). Host driver:
kernels/cuda/ops.go (TopK), which owns the thresholds and the candidate
buffers; emulated in plain Go by kernels/cuda/emu.go.

The kernels:
  topk_kernel1_f32  version 1: FFMA 64x64 tile (common.cuh v1), float32 inputs
  topk_kernel1_f16  version 1: FFMA 64x64 tile, float16 inputs converted exactly to float32
  topk_kernel2_f16  version 2: mma.sync m16n8k16 128x128 tile (common.cuh v2), float16 inputs
  topk_kernel3_f16  version 3: v2 fed by cp.async double buffering + ldmatrix (common.cuh v3)
  topk_kernel4_f16  version 4: v3 with a four-stage pipeline in dynamic shared memory (common.cuh v4)
  topk_kernel6_f32  version 6: FFMA 128x128 tile, 8x8 per thread (common.cuh v6): version 1's bits,
  topk_kernel6_f16  float32 inputs, or float16 converted exactly
  topk_kernel5_f16  version 5: wgmma.m64n256k16 128x256 tile (common.cuh v5), sm_90a
                    only: versions 5 and 7 are the kernels of topk_sm90a.ptx (built with -DHPCRUN_SM90A)
  topk_kernel7_f16  version 7: version 5 skipping the rows of a tile whose largest entry does
                    not pass the threshold (one max tree per row instead of 64 compares)
  topk_select       one block per query: radix-select the k best of its candidates,
                    compact them to the front, raise the threshold (and write the
                    final k when out != null)

Contract of topk_kernelN (A = queries, B = a range of base rows):
  for every pair with v = A[i]·B[j] > thr[i]:
      pos = atomicAdd(&count[i], 1); if (pos < cap) keys[i*cap + pos] = key(v, bOff + j)
  count may pass cap: the host then restores the counts and redoes the range
  in halves. Exactness: the host processes base rows in increasing index order
  and thr[i] is the k-th best key of rows already seen (all of smaller index),
  so a later value equal to thr[i] loses the tie and the strict > loses nothing.

Regenerate the PTX (clang-19, no CUDA toolkit): scripts/ptx.sh
*/
#include "common.cuh"

// ----------------------------------------------------------------------------
// GPU kernels

DEV void topk_emit(const SimArgs& a, i64 i, i64 j, float v, float thr) {
    if (v > thr) {
        const u32 pos = atomic_add_u32(&a.count[i], 1);
        if ((i64)pos < a.cap) a.keys[i * a.cap + pos] = make_key(v, a.bOff + j);
    }
}

template <typename T>
DEV void topk_v1(const SimArgs& a) {
    __shared__ float As[V1_BK][V1_TILE + 1];
    __shared__ float Bs[V1_BK][V1_TILE + 1];
    const i64 i0 = (i64)ctaid_x() * V1_TILE, j0 = (i64)ctaid_y() * V1_TILE;
    float acc[4][4];
    v1_tile<T>(a, i0, j0, acc, As, Bs);
#pragma unroll
    for (int r = 0; r < 4; r++) {
        const i64 i = v1_row(i0, r);
        if (i >= a.nA) continue;
        const float thr = a.thr[i];
#pragma unroll
        for (int c = 0; c < 4; c++) {
            const i64 j = v1_col(j0, c);
            if (j < a.nB) topk_emit(a, i, j, acc[r][c], thr);
        }
    }
}

template <typename T>
DEV void topk_v6(const SimArgs& a) {
    __shared__ __attribute__((aligned(16))) float sm[V6_SMEM];
    const i64 i0 = (i64)ctaid_x() * V6_TILE, j0 = (i64)ctaid_y() * V6_TILE;
    float acc[8][8];
    v6_tile<T>(a, i0, j0, acc, sm);
#pragma unroll
    for (int r = 0; r < 8; r++) {
        const i64 i = v6_row(i0, r);
        if (i >= a.nA) continue;
        const float thr = a.thr[i];
#pragma unroll
        for (int c = 0; c < 8; c++) {
            const i64 j = v6_col(j0, c);
            if (j < a.nB) topk_emit(a, i, j, acc[r][c], thr);
        }
    }
}

template <int V>
DEV void topk_mma(const SimArgs& a) {
    const i64 i0 = (i64)ctaid_x() * V2_TILE, j0 = (i64)ctaid_y() * V2_TILE;
    float acc[4][4][4];
    mma_tile<V>(a, i0, j0, acc);
#pragma unroll
    for (int mt = 0; mt < 4; mt++) {
#pragma unroll
        for (int h = 0; h < 2; h++) {
            const i64 i = v2_row(i0, mt, 2 * h);
            if (i >= a.nA) continue;
            const float thr = a.thr[i];
#pragma unroll
            for (int nt = 0; nt < 4; nt++) {
#pragma unroll
                for (int e = 0; e < 2; e++) {
                    const i64 j = v2_col(j0, nt, e);
                    if (j < a.nB) topk_emit(a, i, j, acc[mt][nt][2 * h + e], thr);
                }
            }
        }
    }
}

#ifdef HPCRUN_SM90A
// topk_wg: the top-k epilogue on the v5 engine (wgmma, 128x256 tile).
// Version 7 (LEAN) first takes the largest of the row's 64 entries (a tree
// of max, no branch; entries past nB are zeros, so at worst it lets the row
// in) and skips the row unless it passes the threshold: once the
// thresholds have risen most rows of most tiles hold no candidate, and the
// per-entry bounds, compares and branches go.
template <bool LEAN = false>
DEV void topk_wg(const SimArgs& a) {
    v5_run<false>(a, [&](i64 i0, i64 j0, const float* acc) LAMBDA_INLINE {
#pragma unroll
        for (int h = 0; h < 2; h++) {
            const i64 i = v5_row(i0, 2 * h);
            if (i >= a.nA) continue;
            const float thr = a.thr[i];
            if (LEAN) {
                float m[16];
#pragma unroll
                for (int t = 0; t < 16; t++) m[t] = __builtin_fmaxf(acc[8 * t + 2 * h], acc[8 * t + 2 * h + 1]);
#pragma unroll
                for (int t = 0; t < 16; t++) m[t] = __builtin_fmaxf(m[t], __builtin_fmaxf(acc[8 * t + 4 + 2 * h], acc[8 * t + 5 + 2 * h]));
#pragma unroll
                for (int w = 8; w >= 1; w /= 2) {
#pragma unroll
                    for (int t = 0; t < w; t++) m[t] = __builtin_fmaxf(m[t], m[t + w]);
                }
                if (!(m[0] > thr)) continue;
            }
#pragma unroll
            for (int n = 0; n < V5_BN / 8; n++) {
#pragma unroll
                for (int e = 0; e < 2; e++) {
                    const i64 j = v5_col(j0, n, e);
                    if (j < a.nB) topk_emit(a, i, j, acc[4 * n + 2 * h + e], thr);
                }
            }
        }
    });
}

KERNEL __launch_bounds__(V2_THREADS) void topk_kernel5_f16(SimArgs a) { topk_wg(a); }
KERNEL __launch_bounds__(V2_THREADS) void topk_kernel7_f16(SimArgs a) { topk_wg<true>(a); }
#else
KERNEL __launch_bounds__(V1_THREADS) void topk_kernel1_f32(SimArgs a) { topk_v1<float>(a); }
KERNEL __launch_bounds__(V1_THREADS) void topk_kernel1_f16(SimArgs a) { topk_v1<u16>(a); }
KERNEL __launch_bounds__(V2_THREADS) void topk_kernel2_f16(SimArgs a) { topk_mma<2>(a); }
KERNEL __launch_bounds__(V2_THREADS) void topk_kernel3_f16(SimArgs a) { topk_mma<3>(a); }
KERNEL __launch_bounds__(V2_THREADS) void topk_kernel4_f16(SimArgs a) { topk_mma<4>(a); }
KERNEL __launch_bounds__(V1_THREADS, 2) void topk_kernel6_f32(SimArgs a) { topk_v6<float>(a); }
KERNEL __launch_bounds__(V1_THREADS, 2) void topk_kernel6_f16(SimArgs a) { topk_v6<u16>(a); }

// ----------------------------------------------------------------------------
// selection

// SelectArgs is the by-value parameter of topk_select (all fields 8 bytes;
// Go twin: selectArgs in ptx.go).
struct SelectArgs {
    u64* keys;  // nq x cap candidate keys
    u32* count; // nq: candidates held (<= cap)
    float* thr; // nq: thresholds, raised here
    u64* out;   // nq x k final keys (0 = padding), or null
    i64 nq;
    i64 cap;
    i64 k;
    i64 flags;  // SEL_GLOBAL_ONLY: never stage the keys in shared memory
};

#define SEL_THREADS 256
#define SEL_SMEM_KEYS 5888   // keys staged in shared memory (46 KiB) when they fit
#define SEL_GLOBAL_ONLY 1
#define SEL_SORT_OUT 2       // out gets the keys sorted, best first (m <= SEL_SMEM_KEYS)

// topk_select: grid.x = nq, 256 threads. With n = count[q] >= k it finds
// the k-th largest key by MSB-first radix select (up to 8 rounds of 8-bit
// histograms in shared memory, ending early once one key holds the prefix;
// keys are distinct, so exactly k keys are >= it), moves those k keys to the front of the query's slots in index
// order (in place: tile by tile, a ballot scan gives each kept key a slot
// <= its own), sets count[q] = k and thr[q] = value of the k-th key.
// With out set it then copies the first m = min(n, k) keys to out[q*k ...]
// and pads with key 0; with SEL_SORT_OUT (and m <= SEL_SMEM_KEYS) in
// descending order: each key goes to its rank, the number of keys above it
// (ties, which distinct keys never have, broken by position), counted in
// shared memory (m² compares: the host asks for it for k <= 2,048 and sorts
// larger k itself). When n <= SEL_SMEM_KEYS (k + headroom for k <= 1,792
// with the default tunables; flags can forbid it) the keys are first
// copied to shared memory, so the 8 histogram passes and the compaction
// read shared memory instead of global.
KERNEL __launch_bounds__(SEL_THREADS) void topk_select(SelectArgs s) {
    __shared__ u32 hist[256];
    __shared__ u32 wsum[SEL_THREADS / 32];
    __shared__ u32 gsum[32];
    __shared__ u32 s_digit, s_rank, s_one;
    __shared__ u64 s_kth;
    __shared__ u64 skeys[SEL_SMEM_KEYS];
    const i64 q = ctaid_x();
    if (q >= s.nq) return;
    const int tid = tid_x(), lane = tid & 31, warp = tid >> 5;
    u64* kq = s.keys + q * s.cap;
    u32 n = s.count[q];
    if ((i64)n > s.cap) n = (u32)s.cap; // the host redoes overflowed ranges first
    const u32 k = (u32)s.k;
    u32 m = n;
    if (n >= k) {
        // src: where the passes and the compaction read the keys (block-uniform)
        const u64* src = kq;
        if (n <= SEL_SMEM_KEYS && !(s.flags & SEL_GLOBAL_ONLY)) {
            for (u32 x = tid; x < n; x += SEL_THREADS) skeys[x] = kq[x];
            sync_threads();
            src = skeys;
        }
        u64 prefix = 0, mask = 0;
        u32 rank = k; // 1-based rank, from the top, among keys matching prefix
        for (int shift = 56; shift >= 0; shift -= 8) {
            for (int b = tid; b < 256; b += SEL_THREADS) hist[b] = 0;
            sync_threads();
            for (u32 x = tid; x < n; x += SEL_THREADS) {
                const u64 key = src[x];
                if ((key & mask) == prefix) atomic_add_u32(&hist[(key >> shift) & 255], 1);
            }
            sync_threads();
            // the digit holding the rank-th key from the top: lane l of warp
            // 0 sums buckets 255-8l .. 248-8l, the lane whose range holds the
            // rank scans its 8 (was: one thread over up to 256 buckets)
            if (tid < 32) {
                u32 g = 0;
#pragma unroll
                for (int j = 0; j < 8; j++) g += hist[255 - 8 * tid - j];
                gsum[tid] = g;
            }
            sync_threads();
            if (tid < 32) {
                u32 cum = 0;
#pragma unroll
                for (int j = 0; j < 32; j++) cum += (j < tid) ? gsum[j] : 0u;
                if (cum < rank && rank <= cum + gsum[tid]) { // exactly one lane
                    int d = 255 - 8 * tid;
                    for (int j = 0; j < 7; j++, d--) {
                        if (cum + hist[d] >= rank) break;
                        cum += hist[d];
                    }
                    s_digit = (u32)d;
                    s_rank = rank - cum;
                    s_one = hist[d] == 1;
                }
            }
            sync_threads();
            prefix |= (u64)s_digit << shift;
            mask |= (u64)255 << shift;
            rank = s_rank;
            const bool one = s_one != 0;
            sync_threads();
            if (one) break; // one key has this prefix: it is the k-th
        }
        // the k-th key: prefix when all 64 bits were decided, else the one
        // key under mask that matches it (keys are distinct)
        if (mask != ~(u64)0) {
            for (u32 x = tid; x < n; x += SEL_THREADS)
                if ((src[x] & mask) == prefix) s_kth = src[x];
            sync_threads();
            prefix = s_kth;
            sync_threads();
        }
        const u64 kth = prefix;
        if (n > k) {
            u32 outBase = 0;
            for (u32 base = 0; base < n; base += SEL_THREADS) {
                const u32 x = base + tid;
                u64 key = 0;
                bool keep = false;
                if (x < n) {
                    key = src[x];
                    keep = key >= kth;
                }
                const u32 bal = ballot(keep);
                const u32 before = __builtin_popcount(bal & ((1u << lane) - 1u));
                if (lane == 0) wsum[warp] = __builtin_popcount(bal);
                sync_threads(); // every key of this tile is read before any is written
                u32 off = outBase, total = 0;
                for (int w = 0; w < SEL_THREADS / 32; w++) {
                    const u32 c = wsum[w];
                    if (w < warp) off += c;
                    total += c;
                }
                if (keep) kq[off + before] = key;
                outBase += total;
                sync_threads();
            }
        }
        m = k;
        if (tid == 0) {
            s.thr[q] = key_value(kth);
            s.count[q] = k;
        }
    }
    if (s.out) {
        sync_threads(); // the compaction's writes to kq are done
        u64* o = s.out + q * s.k;
        if ((s.flags & SEL_SORT_OUT) && m <= SEL_SMEM_KEYS) {
            for (u32 r = tid; r < m; r += SEL_THREADS) skeys[r] = kq[r];
            sync_threads();
            for (u32 r = tid; r < m; r += SEL_THREADS) {
                const u64 key = skeys[r];
                u32 rank = 0;
                for (u32 j = 0; j < m; j++) {
                    const u64 x = skeys[j];
                    rank += (x > key) | ((x == key) & (j < r));
                }
                o[rank] = key;
            }
            for (u32 r = m + tid; r < k; r += SEL_THREADS) o[r] = 0;
        } else {
            for (u32 r = tid; r < k; r += SEL_THREADS) o[r] = r < m ? kq[r] : 0;
        }
    }
}
#endif // HPCRUN_SM90A
