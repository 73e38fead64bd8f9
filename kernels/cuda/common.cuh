// common.cuh - what every similarity kernel shares: the argument block, the
// (value, index) keys, the two tile engines and the argmax epilogue.
//
// A similarity kernel computes C = A·Bᵀ one block tile at a time and hands
// every C value to its op's epilogue; C is never stored. A and B are
// row-major, nA x ld and nB x ld, with ld a multiple of 32 and the columns
// from dim to ld zero (the host pads them), 16-byte aligned, either float32
// or IEEE float16 bits. Grid: x over A tiles, y over B tiles.
//
// Tile engines (the kernel versions of every op file):
//   v1 (FFMA): 64x64 tile, 256 threads, each thread a 4x4 register tile;
//       A and B staged through shared memory as float32 (float16 converted
//       exactly on load); every pair is one fma.rn.f32 chain in k order.
//   v2 (tensor cores, float16 only): 128x128 tile, 8 warps as 2 (M) x 4 (N),
//       each warp 64x32 = 4 x 4 mma.sync.m16n8k16 f32.f16.f16.f32 tiles,
//       k step 32, shared rows padded to 40 halves (80 bytes: the fragment
//       loads of a warp hit 32 distinct banks), the next k step's global
//       loads in flight during this one's mma. Products of two float16 are
//       exact in float32; the tensor core adds them in float32 (with
//       truncation inside one mma, see doc.go for the error bound).
//   v3 (tensor cores, float16 only): v2's tile, warps, fragments and mma
//       sequence (so every value is bit-identical to v2's), fed by a
//       two-stage cp.async pipeline (global -> shared without registers,
//       the next k step in flight during this one's mma) and ldmatrix.x4
//       fragment loads (one instruction per 16x16 A tile or 2 B tiles
//       instead of 4 lds.32). 40 KiB of static shared memory.
//   v4 (tensor cores, float16 only): v3 with a four-stage cp.async pipeline
//       (three k steps in flight, one barrier per k step) in 80 KiB of
//       dynamic shared memory (the host raises the kernel's limit); same
//       fragments and mma sequence, so bit-identical to v2 and v3.
//   v5 (wgmma, sm_90a only): see its section below.
//   v6 (FFMA, float32 or float16): version 1's arithmetic (every pair one
//       fma.rn.f32 chain in k order: the same bits) on a 128x128 tile, 8x8
//       per thread, 16-byte shared loads, two shared stages and register
//       prefetch, one barrier per 16-k step, 2 blocks per SM (<= 128
//       registers).
// In all, the value of a pair depends only on its two rows, never on the
// tile position, so results of base chunks merge exactly (kernels.MergeTopK)
// and chunked k-means assignments are identical.
#pragma once
#include "cuda_min.h"

// SimArgs is the single by-value parameter of every similarity kernel.
// Every field is 8 bytes (no padding); the Go side (ptx.go, simArgs) writes
// the same fields in the same order and a test compares the two lists.
struct SimArgs {
    const void* A;      // nA x ld, float32 or float16 bits
    const void* B;      // nB x ld
    i64 nA;             // rows of A
    i64 nB;             // rows of B
    i64 ld;             // padded dimension, multiple of 32
    i64 aOff;           // global index of A row 0 (prefix mask)
    i64 bOff;           // global index of B row 0 (result indices, prefix mask)
    const float* scale; // argmax: per B row factor, or null
    const float* bias;  // argmax: per B row addend, or null
    u64* best;          // argmax: per A row best key (atomic max)
    const float* thr;   // topk: per A row threshold, candidates are v > thr
    u32* count;         // topk: per A row candidates appended (may pass cap)
    u64* keys;          // topk: per A row cap candidate keys
    i64 cap;            // topk: candidate slots per A row
    i64 group;          // v5 engine: the tile order (v5_tile): 0 A tiles fastest, g > 0 groups of g A tiles
};

// ---------------------------------------------------------------------------
// keys: a (value, index) pair as one u64 whose unsigned order is the order of
// every op: larger value first, then smaller index. Key 0 is "none" (below
// every finite value). kernels/cuda/keys.go is the Go twin.

DEV u32 order_bits(float v) {
    u32 u = float_bits(v);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

// make_key: -0 is made +0 first, so equal values tie on the index.
DEV u64 make_key(float v, i64 idx) {
    if (v == 0.0f) v = 0.0f;
    return ((u64)order_bits(v) << 32) | (u64)(~(u32)idx);
}

DEV float key_value(u64 k) {
    u32 o = (u32)(k >> 32);
    return bits_float((o & 0x80000000u) ? (o & 0x7fffffffu) : ~o);
}

DEV float to_f(float x) { return x; }
DEV float to_f(u16 h) { return h2f(h); }

// ---------------------------------------------------------------------------
// v1: FFMA tile engine

#define V1_TILE 64
#define V1_BK 32
#define V1_THREADS 256

// v1_tile computes acc[r][c] = A[i0+ty+16r] · B[j0+tx+16c] (tx = tid&15,
// ty = tid>>4); rows past nA / nB read as zeros.
template <typename T>
DEV void v1_tile(const SimArgs& a, i64 i0, i64 j0, float acc[4][4],
                 float (*As)[V1_TILE + 1], float (*Bs)[V1_TILE + 1]) {
    const T* A = (const T*)a.A;
    const T* B = (const T*)a.B;
    const int tid = tid_x(), tx = tid & 15, ty = tid >> 4;
#pragma unroll
    for (int r = 0; r < 4; r++)
#pragma unroll
        for (int c = 0; c < 4; c++) acc[r][c] = 0.0f;
    for (i64 k0 = 0; k0 < a.ld; k0 += V1_BK) {
        // 64 rows x 32 k of A and of B: 8 elements per thread, k fastest
#pragma unroll
        for (int e = 0; e < 8; e++) {
            const int idx = tid + V1_THREADS * e, row = idx >> 5, kk = idx & 31;
            const i64 ia = i0 + row, jb = j0 + row;
            As[kk][row] = ia < a.nA ? to_f(A[ia * a.ld + k0 + kk]) : 0.0f;
            Bs[kk][row] = jb < a.nB ? to_f(B[jb * a.ld + k0 + kk]) : 0.0f;
        }
        sync_threads();
#pragma unroll 8
        for (int kk = 0; kk < V1_BK; kk++) {
            float av[4], bv[4];
#pragma unroll
            for (int r = 0; r < 4; r++) av[r] = As[kk][ty + 16 * r];
#pragma unroll
            for (int c = 0; c < 4; c++) bv[c] = Bs[kk][tx + 16 * c];
#pragma unroll
            for (int r = 0; r < 4; r++)
#pragma unroll
                for (int c = 0; c < 4; c++) acc[r][c] = fmaf_rn(av[r], bv[c], acc[r][c]);
        }
        sync_threads();
    }
}

DEV i64 v1_row(i64 i0, int r) { return i0 + (tid_x() >> 4) + 16 * r; }
DEV i64 v1_col(i64 j0, int c) { return j0 + (tid_x() & 15) + 16 * c; }

// ---------------------------------------------------------------------------
// v6: FFMA 128x128 tile, 8x8 per thread (version 1's arithmetic, bit for bit)

#define V6_TILE 128
#define V6_BK 16
#define V6_LDS (V6_TILE + 4)                // shared row stride in floats (16-byte rows)
#define V6_SMEM (2 * 2 * V6_BK * V6_LDS)    // floats: [stage][A|B][k][row]

// load8: 8 consecutive values at p (16-byte aligned) as float32, exactly
DEV void load8(const float* p, float v[8]) {
    const u32x4 x = ld128(p), y = ld128(p + 4);
#pragma unroll
    for (int e = 0; e < 4; e++) v[e] = bits_float(x[e]), v[4 + e] = bits_float(y[e]);
}
DEV void load8(const u16* p, float v[8]) {
    const u32x4 x = ld128(p);
#pragma unroll
    for (int e = 0; e < 4; e++) v[2 * e] = h2f((u16)(x[e] & 0xffff)), v[2 * e + 1] = h2f((u16)(x[e] >> 16));
}

// v6_tile: acc[r][c] = A[v6_row(i0, r)] · B[v6_col(j0, c)], each pair one
// fma.rn.f32 chain in k order (as version 1 and the CPU backend: the same
// bits). Thread (tx, ty) = (tid & 15, tid >> 4) owns tile rows 4ty..4ty+3
// and 64+4ty..64+4ty+3, and the same columns with tx, read from shared
// memory as 16-byte vectors (8 consecutive lanes read 128 contiguous bytes:
// no bank conflicts). Per 16-k step, thread t loads 8 consecutive k of row
// t & 127 (A) and of B row t & 127 (k half t >> 7) into registers during
// the previous step's FMAs, then stores them k-major into the other of two
// shared stages (a warp stores 32 consecutive floats per instruction): one
// barrier per step. Rows past nA / nB read as zeros; sm = V6_SMEM floats.
template <typename T>
DEV void v6_tile(const SimArgs& a, i64 i0, i64 j0, float acc[8][8], float* sm) {
    const T* A = (const T*)a.A;
    const T* B = (const T*)a.B;
    const int tid = tid_x(), tx = tid & 15, ty = tid >> 4;
#pragma unroll
    for (int r = 0; r < 8; r++)
#pragma unroll
        for (int c = 0; c < 8; c++) acc[r][c] = 0.0f;
    const int lrow = tid & 127, lk = (tid >> 7) * 8;
    const i64 ia = i0 + lrow, jb = j0 + lrow;
    float ra[8], rb[8];
    auto load = [&](i64 k0) {
#pragma unroll
        for (int e = 0; e < 8; e++) ra[e] = rb[e] = 0.0f;
        if (ia < a.nA) load8(A + ia * a.ld + k0 + lk, ra);
        if (jb < a.nB) load8(B + jb * a.ld + k0 + lk, rb);
    };
    if (a.ld > 0) load(0);
    int st = 0;
    for (i64 k0 = 0; k0 < a.ld; k0 += V6_BK) {
        float* As = sm + st * (2 * V6_BK * V6_LDS);
        float* Bs = As + V6_BK * V6_LDS;
#pragma unroll
        for (int e = 0; e < 8; e++) {
            As[(lk + e) * V6_LDS + lrow] = ra[e];
            Bs[(lk + e) * V6_LDS + lrow] = rb[e];
        }
        sync_threads(); // this stage is full; the other (step k0-16's) is no longer read
        if (k0 + V6_BK < a.ld) load(k0 + V6_BK);
#pragma unroll
        for (int kk = 0; kk < V6_BK; kk++) {
            float av[8], bv[8];
            const u32x4 a0 = ld128(As + kk * V6_LDS + 4 * ty), a1 = ld128(As + kk * V6_LDS + 64 + 4 * ty);
            const u32x4 b0 = ld128(Bs + kk * V6_LDS + 4 * tx), b1 = ld128(Bs + kk * V6_LDS + 64 + 4 * tx);
#pragma unroll
            for (int e = 0; e < 4; e++) {
                av[e] = bits_float(a0[e]), av[4 + e] = bits_float(a1[e]);
                bv[e] = bits_float(b0[e]), bv[4 + e] = bits_float(b1[e]);
            }
#pragma unroll
            for (int r = 0; r < 8; r++)
#pragma unroll
                for (int c = 0; c < 8; c++) acc[r][c] = fmaf_rn(av[r], bv[c], acc[r][c]);
        }
        st ^= 1;
    }
}

DEV i64 v6_row(i64 i0, int r) { return i0 + (r >> 2) * 64 + 4 * (tid_x() >> 4) + (r & 3); }
DEV i64 v6_col(i64 j0, int c) { return j0 + (c >> 2) * 64 + 4 * (tid_x() & 15) + (c & 3); }

// ---------------------------------------------------------------------------
// v2: mma.sync tile engine (float16 inputs, float32 accumulators)

#define V2_TILE 128
#define V2_BK 32
#define V2_LDS 40 // shared row stride in halves
#define V2_THREADS 256


// mma_16816 (cuda_min.h) is one mma.sync.m16n8k16; its comment gives the fragment layout.
DEV u32 lds32(const u16* p) { return *(const u32*)p; }

// v2_tile computes acc[mt][nt][e] = A[v2_row(mt,e)] · B[v2_col(nt,e)];
// rows past nA / nB read as zeros.
DEV void v2_tile(const SimArgs& a, i64 i0, i64 j0, float acc[4][4][4], u16* As, u16* Bs) {
    const u16* A = (const u16*)a.A;
    const u16* B = (const u16*)a.B;
    const int tid = tid_x(), lane = tid & 31, warp = tid >> 5;
    const int g = lane >> 2, t = lane & 3, wm = warp >> 2, wn = warp & 3;
#pragma unroll
    for (int mt = 0; mt < 4; mt++)
#pragma unroll
        for (int nt = 0; nt < 4; nt++)
#pragma unroll
            for (int e = 0; e < 4; e++) acc[mt][nt][e] = 0.0f;
    // 128 rows x 32 halves (4 x 16 bytes) of A and of B per k step, 2 + 2
    // 16-byte pieces per thread. The next step's pieces are loaded into
    // registers before the mma loop of this one, so global latency overlaps
    // the tensor-core work (one shared buffer, two barriers per step).
    u32x4 ra[2], rb[2];
    auto load = [&](i64 k0) {
#pragma unroll
        for (int e = 0; e < 2; e++) {
            const int idx = tid + V2_THREADS * e, row = idx >> 2, seg = idx & 3;
            const i64 ia = i0 + row, jb = j0 + row;
            ra[e] = u32x4{0, 0, 0, 0};
            rb[e] = u32x4{0, 0, 0, 0};
            if (ia < a.nA) ra[e] = ld128(A + ia * a.ld + k0 + seg * 8);
            if (jb < a.nB) rb[e] = ld128(B + jb * a.ld + k0 + seg * 8);
        }
    };
    if (a.ld > 0) load(0);
    for (i64 k0 = 0; k0 < a.ld; k0 += V2_BK) {
#pragma unroll
        for (int e = 0; e < 2; e++) {
            const int idx = tid + V2_THREADS * e, row = idx >> 2, seg = idx & 3;
            st128(As + row * V2_LDS + seg * 8, ra[e]);
            st128(Bs + row * V2_LDS + seg * 8, rb[e]);
        }
        sync_threads();
        if (k0 + V2_BK < a.ld) load(k0 + V2_BK);
#pragma unroll
        for (int ks = 0; ks < V2_BK; ks += 16) {
            u32 af[4][4], bf[4][2];
#pragma unroll
            for (int mt = 0; mt < 4; mt++) {
                const u16* p = As + (wm * 64 + mt * 16 + g) * V2_LDS + ks + 2 * t;
                af[mt][0] = lds32(p);
                af[mt][1] = lds32(p + 8 * V2_LDS);
                af[mt][2] = lds32(p + 8);
                af[mt][3] = lds32(p + 8 * V2_LDS + 8);
            }
#pragma unroll
            for (int nt = 0; nt < 4; nt++) {
                const u16* p = Bs + (wn * 32 + nt * 8 + g) * V2_LDS + ks + 2 * t;
                bf[nt][0] = lds32(p);
                bf[nt][1] = lds32(p + 8);
            }
#pragma unroll
            for (int mt = 0; mt < 4; mt++)
#pragma unroll
                for (int nt = 0; nt < 4; nt++) mma_16816(acc[mt][nt], af[mt], bf[nt]);
        }
        sync_threads();
    }
}

// ---------------------------------------------------------------------------
// v3: v2 with cp.async double buffering and ldmatrix

#define V3_SMEM (2 * 2 * V2_TILE * V2_LDS) // halves: [stage][A|B][128 rows x 40]

// v3_tile: as v2_tile (same acc layout, v2_row / v2_col), sm = V3_SMEM halves.
DEV void v3_tile(const SimArgs& a, i64 i0, i64 j0, float acc[4][4][4], u16* sm) {
    const u16* A = (const u16*)a.A;
    const u16* B = (const u16*)a.B;
    const int tid = tid_x(), lane = tid & 31, warp = tid >> 5;
    const int wm = warp >> 2, wn = warp & 3;
#pragma unroll
    for (int mt = 0; mt < 4; mt++)
#pragma unroll
        for (int nt = 0; nt < 4; nt++)
#pragma unroll
            for (int e = 0; e < 4; e++) acc[mt][nt][e] = 0.0f;
    const u32 base = smem_addr(sm);
    const u32 stageBytes = 2 * V2_TILE * V2_LDS * 2, bOff = V2_TILE * V2_LDS * 2;
    // stage st of k step kt: 128 rows x 32 halves of A and of B, 2 + 2
    // 16-byte pieces per thread (rows past nA / nB are zero-filled)
    auto load = [&](i64 kt, int st) {
#pragma unroll
        for (int e = 0; e < 2; e++) {
            const int idx = tid + V2_THREADS * e, row = idx >> 2, seg = idx & 3;
            const i64 ia = i0 + row, jb = j0 + row;
            const u32 off = (u32)(row * V2_LDS + seg * 8) * 2;
            cp_async16(base + st * stageBytes + off, A + (ia < a.nA ? ia : 0) * a.ld + kt * V2_BK + seg * 8, ia < a.nA);
            cp_async16(base + st * stageBytes + bOff + off, B + (jb < a.nB ? jb : 0) * a.ld + kt * V2_BK + seg * 8, jb < a.nB);
        }
        cp_async_commit();
    };
    // per-lane ldmatrix offsets (bytes): A matrices (rows 0-7|8-15) x (k 0|8),
    // B matrices (k 0|8) x (rows 0-7|8-15), each in fragment register order
    const u32 aLane = (u32)(((lane & 7) + 8 * ((lane >> 3) & 1)) * V2_LDS + 8 * (lane >> 4)) * 2;
    const u32 bLane = (u32)(((lane & 7) + 8 * (lane >> 4)) * V2_LDS + 8 * ((lane >> 3) & 1)) * 2;
    const i64 nk = a.ld / V2_BK;
    if (nk > 0) load(0, 0);
    for (i64 kt = 0; kt < nk; kt++) {
        const int st = (int)(kt & 1);
        if (kt + 1 < nk) {
            load(kt + 1, st ^ 1); // the stage computed in step kt-1 (freed by its trailing barrier)
            cp_async_wait1();
        } else {
            cp_async_wait0();
        }
        sync_threads();
        const u32 As = base + st * stageBytes, Bs = As + bOff;
#pragma unroll
        for (int ks = 0; ks < V2_BK; ks += 16) {
            u32 af[4][4], bf[4][2];
#pragma unroll
            for (int mt = 0; mt < 4; mt++)
                ldmatrix_x4(af[mt], As + (u32)((wm * 64 + mt * 16) * V2_LDS + ks) * 2 + aLane);
#pragma unroll
            for (int np = 0; np < 2; np++) {
                u32 r[4];
                ldmatrix_x4(r, Bs + (u32)((wn * 32 + np * 16) * V2_LDS + ks) * 2 + bLane);
                bf[2 * np][0] = r[0];
                bf[2 * np][1] = r[1];
                bf[2 * np + 1][0] = r[2];
                bf[2 * np + 1][1] = r[3];
            }
#pragma unroll
            for (int mt = 0; mt < 4; mt++)
#pragma unroll
                for (int nt = 0; nt < 4; nt++) mma_16816(acc[mt][nt], af[mt], bf[nt]);
        }
        sync_threads();
    }
}

// ---------------------------------------------------------------------------
// v4: v3 with a four-stage pipeline in dynamic shared memory

#define V4_STAGES 4
#define V4_SMEM_BYTES (V4_STAGES * 2 * V2_TILE * V2_LDS * 2) // 81920; Go twin: v4SharedBytes

DYNAMIC_SHARED(u16, dsmem); // cuda_min.h

// v4_tile: as v3_tile with stages kt, kt+1, kt+2 in flight while kt is
// computed. (Its load and mma steps repeat v3_tile's on purpose: both
// versions' PTX was checked on an H100, and moving the shared steps into
// helpers changes the emitted PTX, so that waits for the next GPU run.) Every iteration commits one group (empty past the end), so
// wait_group(STAGES-2) always means "step kt has landed".
DEV void v4_tile(const SimArgs& a, i64 i0, i64 j0, float acc[4][4][4]) {
    const u16* A = (const u16*)a.A;
    const u16* B = (const u16*)a.B;
    const int tid = tid_x(), lane = tid & 31, warp = tid >> 5;
    const int wm = warp >> 2, wn = warp & 3;
#pragma unroll
    for (int mt = 0; mt < 4; mt++)
#pragma unroll
        for (int nt = 0; nt < 4; nt++)
#pragma unroll
            for (int e = 0; e < 4; e++) acc[mt][nt][e] = 0.0f;
    const u32 base = smem_addr(dsmem);
    const u32 stageBytes = 2 * V2_TILE * V2_LDS * 2, bOff = V2_TILE * V2_LDS * 2;
    auto load = [&](i64 kt, int st) {
#pragma unroll
        for (int e = 0; e < 2; e++) {
            const int idx = tid + V2_THREADS * e, row = idx >> 2, seg = idx & 3;
            const i64 ia = i0 + row, jb = j0 + row;
            const u32 off = (u32)(row * V2_LDS + seg * 8) * 2;
            cp_async16(base + st * stageBytes + off, A + (ia < a.nA ? ia : 0) * a.ld + kt * V2_BK + seg * 8, ia < a.nA);
            cp_async16(base + st * stageBytes + bOff + off, B + (jb < a.nB ? jb : 0) * a.ld + kt * V2_BK + seg * 8, jb < a.nB);
        }
    };
    const u32 aLane = (u32)(((lane & 7) + 8 * ((lane >> 3) & 1)) * V2_LDS + 8 * (lane >> 4)) * 2;
    const u32 bLane = (u32)(((lane & 7) + 8 * (lane >> 4)) * V2_LDS + 8 * ((lane >> 3) & 1)) * 2;
    const i64 nk = a.ld / V2_BK;
    for (int s = 0; s < V4_STAGES - 1; s++) {
        if (s < nk) load(s, s);
        cp_async_commit();
    }
    for (i64 kt = 0; kt < nk; kt++) {
        cp_async_wait2(); // V4_STAGES - 2: step kt has landed (for this thread)
        sync_threads();   // ... for every thread; and step kt-1's stage is free
        const i64 next = kt + V4_STAGES - 1;
        if (next < nk) load(next, (int)(next % V4_STAGES));
        cp_async_commit();
        const u32 As = base + (u32)(kt % V4_STAGES) * stageBytes, Bs = As + bOff;
#pragma unroll
        for (int ks = 0; ks < V2_BK; ks += 16) {
            u32 af[4][4], bf[4][2];
#pragma unroll
            for (int mt = 0; mt < 4; mt++)
                ldmatrix_x4(af[mt], As + (u32)((wm * 64 + mt * 16) * V2_LDS + ks) * 2 + aLane);
#pragma unroll
            for (int np = 0; np < 2; np++) {
                u32 r[4];
                ldmatrix_x4(r, Bs + (u32)((wn * 32 + np * 16) * V2_LDS + ks) * 2 + bLane);
                bf[2 * np][0] = r[0];
                bf[2 * np][1] = r[1];
                bf[2 * np + 1][0] = r[2];
                bf[2 * np + 1][1] = r[3];
            }
#pragma unroll
            for (int mt = 0; mt < 4; mt++)
#pragma unroll
                for (int nt = 0; nt < 4; nt++) mma_16816(acc[mt][nt], af[mt], bf[nt]);
        }
    }
    cp_async_wait0(); // only empty groups remain; drain before exit
}

// mma_tile: the engine of tensor-core version V (2, 3 or 4) with its shared memory.
template <int V>
DEV void mma_tile(const SimArgs& a, i64 i0, i64 j0, float acc[4][4][4]) {
    if (V == 4) {
        v4_tile(a, i0, j0, acc);
    } else if (V == 3) {
        __shared__ __attribute__((aligned(16))) u16 sm[V3_SMEM];
        v3_tile(a, i0, j0, acc, sm);
    } else {
        __shared__ __attribute__((aligned(16))) u16 As[V2_TILE * V2_LDS];
        __shared__ __attribute__((aligned(16))) u16 Bs[V2_TILE * V2_LDS];
        v2_tile(a, i0, j0, acc, As, Bs);
    }
}

// v2_row: A row of acc[mt][.][e]; v2_col: B row of acc[.][nt][e] (v2 and v3).
DEV i64 v2_row(i64 i0, int mt, int e) {
    const int tid = tid_x(), lane = tid & 31, wm = (tid >> 5) >> 2;
    return i0 + wm * 64 + mt * 16 + (lane >> 2) + 8 * (e >> 1);
}
DEV i64 v2_col(i64 j0, int nt, int e) {
    const int tid = tid_x(), lane = tid & 31, wn = (tid >> 5) & 3;
    return j0 + wn * 32 + nt * 8 + 2 * (lane & 3) + (e & 1);
}

// ---------------------------------------------------------------------------
// argmax epilogue (MaxArg, ShiftedMax, NearestCentroid, PrefixMax): per A row
// the best key over B rows j (with PREFIX only global j < global i) of
// v = dot·scale[j] + bias[j], merged over blocks with atom.max.u64 into
// best[i] (which the host zeroes first).

DEV float apply_sb(const SimArgs& a, i64 j, float v) {
    if (a.scale) v = v * a.scale[j];
    if (a.bias) v = v + a.bias[j];
    return v;
}

// quad_max_atomic: the 4 lanes of a quad hold the same A row i (mma
// fragments): the largest of their keys goes to best[i] with one atomic,
// from the quad's lead lane, and is returned to all four. Every lane of the
// warp must call it.
DEV u64 quad_max_atomic(const SimArgs& a, i64 i, u64 best, bool quad_lead) {
    u64 o = shfl_xor64(best, 1);
    if (o > best) best = o;
    o = shfl_xor64(best, 2);
    if (o > best) best = o;
    if (quad_lead && best) atomic_max_u64(&a.best[i], best);
    return best;
}

// ---------------------------------------------------------------------------
// band epilogue (the exact filter, exact.cu): the argmax epilogue on float16
// operands that also appends every entry within the band width w = thr[0]
// of the row's running best to the row's candidate slots (count, keys, cap).
// The running best (this tile's, or best[i] if larger) is never above the
// final one, so the entries appended include every one within w of the
// final best: exact.cu's rescore_argmax recomputes those exactly.

// band_thr: a float32 lower bound of m - w (the subtraction's rounding and
// more: 2^-21 of the magnitudes).
DEV float band_thr(float m, float w) {
    const float t = m - w;
    return t - 4.76837158203125e-7f * (__builtin_fabsf(m) + w);
}

DEV void band_emit(const SimArgs& a, i64 i, i64 j, float v) {
    const u32 pos = atomic_add_u32(&a.count[i], 1);
    if ((i64)pos < a.cap) a.keys[i * a.cap + pos] = make_key(v, a.bOff + j);
}

// band_row_thr: the row's threshold from the quad's best q (nonzero) and
// the global running best (which may lag: only lower, so more candidates).
DEV float band_row_thr(const SimArgs& a, i64 i, u64 q) {
    const u64 g = *(volatile const u64*)&a.best[i];
    return band_thr(key_value(g > q ? g : q), a.thr[0]);
}

template <typename T, bool PREFIX>
DEV void argmax_v1(const SimArgs& a) {
    __shared__ float As[V1_BK][V1_TILE + 1];
    __shared__ float Bs[V1_BK][V1_TILE + 1];
    const i64 i0 = (i64)ctaid_x() * V1_TILE, j0 = (i64)ctaid_y() * V1_TILE;
    if (PREFIX && a.bOff + j0 >= a.aOff + i0 + V1_TILE) return; // whole tile has j >= i
    float acc[4][4];
    v1_tile<T>(a, i0, j0, acc, As, Bs);
#pragma unroll
    for (int r = 0; r < 4; r++) {
        const i64 i = v1_row(i0, r);
        if (i >= a.nA) continue;
        u64 best = 0;
#pragma unroll
        for (int c = 0; c < 4; c++) {
            const i64 j = v1_col(j0, c);
            if (j >= a.nB || (PREFIX && a.bOff + j >= a.aOff + i)) continue;
            const u64 key = make_key(apply_sb(a, j, acc[r][c]), a.bOff + j);
            if (key > best) best = key;
        }
        if (best) atomic_max_u64(&a.best[i], best);
    }
}

// argmax_v6: the argmax epilogue on the v6 engine; the 16 lanes sharing a
// row (tx) reduce with shuffles, one atomic per row and half warp.
template <typename T, bool PREFIX>
DEV void argmax_v6(const SimArgs& a) {
    __shared__ __attribute__((aligned(16))) float sm[V6_SMEM];
    const i64 i0 = (i64)ctaid_x() * V6_TILE, j0 = (i64)ctaid_y() * V6_TILE;
    if (PREFIX && a.bOff + j0 >= a.aOff + i0 + V6_TILE) return; // whole tile has j >= i
    float acc[8][8];
    v6_tile<T>(a, i0, j0, acc, sm);
    const bool lead = (tid_x() & 15) == 0;
#pragma unroll
    for (int r = 0; r < 8; r++) {
        const i64 i = v6_row(i0, r);
        u64 best = 0;
        if (i < a.nA) {
#pragma unroll
            for (int c = 0; c < 8; c++) {
                const i64 j = v6_col(j0, c);
                if (j >= a.nB || (PREFIX && a.bOff + j >= a.aOff + i)) continue;
                const u64 key = make_key(apply_sb(a, j, acc[r][c]), a.bOff + j);
                if (key > best) best = key;
            }
        }
#pragma unroll
        for (int m = 1; m < 16; m <<= 1) {
            const u64 o = shfl_xor64(best, m);
            if (o > best) best = o;
        }
        if (lead && best) atomic_max_u64(&a.best[i], best);
    }
}

// argmax_mma: the epilogue on the tensor-core engines (V = 2, 3 or 4);
// with BAND the band epilogue.
template <int V, bool PREFIX, bool BAND = false>
DEV void argmax_mma(const SimArgs& a) {
    const i64 i0 = (i64)ctaid_x() * V2_TILE, j0 = (i64)ctaid_y() * V2_TILE;
    if (PREFIX && a.bOff + j0 >= a.aOff + i0 + V2_TILE) return;
    float acc[4][4][4];
    mma_tile<V>(a, i0, j0, acc);
    const bool quad_lead = (lane_id() & 3) == 0;
#pragma unroll
    for (int mt = 0; mt < 4; mt++) {
#pragma unroll
        for (int h = 0; h < 2; h++) {
            const i64 i = v2_row(i0, mt, 2 * h);
            u64 best = 0;
            if (i < a.nA) {
#pragma unroll
                for (int nt = 0; nt < 4; nt++) {
#pragma unroll
                    for (int e = 0; e < 2; e++) {
                        const i64 j = v2_col(j0, nt, e);
                        if (j >= a.nB || (PREFIX && a.bOff + j >= a.aOff + i)) continue;
                        const u64 key = make_key(apply_sb(a, j, acc[mt][nt][2 * h + e]), a.bOff + j);
                        if (key > best) best = key;
                    }
                }
            }
            const u64 q = quad_max_atomic(a, i, best, quad_lead);
            if (BAND && q) {
                const float thr = band_row_thr(a, i, q);
#pragma unroll
                for (int nt = 0; nt < 4; nt++) {
#pragma unroll
                    for (int e = 0; e < 2; e++) {
                        const i64 j = v2_col(j0, nt, e);
                        if (j >= a.nB || (PREFIX && a.bOff + j >= a.aOff + i)) continue;
                        const float v = apply_sb(a, j, acc[mt][nt][2 * h + e]);
                        if (v >= thr) band_emit(a, i, j, v);
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// v5: warpgroup MMA (wgmma.mma_async, sm_90a only; compiled into the
// *_sm90a.ptx modules with -DHPCRUN_SM90A)
//
// 128x256 tile (A rows x B rows), 256 threads = 2 warpgroups, warpgroup g
// computes A rows 64g..64g+63 against all 256 B rows with one
// wgmma.m64n256k16 per 16 k: 128 float32 accumulators per thread. Both
// operands come from shared memory through matrix descriptors, in the
// 128-byte-swizzled K-major layout: a stage holds 64 k (128 bytes) of every
// row; row r's 16-byte piece c sits at r*128 + ((c ^ (r & 7)) * 16), so
// 8 rows form a 1024-byte swizzle atom (the descriptor's stride byte offset)
// and the k16 steps inside a stage advance the start address by 32 bytes.
// Four stages of 48 KiB in dynamic shared memory (plus 1 KiB to align the
// first atom): after each barrier the warpgroups issue step kt's wgmma
// group, then cp.async fills step kt+2 while the tensor cores run, and step
// kt-1's group may still be in flight until wgmma.wait_group 1;
// each thread fences its landed pieces into the async proxy
// (fence.proxy.async) before the barrier that hands them to the wgmma.
// The mma sequence is v2's in k order (16 products at a time into float32),
// so the error bound of doc.go holds; whether its bits equal v2's is for
// the GPU run to show (TestGPUVersionsAgree).
//
// Accumulator layout (PTX ISA, wgmma .m64nNk16 D fragments): warp w of the
// warpgroup holds rows 16w..16w+15; acc[4n+e] is row (lane>>2) + 8(e>>1),
// column 8n + 2(lane&3) + (e&1) — v2's m16n8 fragment, 32 times along N.

#define V5_BM 128
#define V5_BN 256
#define V5_BK 64
#define V5_STAGES 4
#define V5_ACC 128
#define V5_STAGE_BYTES ((V5_BM + V5_BN) * V5_BK * 2)      // 49152
#define V5_SMEM_BYTES (V5_STAGES * V5_STAGE_BYTES + 1024) // 197632; Go twin: v5SharedBytes

#ifdef HPCRUN_SM90A
// descriptor of a K-major operand in 128B-swizzled atoms starting at shared
// address addr: start>>4 (bits 0-13), leading byte offset 1 (unused for
// swizzled K-major), stride byte offset 1024>>4 (bits 32-45), swizzle mode 1
// = 128 bytes (bits 62-63).
DEV u64 wg_desc(u32 addr) {
    return (u64)((addr & 0x3ffff) >> 4) | ((u64)1 << 16) | ((u64)(1024 >> 4) << 32) | ((u64)1 << 62);
}



// v5_tile: the first row of A (i0) and of B (j0) of tile t of the v5
// engine's tilesX x tilesY tiles. group 0 (or >= tilesX): A tiles fastest
// (t % tilesX, t / tilesX), the order of a grid of one block per tile.
// group g > 0: the A tiles in groups of g, each group's g x tilesY tiles A
// fastest, so the blocks running at once share a few A and B tiles in L2
// (g = 1: B tiles fastest). Every order covers each tile once.
DEV void v5_tile(const SimArgs& a, u32 t, u32 tilesX, u32 tilesY, i64& i0, i64& j0) {
    u32 x = t % tilesX, y = t / tilesX;
    const u32 g = (u32)a.group;
    if (a.group > 0 && g < tilesX) {
        const u32 per = g * tilesY, x0 = (t / per) * g, r = t % per;
        const u32 w = tilesX - x0 < g ? tilesX - x0 : g; // the last group may be narrower
        x = x0 + r % w, y = r / w;
    }
    i0 = (i64)x * V5_BM, j0 = (i64)y * V5_BN;
}

// v5_run: the v5 engine over every tile the block owns. The grid is either
// one block per tile (tiles_x x tiles_y, each block one tile) or persistent
// (any smaller grid, e.g. one block per SM: block b takes tiles b, b +
// blocks, b + 2 blocks, ... in v5_tile's order). Its k steps form one stream
// across its tiles: stage s%4 holds stream step s, and the copies for the
// next tile's first two steps are issued during the current tile's last two
// steps, so they land while its epilogue runs. For each tile: acc[4n+e] =
// A[v5_row(i0, e)] · B[v5_col(j0, n, e)] (rows past nA / nB and k past ld
// read as zeros), then epi(i0, j0, acc). PREFIX skips the tiles wholly at or
// above the diagonal (every B row at or after every A row).
template <bool PREFIX, typename Epi>
DEV void v5_run(const SimArgs& a, Epi epi) {
    const u16* A = (const u16*)a.A;
    const u16* B = (const u16*)a.B;
    const u32 tilesX = (u32)((a.nA + V5_BM - 1) / V5_BM), tilesY = (u32)((a.nB + V5_BN - 1) / V5_BN);
    const u32 total = tilesX * tilesY;
    const u32 blocks = (u32)nctaid_x() * (u32)nctaid_y();
    // the first tile at or after t (stepping by blocks) that is computed
    auto next = [&](u32 t) LAMBDA_INLINE -> u32 {
        for (; t < total; t += blocks) {
            if (!PREFIX) return t;
            i64 i0, j0;
            v5_tile(a, t, tilesX, tilesY, i0, j0);
            if (a.bOff + j0 < a.aOff + i0 + V5_BM) return t;
        }
        return total;
    };
    u32 t = next((u32)ctaid_y() * (u32)nctaid_x() + (u32)ctaid_x());
    if (t >= total) return;
    const int tid = tid_x(), wg = tid >> 7;
    const u32 base = (smem_addr(dsmem) + 1023u) & ~1023u;
    const u32 bOff = V5_BM * V5_BK * 2;
    const i64 nk = (a.ld + V5_BK - 1) / V5_BK;
    // Thread tid copies piece c = tid&7 of rows r + 32e (r = tid>>3): 4 of A
    // (e < 4) and 8 of B per step. Every one of its rows has the same
    // swizzled piece position (r + 32e = r mod 8), so its shared offsets are
    // soff + e*4096 and its global addresses row pointer + e*32*ld + 64 kt.
    const int r = tid >> 3, c = tid & 7;
    const u32 soff = (u32)(r * 128 + ((c ^ (r & 7)) << 4));
    const i64 stride = 32 * a.ld;
    // the copy cursor: stream step ls = (tile lt, step lk); its tile's row
    // pointers and rows inside A / B (one bit per e)
    u32 lt = t, ls = 0;
    i64 lk = 0;
    const u16 *gA = A, *gB = B;
    u32 okA = 0, okB = 0;
    auto aim = [&]() LAMBDA_INLINE {
        if (lt >= total) return;
        i64 i0, j0;
        v5_tile(a, lt, tilesX, tilesY, i0, j0);
        gA = A + (i0 + r) * a.ld + c * 8;
        gB = B + (j0 + r) * a.ld + c * 8;
        okA = 0, okB = 0;
#pragma unroll
        for (int e = 0; e < 8; e++) {
            if (e < 4 && i0 + r + 32 * e < a.nA) okA |= 1u << e;
            if (j0 + r + 32 * e < a.nB) okB |= 1u << e;
        }
    };
    // copy stream step ls into stage ls%4 (nothing past the last tile), one
    // commit group per step, and advance the cursor
    auto load = [&]() LAMBDA_INLINE {
        if (lt < total) {
            const u32 sA = base + (ls % V5_STAGES) * V5_STAGE_BYTES + soff, sB = sA + bOff;
            const i64 k = lk * V5_BK;
            const bool kok = k + c * 8 < a.ld;
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const bool ok = kok && ((okA >> e) & 1);
                cp_async16(sA + e * 4096, ok ? gA + e * stride + k : A, ok);
            }
#pragma unroll
            for (int e = 0; e < 8; e++) {
                const bool ok = kok && ((okB >> e) & 1);
                cp_async16(sB + e * 4096, ok ? gB + e * stride + k : B, ok);
            }
        }
        cp_async_commit();
        ls++;
        if (++lk == nk) {
            lk = 0;
            lt = next(lt + blocks);
            aim();
        }
    };
    aim();
    // prologue: stream steps 0 and 1 in flight
    for (int s = 0; s < V5_STAGES - 2; s++) load();
    for (u32 g = 0; t < total; t = next(t + blocks)) {
        i64 i0, j0;
        v5_tile(a, t, tilesX, tilesY, i0, j0);
        float acc[V5_ACC];
#pragma unroll
        for (int i = 0; i < V5_ACC; i++) acc[i] = 0.0f;
        wg_fence_acc(acc, V5_ACC);
        for (i64 kt = 0; kt < nk; kt++, g++) {
            cp_async_wait1();    // groups committed: g+2; stream step g has landed (for this thread)
            fence_proxy_async(); // ... and is visible to the tensor cores
            sync_threads();      // for every thread; and every warpgroup is past step g-2's wgmma
            // the tensor cores first, then the copies for step g+2 (maybe the
            // next tile's) while they run
            const u32 st = base + (g % V5_STAGES) * V5_STAGE_BYTES;
            const u32 sA = st + (u32)wg * (64 * 128), sB = st + bOff;
            wg_fence();
#pragma unroll
            for (int ks = 0; ks < V5_BK / 16; ks++) wgmma_m64n256k16(acc, wg_desc(sA + 32 * ks), wg_desc(sB + 32 * ks));
            wg_commit();
            load(); // into the stage of step g-2
            wg_wait1(); // step g-1's group is done: its stage may be refilled after the next barrier
        }
        wg_wait0();
        wg_fence_acc(acc, V5_ACC);
        epi(i0, j0, acc); // no shared memory: the next tile's copies land meanwhile
    }
    cp_async_wait0();
}

DEV i64 v5_row(i64 i0, int e) {
    const int tid = tid_x(), lane = tid & 31;
    return i0 + (tid >> 7) * 64 + ((tid >> 5) & 3) * 16 + (lane >> 2) + 8 * (e >> 1);
}
DEV i64 v5_col(i64 j0, int n, int e) { return j0 + 8 * n + 2 * (lane_id() & 3) + (e & 1); }

// argmax_cols: the best column of each of the thread's two rows (r0, r1)
// over a v5 tile, as a float and a column offset from c0 (its column for n
// = 0, e = 0): one pass over the columns serves both rows (each column's
// scale and bias read once). A strictly larger value wins and the columns
// come in increasing order, so the kept one is the key order's (larger
// value, then smaller index; -0 ties +0 in both). FULL: every column is
// inside B and (PREFIX) before every row of the tile, so no bounds are
// checked; each row keeps 4 running bests (n mod 4: four independent
// compare chains instead of one 64 long), each starting at its first column
// with -inf (that column's key order too), merged at the end with ties to
// the smaller column. Otherwise one running best per row, bj < 0 meaning
// none yet. SCALE: a.scale may be set (the full tiles take a copy of the
// loop without it: L2 k-means, MaxArg).
template <bool FULL, bool PREFIX, bool SCALE = true>
DEV void argmax_cols(const SimArgs& a, const float* acc, i64 c0, i64 r0, i64 r1, float bv[2], int bj[2]) {
    constexpr int P = FULL ? 4 : 1;
    const bool hasS = SCALE && a.scale != nullptr, hasB = a.bias != nullptr;
    float pv[2][P];
    int pj[2][P];
#pragma unroll
    for (int h = 0; h < 2; h++) {
#pragma unroll
        for (int p = 0; p < P; p++) pv[h][p] = FULL ? -__builtin_inff() : 0.0f, pj[h][p] = FULL ? 8 * p : -1;
    }
#pragma unroll
    for (int n = 0; n < V5_BN / 8; n++) {
#pragma unroll
        for (int e = 0; e < 2; e++) {
            const int jj = 8 * n + e;
            const i64 j = c0 + jj;
            if (!FULL && j >= a.nB) continue;
            const float s = hasS ? a.scale[j] : 1.0f, b = hasB ? a.bias[j] : 0.0f;
#pragma unroll
            for (int h = 0; h < 2; h++) {
                if (!FULL && PREFIX && a.bOff + j >= a.aOff + (h ? r1 : r0)) continue;
                float v = acc[4 * n + 2 * h + e];
                if (hasS) v = v * s;
                if (hasB) v = v + b;
                float& bvp = pv[h][n % P];
                int& bjp = pj[h][n % P];
                if ((!FULL && bjp < 0) || v > bvp) bvp = v, bjp = jj;
            }
        }
    }
#pragma unroll
    for (int h = 0; h < 2; h++) {
        bv[h] = pv[h][0], bj[h] = pj[h][0];
#pragma unroll
        for (int p = 1; p < P; p++) {
            if (pv[h][p] > bv[h] || (pv[h][p] == bv[h] && pj[h][p] < bj[h])) bv[h] = pv[h][p], bj[h] = pj[h][p];
        }
    }
}

// wg_row: f(j, x) for each entry x of the thread's row i (h) of a v5 tile
// whose column j is inside B and (PREFIX) before the row.
template <bool PREFIX, typename F>
DEV void wg_row(const SimArgs& a, i64 i, i64 j0, int h, const float* acc, F f) {
#pragma unroll
    for (int n = 0; n < V5_BN / 8; n++) {
#pragma unroll
        for (int e = 0; e < 2; e++) {
            const i64 j = v5_col(j0, n, e);
            if (j >= a.nB || (PREFIX && a.bOff + j >= a.aOff + i)) continue;
            f(j, acc[4 * n + 2 * h + e]);
        }
    }
}

// band_wg: the band epilogue's appends for row i (BAND, exact.cu) on the v5
// engine, q being the row's best key so far (band_row_thr).
template <bool PREFIX>
DEV void band_wg(const SimArgs& a, i64 i, u64 q, i64 j0, int h, const float* acc) {
    const float thr = band_row_thr(a, i, q);
    wg_row<PREFIX>(a, i, j0, h, acc, [&](i64 j, float x) LAMBDA_INLINE {
        const float v = apply_sb(a, j, x);
        if (v >= thr) band_emit(a, i, j, v);
    });
}

// argmax_wg: the argmax epilogue on the v5 engine: version 5 makes every
// entry's key and keeps the largest per row; version 7 (LEAN) finds each
// row's best with argmax_cols (fewer instructions per entry, no per-entry
// bounds on full tiles, four compare chains per row) and makes one key per
// row. The same bits; then one atomic per row and quad.
template <bool PREFIX, bool BAND = false, bool LEAN = false>
DEV void argmax_wg(const SimArgs& a) {
    v5_run<PREFIX>(a, [&](i64 i0, i64 j0, const float* acc) LAMBDA_INLINE {
        const bool quad_lead = (lane_id() & 3) == 0;
        if constexpr (LEAN) {
            const i64 r0 = v5_row(i0, 0), r1 = v5_row(i0, 2); // the thread's rows
            const i64 c0 = v5_col(j0, 0, 0);
            float bv[2];
            int bj[2];
            if (j0 + V5_BN <= a.nB && (!PREFIX || a.bOff + j0 + V5_BN <= a.aOff + i0)) {
                if (a.scale) {
                    argmax_cols<true, PREFIX>(a, acc, c0, r0, r1, bv, bj);
                } else {
                    argmax_cols<true, PREFIX, false>(a, acc, c0, r0, r1, bv, bj);
                }
            } else {
                argmax_cols<false, PREFIX>(a, acc, c0, r0, r1, bv, bj);
            }
#pragma unroll
            for (int h = 0; h < 2; h++) {
                const i64 i = h ? r1 : r0;
                const u64 best = (i < a.nA && bj[h] >= 0) ? make_key(bv[h], a.bOff + c0 + bj[h]) : 0;
                const u64 q = quad_max_atomic(a, i, best, quad_lead);
                if (BAND && q) band_wg<PREFIX>(a, i, q, j0, h, acc);
            }
        } else {
#pragma unroll
            for (int h = 0; h < 2; h++) {
                const i64 i = v5_row(i0, 2 * h);
                u64 best = 0;
                if (i < a.nA) {
                    wg_row<PREFIX>(a, i, j0, h, acc, [&](i64 j, float x) LAMBDA_INLINE {
                        const u64 key = make_key(apply_sb(a, j, x), a.bOff + j);
                        if (key > best) best = key;
                    });
                }
                const u64 q = quad_max_atomic(a, i, best, quad_lead);
                if (BAND && q) band_wg<PREFIX>(a, i, q, j0, h, acc);
            }
        }
    });
}
#endif // HPCRUN_SM90A

