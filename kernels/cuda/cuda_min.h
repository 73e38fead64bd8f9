// cuda_min.h - the few CUDA declarations the kernels need. The PTX is made by
// clang's NVPTX backend with -nocudainc -nocudalib (scripts/ptx.sh), so there
// is no CUDA toolkit and no cuda_runtime.h: every attribute, special register,
// atomic and conversion used by the .cu files is spelled out here, each as the
// one PTX instruction it becomes (see the comments).
#pragma once

#define __global__ __attribute__((global))
#define __device__ __attribute__((device))
#define __shared__ __attribute__((shared))
#define __launch_bounds__(n) __attribute__((launch_bounds(n)))
#define DEV static __device__ __attribute__((always_inline)) inline
#define KERNEL extern "C" __global__

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
DEV int lane_id() { return __nvvm_read_ptx_sreg_laneid(); }

// bar.sync 0
DEV void sync_threads() { __syncthreads(); }

// atom.add.u32 / atom.add.u64 / atom.max.u64 (generic addressing: global or shared)
DEV u32 atomic_add_u32(u32* p, u32 v) { return (u32)__nvvm_atom_add_gen_i((int*)p, (int)v); }
DEV void atomic_add_u64(u64* p, u64 v) { __nvvm_atom_add_gen_ll((long long*)p, (long long)v); }
DEV void atomic_max_u64(u64* p, u64 v) { __nvvm_atom_max_gen_ull(p, v); }

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
