// hostsim.h - cuda_min.h's declarations and primitives on the CPU, so the
// kernels' own CUDA C (common.cuh and the op files, unchanged) runs as a
// host program: one std::thread per GPU thread, blocks one after another
// (sim.cc is the driver, TestHostSim builds and runs it). It is a model of
// the PTX the primitives stand for, written from the PTX ISA:
//   - shared memory: every __shared__ variable and the dynamic window live
//     in one ELF section ("simshared"); shared addresses are offsets into
//     it, refilled with 0xff (float16 NaN) before every block, so a read of
//     a byte no copy wrote shows up as NaN;
//   - cp.async copies and wgmma groups are queued per thread and done either
//     at issue (eager) or as late as the PTX allows, at the wait_group that
//     retires them (lazy): a missing wait, a stage refilled while a wgmma may
//     still read it, or a result read before its wait gives wrong answers
//     in one of the modes (sim.cc runs all four);
//   - mma.sync, ldmatrix and shfl exchange values between the lanes of a
//     warp; wgmma computes each thread's accumulator fragment from shared
//     memory through the matrix descriptor (128-byte swizzle, K-major).
// What it cannot show: timing, and whether the hardware reads descriptors
// and fragments as this model does (only a GPU shows that; the model agrees
// with versions 1-4, which passed on an H100).
#pragma once
#include <atomic>
#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#define __global__
#define __device__
#define __shared__ static __attribute__((section("simshared")))
#define __launch_bounds__(...)
#define DEV static inline
#define KERNEL extern "C"
#define LAMBDA_INLINE

typedef unsigned long long u64;
typedef long long i64;
typedef unsigned int u32;
typedef unsigned short u16;
typedef u32 u32x4 __attribute__((ext_vector_type(4)));

namespace sim {

struct CpOp {
    unsigned char* dst;
    const unsigned char* src;
    int n; // 16, or 0: zero fill
};
struct WgOp {
    float* d;
    u64 da, db;
};
struct Thread {
    int tid = 0, cx = 0, cy = 0, gx = 1, gy = 1;
    std::vector<std::vector<CpOp>> cpGroups;
    std::vector<CpOp> cpOpen;
    std::vector<std::vector<WgOp>> wgGroups;
    std::vector<WgOp> wgOpen;
};

extern thread_local Thread* self;
extern bool lazyCp, lazyWg;
extern std::barrier<>* blockBar;
extern std::barrier<>* warpBar[8];
extern u64 slot[8][32][4];

unsigned char* sharedBase();
size_t sharedSize();
[[noreturn]] void fail(const char* what);

inline void doCopy(const CpOp& op) {
    if (op.n) std::memcpy(op.dst, op.src, 16);
    else std::memset(op.dst, 0, 16);
}
inline void retireCp(size_t keep) {
    while (self->cpGroups.size() > keep) {
        for (const CpOp& op : self->cpGroups.front()) doCopy(op);
        self->cpGroups.erase(self->cpGroups.begin());
    }
}
inline void warpSync() { warpBar[self->tid >> 5]->arrive_and_wait(); }

inline float half(u16 h) { return (float)__builtin_bit_cast(_Float16, h); }

// the 16-bit element (row, k) of a K-major wgmma operand at descriptor desc
inline float descElem(u64 desc, int row, int k) {
    if ((desc >> 62) != 1) fail("wgmma descriptor: only the 128-byte swizzle is modelled");
    const u32 start = (u32)(desc & 0x3fff) << 4, sbo = (u32)((desc >> 32) & 0x3fff) << 4;
    if ((start & 1023) >= 128) fail("wgmma descriptor: start address not in the first row of a 1024-byte atom");
    u32 addr = start + (u32)(row >> 3) * sbo + (u32)(row & 7) * 128 + 2 * (u32)k;
    addr ^= ((addr >> 7) & 7) << 4; // 128B swizzle: 16-byte piece ^= row within the atom
    if (addr + 2 > sharedSize()) fail("wgmma operand outside shared memory");
    u16 h;
    std::memcpy(&h, sharedBase() + addr, 2);
    return half(h);
}

// wgmma.m64n256k16: this thread's 128 accumulators (warp w of the
// warpgroup: rows 16w + lane/4 + 8(e>>1), columns 8n + 2(lane%4) + (e&1))
inline void doWg(const WgOp& op) {
    const int w = (self->tid >> 5) & 3, lane = self->tid & 31;
    for (int i = 0; i < 128; i++) {
        const int n = i >> 2, e = i & 3;
        const int row = 16 * w + (lane >> 2) + 8 * (e >> 1), col = 8 * n + 2 * (lane & 3) + (e & 1);
        float s = 0;
        for (int k = 0; k < 16; k++) s += descElem(op.da, row, k) * descElem(op.db, col, k);
        op.d[i] += s;
    }
}
inline void retireWg(size_t keep) {
    while (self->wgGroups.size() > keep) {
        for (const WgOp& op : self->wgGroups.front()) doWg(op);
        self->wgGroups.erase(self->wgGroups.begin());
    }
}

} // namespace sim

DEV int tid_x() { return sim::self->tid; }
DEV int ctaid_x() { return sim::self->cx; }
DEV int ctaid_y() { return sim::self->cy; }
DEV int nctaid_x() { return sim::self->gx; }
DEV int nctaid_y() { return sim::self->gy; }
DEV int lane_id() { return sim::self->tid & 31; }

DEV void sync_threads() { sim::blockBar->arrive_and_wait(); }

DEV u32 atomic_add_u32(u32* p, u32 v) { return __atomic_fetch_add(p, v, __ATOMIC_RELAXED); }
DEV void atomic_add_u64(u64* p, u64 v) { __atomic_fetch_add(p, v, __ATOMIC_RELAXED); }
DEV void atomic_max_u64(u64* p, u64 v) {
    u64 cur = __atomic_load_n(p, __ATOMIC_RELAXED);
    while (v > cur && !__atomic_compare_exchange_n(p, &cur, v, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
    }
}
DEV void atomic_max_u32(u32* p, u32 v) {
    u32 cur = __atomic_load_n(p, __ATOMIC_RELAXED);
    while (v > cur && !__atomic_compare_exchange_n(p, &cur, v, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
    }
}
DEV void red_add_u64(u64* p, u64 v) { __atomic_fetch_add(p, v, __ATOMIC_RELAXED); }

DEV u32 ballot(bool p) {
    const int w = sim::self->tid >> 5, lane = sim::self->tid & 31;
    sim::slot[w][lane][0] = p;
    sim::warpSync();
    u32 m = 0;
    for (int l = 0; l < 32; l++) m |= (u32)(sim::slot[w][l][0] != 0) << l;
    sim::warpSync();
    return m;
}
DEV u32 shfl_xor(u32 v, int m) {
    const int w = sim::self->tid >> 5, lane = sim::self->tid & 31;
    sim::slot[w][lane][0] = v;
    sim::warpSync();
    const u32 r = (u32)sim::slot[w][lane ^ m][0];
    sim::warpSync();
    return r;
}
DEV u64 shfl_xor64(u64 v, int m) {
    u32 lo = shfl_xor((u32)v, m), hi = shfl_xor((u32)(v >> 32), m);
    return ((u64)hi << 32) | lo;
}

DEV float fmaf_rn(float a, float b, float c) { return std::fmaf(a, b, c); }
DEV float h2f(u16 h) { return sim::half(h); }
DEV i64 f2ll_rn(float x) { return (i64)std::nearbyint(x); }
DEV u32 float_bits(float f) { return __builtin_bit_cast(u32, f); }
DEV float bits_float(u32 u) { return __builtin_bit_cast(float, u); }

// the dynamic window: 16 bytes into the section's dynamic blob, so the
// kernels' align-up code runs as on a GPU whose window is not 1 KiB aligned
extern unsigned char sim_dynamic[];
#define DYNAMIC_SHARED(T, name) static T* const name = (T*)(sim_dynamic + 16)

// 16-byte vector accesses fault on a GPU when misaligned (not on x86)
DEV u32x4 ld128(const void* p) {
    if ((uintptr_t)p % 16) sim::fail("16-byte load from a misaligned address");
    u32x4 v;
    std::memcpy(&v, p, 16);
    return v;
}
DEV void st128(void* p, u32x4 v) {
    if ((uintptr_t)p % 16) sim::fail("16-byte store to a misaligned address");
    std::memcpy(p, &v, 16);
}

DEV u32 smem_addr(const void* p) {
    const unsigned char* q = (const unsigned char*)p;
    if (q < sim::sharedBase() || q >= sim::sharedBase() + sim::sharedSize()) sim::fail("smem_addr of a non-shared pointer");
    return (u32)(q - sim::sharedBase());
}

DEV void cp_async16(u32 dst, const void* src, bool pred) {
    if (dst % 16 || (pred && (uintptr_t)src % 16)) sim::fail("cp.async: address not 16-byte aligned");
    if (dst + 16 > sim::sharedSize()) sim::fail("cp.async: destination outside shared memory");
    sim::CpOp op{sim::sharedBase() + dst, (const unsigned char*)src, pred ? 16 : 0};
    if (sim::lazyCp) sim::self->cpOpen.push_back(op);
    else sim::doCopy(op);
}
DEV void cp_async_commit() {
    sim::self->cpGroups.push_back(sim::self->cpOpen);
    sim::self->cpOpen.clear();
}
DEV void cp_async_wait0() { sim::retireCp(0); }
DEV void cp_async_wait1() { sim::retireCp(1); }
DEV void cp_async_wait2() { sim::retireCp(2); }

// ldmatrix.x4: lane l gets row l/4, elements 2(l%4), 2(l%4)+1 of the four
// 8x8 matrices whose row addresses lanes 8m..8m+7 give
DEV void ldmatrix_x4(u32 r[4], u32 addr) {
    const int w = sim::self->tid >> 5, lane = sim::self->tid & 31;
    sim::slot[w][lane][0] = addr;
    sim::warpSync();
    for (int m = 0; m < 4; m++) {
        const u32 a = (u32)sim::slot[w][8 * m + lane / 4][0] + 4 * (lane % 4);
        if (a % 4 || a + 4 > sim::sharedSize()) sim::fail("ldmatrix: bad row address");
        std::memcpy(&r[m], sim::sharedBase() + a, 4);
    }
    sim::warpSync();
}

// mma.sync.m16n8k16 (fragment layout: cuda_min.h's comment on mma_16816)
DEV void mma_16816(float d[4], const u32 a[4], const u32 b[2]) {
    const int w = sim::self->tid >> 5, lane = sim::self->tid & 31;
    sim::slot[w][lane][0] = a[0] | (u64)a[1] << 32;
    sim::slot[w][lane][1] = a[2] | (u64)a[3] << 32;
    sim::slot[w][lane][2] = b[0] | (u64)b[1] << 32;
    sim::warpSync();
    auto reg = [&](int l, int i) { return (u32)(sim::slot[w][l][i / 2] >> (32 * (i % 2))); };
    auto A = [&](int row, int k) { // a0 A[g][2t..], a1 A[g+8][2t..], a2 A[g][2t+8..], a3 A[g+8][2t+8..]
        const u32 v = reg((row % 8) * 4 + (k % 8) / 2, (row >= 8) + 2 * (k >= 8));
        return sim::half((u16)(v >> (16 * (k % 2))));
    };
    auto B = [&](int k, int n) { // b0 B[2t..][g], b1 B[2t+8..][g]
        const u32 v = reg(n * 4 + (k % 8) / 2, 4 + (k >= 8));
        return sim::half((u16)(v >> (16 * (k % 2))));
    };
    const int g = lane >> 2, t = lane & 3;
    for (int e = 0; e < 4; e++) {
        const int row = g + 8 * (e >> 1), col = 2 * t + (e & 1);
        float s = 0;
        for (int k = 0; k < 16; k++) s += A(row, k) * B(k, col);
        d[e] += s;
    }
    sim::warpSync();
}

DEV void wg_fence() {}
DEV void wg_commit() {
    sim::self->wgGroups.push_back(sim::self->wgOpen);
    sim::self->wgOpen.clear();
}
DEV void wg_wait0() { sim::retireWg(0); }
DEV void wg_wait1() { sim::retireWg(1); }
DEV void fence_proxy_async() {}
DEV void wg_fence_acc(float*, int) {}
DEV void wgmma_m64n256k16(float d[128], u64 da, u64 db) {
    sim::WgOp op{d, da, db};
    if (sim::lazyWg) sim::self->wgOpen.push_back(op);
    else sim::doWg(op);
}
