// cuda_min.h - the few CUDA declarations the kernels need. The PTX is made by
// clang's NVPTX backend with -nocudainc -nocudalib (scripts/ptx.sh), so there
// is no CUDA toolkit and no cuda_runtime.h: every attribute, special register,
// atomic and conversion used by the .cu files is spelled out here, each as the
// one PTX instruction it becomes (see the comments).
#pragma once

#ifdef HPCRUN_HOST_SIM
// kernels/cuda/hostsim: the same declarations and primitives on the CPU
#include "hostsim/hostsim.h"
#else

#define __global__ __attribute__((global))
#define __device__ __attribute__((device))
#define __shared__ __attribute__((shared))
#define __launch_bounds__(...) __attribute__((launch_bounds(__VA_ARGS__)))
#define DEV static __device__ __attribute__((always_inline)) inline
#define KERNEL extern "C" __global__
#define LAMBDA_INLINE __attribute__((always_inline)) // after a device lambda's parameters

typedef unsigned long long u64;
typedef long long i64;
typedef unsigned int u32;
typedef unsigned short u16;
typedef u32 u32x4 __attribute__((ext_vector_type(4))); // 16-byte ld/st.v4.u32

// special registers (mov.u32 %r, %tid.x ...)
DEV int tid_x() { return __nvvm_read_ptx_sreg_tid_x(); }
DEV int ctaid_x() { return __nvvm_read_ptx_sreg_ctaid_x(); }
DEV int ctaid_y() { return __nvvm_read_ptx_sreg_ctaid_y(); }
DEV int nctaid_x() { return __nvvm_read_ptx_sreg_nctaid_x(); }
DEV int nctaid_y() { return __nvvm_read_ptx_sreg_nctaid_y(); }
DEV int lane_id() { return __nvvm_read_ptx_sreg_laneid(); }

// bar.sync 0
DEV void sync_threads() { __syncthreads(); }

// atom.add.u32 / atom.add.u64 / atom.max.u32 / atom.max.u64 (generic addressing: global or shared)
DEV u32 atomic_add_u32(u32* p, u32 v) { return (u32)__nvvm_atom_add_gen_i((int*)p, (int)v); }
DEV void atomic_add_u64(u64* p, u64 v) { __nvvm_atom_add_gen_ll((long long*)p, (long long)v); }
DEV void atomic_max_u64(u64* p, u64 v) { __nvvm_atom_max_gen_ull(p, v); }
DEV void atomic_max_u32(u32* p, u32 v) { __nvvm_atom_max_gen_ui(p, v); }

// vote.sync.ballot.b32, shfl.sync.bfly.b32 (full warp)
DEV u32 ballot(bool p) { return __nvvm_vote_ballot_sync(0xffffffffu, p); }
DEV u32 shfl_xor(u32 v, int m) { return (u32)__nvvm_shfl_sync_bfly_i32(0xffffffffu, (int)v, m, 0x1f); }
DEV u64 shfl_xor64(u64 v, int m) {
    u32 lo = shfl_xor((u32)v, m), hi = shfl_xor((u32)(v >> 32), m);
    return ((u64)hi << 32) | lo;
}

// fma.rn.f32
DEV float fmaf_rn(float a, float b, float c) { return __builtin_fmaf(a, b, c); }

// cvt.f32.f16 (exact)
DEV float h2f(u16 h) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
}

// cvt.rni.s64.f32: round to nearest even, as kernels.ToFixed (math.RoundToEven)
DEV i64 f2ll_rn(float x) { return __nvvm_f2ll_rn(x); }

DEV u32 float_bits(float f) { return __builtin_bit_cast(u32, f); }
DEV float bits_float(u32 u) { return __builtin_bit_cast(float, u); }

// ld.v4.u32 / st.v4.u32: 16 bytes at a 16-byte aligned address
DEV u32x4 ld128(const void* p) { return *(const u32x4*)p; }
DEV void st128(void* p, u32x4 v) { *(u32x4*)p = v; }

// extern dynamic shared memory (the launch gives its size)
#define DYNAMIC_SHARED(T, name) extern __shared__ __attribute__((aligned(16))) T name[]

// ---------------------------------------------------------------------------
// asynchronous copies, tensor-core instructions and fences (inline PTX)

// red.global.add.u64: the atomic add without a return value
DEV void red_add_u64(u64* p, u64 v) { asm volatile("red.global.add.u64 [%0], %1;" ::"l"(p), "l"(v) : "memory"); }

// mma_16816: d += a·b for one m16n8k16 tile. Fragment layout (PTX ISA,
// "Matrix Fragments for mma.m16n8k16 with floating point type"), with
// g = lane>>2, t = lane&3, and the lower k in the low 16 bits of a register:
//   a0 = A[g][2t..2t+1]    a1 = A[g+8][2t..2t+1]
//   a2 = A[g][2t+8..2t+9]  a3 = A[g+8][2t+8..2t+9]
//   b0 = B[k=2t..2t+1][n=g]  b1 = B[k=2t+8..2t+9][n=g]   (B row n = base row)
//   d0 = C[g][2t]  d1 = C[g][2t+1]  d2 = C[g+8][2t]  d3 = C[g+8][2t+1]
DEV void mma_16816(float d[4], const u32 a[4], const u32 b[2]) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "
        "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

// cvta.to.shared: the 32-bit shared-window address of a generic pointer
DEV u32 smem_addr(const void* p) {
    u32 r;
    asm volatile("{ .reg .u64 t; cvta.to.shared.u64 t, %1; cvt.u32.u64 %0, t; }" : "=r"(r) : "l"(p));
    return r;
}

// cp.async.cg 16 bytes global -> shared; src_size 0 (pred false) writes zeros
DEV void cp_async16(u32 dst, const void* src, bool pred) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(dst), "l"(src), "r"(pred ? 16 : 0) : "memory");
}
DEV void cp_async_commit() { asm volatile("cp.async.commit_group;" ::: "memory"); }
DEV void cp_async_wait0() { asm volatile("cp.async.wait_group 0;" ::: "memory"); }
DEV void cp_async_wait1() { asm volatile("cp.async.wait_group 1;" ::: "memory"); }
DEV void cp_async_wait2() { asm volatile("cp.async.wait_group 2;" ::: "memory"); }

// ldmatrix.x4: four 8x8 b16 matrices; lanes 8m..8m+7 give matrix m's row
// addresses, lane l receives row l/4, elements 2(l%4), 2(l%4)+1 of each.
DEV void ldmatrix_x4(u32 r[4], u32 addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr)
                 : "memory");
}

DEV void wg_fence() { asm volatile("wgmma.fence.sync.aligned;" ::: "memory"); }
DEV void wg_commit() { asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory"); }
DEV void wg_wait0() { asm volatile("wgmma.wait_group.sync.aligned 0;" ::: "memory"); }
DEV void wg_wait1() { asm volatile("wgmma.wait_group.sync.aligned 1;" ::: "memory"); }
// generic-proxy writes (cp.async) made visible to the async proxy (wgmma)
DEV void fence_proxy_async() { asm volatile("fence.proxy.async.shared::cta;" ::: "memory"); }
// pins the accumulators at this point of the program: the compiler sees
// wgmma write them at issue, so without this it could read them before
// wgmma.wait_group or write them after wgmma.fence
DEV void wg_fence_acc(float* d, int n) {
#pragma unroll
    for (int i = 0; i < n; i++) asm volatile("" : "+f"(d[i])::"memory");
}

#define WG_F4(i) "+f"(d[i]), "+f"(d[i + 1]), "+f"(d[i + 2]), "+f"(d[i + 3])
#define WG_F16(i) WG_F4(i), WG_F4(i + 4), WG_F4(i + 8), WG_F4(i + 12)
#define WG_F64(i) WG_F16(i), WG_F16(i + 16), WG_F16(i + 32), WG_F16(i + 48)

// d += A·Bᵀ for a 64x16 A and a 256x16 B in shared memory (descriptors)
DEV void wgmma_m64n256k16(float d[128], u64 da, u64 db) {
    asm volatile(
        "{ .reg .pred p; setp.ne.b32 p, %130, 0;\n" // scale-d is a predicate: 1 = accumulate
        "wgmma.mma_async.sync.aligned.m64n256k16.f32.f16.f16 {"
        "%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,"
        "%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31,"
        "%32,%33,%34,%35,%36,%37,%38,%39,%40,%41,%42,%43,%44,%45,%46,%47,"
        "%48,%49,%50,%51,%52,%53,%54,%55,%56,%57,%58,%59,%60,%61,%62,%63,"
        "%64,%65,%66,%67,%68,%69,%70,%71,%72,%73,%74,%75,%76,%77,%78,%79,"
        "%80,%81,%82,%83,%84,%85,%86,%87,%88,%89,%90,%91,%92,%93,%94,%95,"
        "%96,%97,%98,%99,%100,%101,%102,%103,%104,%105,%106,%107,%108,%109,%110,%111,"
        "%112,%113,%114,%115,%116,%117,%118,%119,%120,%121,%122,%123,%124,%125,%126,%127"
        "}, %128, %129, p, 1, 1, 0, 0; }"
        : WG_F64(0), WG_F64(64)
        : "l"(da), "l"(db), "r"(1)
        : "memory");
}

#endif // HPCRUN_HOST_SIM
