/*
The exact filter: the argmax ops (MaxArg, ShiftedMax, NearestCentroid,
PrefixMax) on the tensor cores with exactly the results of version 1 and the
CPU backend, when the streamed rows (A) are float16 and the resident set (B)
is float32 or float16.

CPU reference: the same ops of kernels.Naive; bit for bit, the CPU backend
(engine 1: every pair one float32 FMA chain in k order). Host driver:
kernels/cuda/exact.go (argmaxBand), which derives the error bound; emulated
in plain Go by kernels/cuda/emu.go.

Per chunk of A rows:
  band_width        w = a float32 upper bound of 2·max_i E_i over the chunk,
                    E_i = ‖a_i‖·k1 + k2 (a float64 norm, rounded up), where
                    the host's k1, k2 bound |v - v̂| for every pair: v the
                    exact value (FMA chain, then ·scale + bias), v̂ the
                    tensor-core value on B rounded to float16
  band_kernelN_f16  version N's tiles and argmax epilogue on float16 A and
  bandprefix_...    rounded B (best[i] = the largest approximate key), also
                    appending every entry v̂ >= band_thr(running best, w) to
                    the row's cap slots (common.cuh: band epilogue)
  rescore_argmax    a thread per row: the slots with v̂ >= band_thr(final
                    approximate best, w) are recomputed exactly (A float16,
                    B float32 or float16: the FMA chain of version 1 over ld,
                    then apply_sb) and best[i] becomes the largest exact key.
                    A row whose slots overflowed goes to the over list.
  rescore_rows      a block per listed row: the exact best over every B row
                    (every row of the chunk when flags has RS_ALL, used when B
                    cannot be rounded to float16).

Why it is exact: let j* be the exact argmax (largest exact key) and ĵ the
approximate one. v̂_j* >= v_j* - E >= v_ĵ - E >= v̂_ĵ - 2E, and band_thr(v̂_ĵ,
w) <= v̂_ĵ - w <= v̂_ĵ - 2E; every j tied with j* likewise. So every entry
that can be the exact argmax is appended (at its tile the running best was
at most v̂_ĵ) and survives the rescore's filter, and the rescore's key order
(value, then smaller index) is the exact op's.

Regenerate the PTX (clang-19, no CUDA toolkit): scripts/ptx.sh
*/
#include "common.cuh"

#ifdef HPCRUN_SM90A
KERNEL __launch_bounds__(V2_THREADS) void band_kernel5_f16(SimArgs a) { argmax_wg<false, true>(a); }
KERNEL __launch_bounds__(V2_THREADS) void bandprefix_kernel5_f16(SimArgs a) { argmax_wg<true, true>(a); }
KERNEL __launch_bounds__(V2_THREADS) void band_kernel7_f16(SimArgs a) { argmax_wg<false, true, true>(a); }
KERNEL __launch_bounds__(V2_THREADS) void bandprefix_kernel7_f16(SimArgs a) { argmax_wg<true, true, true>(a); }
#else
KERNEL __launch_bounds__(V2_THREADS) void band_kernel2_f16(SimArgs a) { argmax_mma<2, false, true>(a); }
KERNEL __launch_bounds__(V2_THREADS) void band_kernel3_f16(SimArgs a) { argmax_mma<3, false, true>(a); }
KERNEL __launch_bounds__(V2_THREADS) void band_kernel4_f16(SimArgs a) { argmax_mma<4, false, true>(a); }
KERNEL __launch_bounds__(V2_THREADS) void bandprefix_kernel2_f16(SimArgs a) { argmax_mma<2, true, true>(a); }
KERNEL __launch_bounds__(V2_THREADS) void bandprefix_kernel3_f16(SimArgs a) { argmax_mma<3, true, true>(a); }
KERNEL __launch_bounds__(V2_THREADS) void bandprefix_kernel4_f16(SimArgs a) { argmax_mma<4, true, true>(a); }

// RescoreArgs is the by-value parameter of rescore_argmax, rescore_rows and
// band_width (all fields 8 bytes; Go twin: rescoreArgs in ptx.go).
struct RescoreArgs {
    const u16* A;       // nA x ld float16 rows (this chunk)
    const void* B;      // nB x ld resident rows, exact: float32 (RS_BF32) or float16
    i64 nA;
    i64 nB;
    i64 ld;
    i64 aOff;           // global index of A row 0 (prefix mask)
    const float* scale; // per B row, or null
    const float* bias;  // per B row, or null
    u64* best;          // per A row: in the approximate best key, out the exact one
    const u32* count;   // per A row: candidates appended (may pass cap)
    const u64* keys;    // per A row: cap candidate keys
    i64 cap;
    float* w;           // w[0]: the band width (band_width writes it)
    u32* over;          // over[0]: rows listed; over[1 + r]: row index
    i64 flags;          // RS_BF32 | RS_PREFIX | RS_ALL
    double k1;          // band_width: E_i = norm(a_i)·k1 + k2
    double k2;
};

#define RS_BF32 1
#define RS_PREFIX 2
#define RS_ALL 4

// exact_dot: version 1's value of a pair, one fma.rn.f32 chain in k order
// over ld (A float16 converted exactly; B float32 or float16).
DEV float exact_dot(const RescoreArgs& r, const u16* arow, i64 j) {
    float acc = 0.0f;
    if (r.flags & RS_BF32) {
        const float* brow = (const float*)r.B + j * r.ld;
        for (i64 k = 0; k < r.ld; k++) acc = fmaf_rn(h2f(arow[k]), brow[k], acc);
    } else {
        const u16* brow = (const u16*)r.B + j * r.ld;
        for (i64 k = 0; k < r.ld; k++) acc = fmaf_rn(h2f(arow[k]), h2f(brow[k]), acc);
    }
    return acc;
}

DEV float exact_value(const RescoreArgs& r, const u16* arow, i64 j) {
    float v = exact_dot(r, arow, j);
    if (r.scale) v = v * r.scale[j];
    if (r.bias) v = v + r.bias[j];
    return v;
}

// band_width: a thread per A row; w[0] (zeroed by the host) becomes the
// largest 2·(norm·k1 + k2), rounded up, as float bits (non-negative floats
// order as their bits, so an integer atomic max).
KERNEL __launch_bounds__(256) void band_width(RescoreArgs r) {
    const i64 i = (i64)ctaid_x() * 256 + tid_x();
    if (i >= r.nA) return;
    const u16* arow = r.A + i * r.ld;
    double s = 0.0;
    for (i64 k = 0; k < r.ld; k++) {
        const double x = (double)h2f(arow[k]);
        s += x * x;
    }
    // float16 squares are exact in float64; the sum's rounding is below 2^-40
    const double e = (__builtin_sqrt(s) * (1.0 + 0x1p-40) * r.k1 + r.k2) * 2.0 * (1.0 + 0x1p-20);
    const float w = (float)e * (1.0f + 0x1p-20f);
    atomic_max_u32((u32*)r.w, float_bits(w));
}

// rescore_argmax: a thread per A row (see the header).
KERNEL __launch_bounds__(256) void rescore_argmax(RescoreArgs r) {
    const i64 i = (i64)ctaid_x() * 256 + tid_x();
    if (i >= r.nA) return;
    const u32 n = r.count[i];
    if ((i64)n > r.cap) {
        const u32 pos = atomic_add_u32(&r.over[0], 1);
        r.over[1 + pos] = (u32)i;
        return;
    }
    const u64 g = r.best[i];
    if (!g) return;
    const float thr = band_thr(key_value(g), r.w[0]);
    const u16* arow = r.A + i * r.ld;
    u64 best = 0;
    for (u32 s = 0; s < n; s++) {
        const u64 key = r.keys[i * r.cap + s];
        if (key_value(key) < thr) continue;
        const i64 j = (i64)(~(u32)key);
        const u64 x = make_key(exact_value(r, arow, j), j);
        if (x > best) best = x;
    }
    r.best[i] = best;
}

// rescore_rows: a block per listed row (grid-stride over the list; RS_ALL:
// over every row of the chunk): the exact best over all B rows (prefix: the
// rows before the A row's global index), threads over B rows, a block max.
KERNEL __launch_bounds__(256) void rescore_rows(RescoreArgs r) {
    __shared__ u64 part[256 / 32];
    const int tid = tid_x(), lane = tid & 31, warp = tid >> 5;
    const i64 rows = (r.flags & RS_ALL) ? r.nA : (i64)r.over[0];
    for (i64 x = ctaid_x(); x < rows; x += nctaid_x()) {
        const i64 i = (r.flags & RS_ALL) ? x : (i64)r.over[1 + x];
        const u16* arow = r.A + i * r.ld;
        i64 nb = r.nB;
        if ((r.flags & RS_PREFIX) && r.aOff + i < nb) nb = r.aOff + i;
        u64 best = 0;
        for (i64 j = tid; j < nb; j += 256) {
            const u64 key = make_key(exact_value(r, arow, j), j);
            if (key > best) best = key;
        }
        for (int m = 16; m; m >>= 1) {
            const u64 o = shfl_xor64(best, m);
            if (o > best) best = o;
        }
        if (lane == 0) part[warp] = best;
        sync_threads();
        if (tid == 0) {
            for (int w = 1; w < 256 / 32; w++)
                if (part[w] > best) best = part[w];
            r.best[i] = best;
        }
        sync_threads();
    }
}

// ----------------------------------------------------------------------------
// TopK through the filter (exact.go, topkBlock with a filter): the queries go
// to the tensor cores rounded to float16, the base rows are float16 (exact).
// Per base chunk band_width (k1 = 1/2, k2 = 0) bounds its row norms; per
// range topk_filter_thr lowers each query's exact threshold by its error
// bound, topk_kernelN appends against that, and topk_rescore recomputes the
// range's new candidates exactly before topk_select: every entry whose exact
// value passes the exact threshold was appended (its approximate value is
// within E of it), so the k best keys are the exact op's.

// TopkFilterArgs is the by-value parameter of topk_filter_thr and
// topk_rescore (Go twin: topkFilterArgs in ptx.go).
struct TopkFilterArgs {
    const void* Q;      // nq x ld exact queries: float32 (TF_QF32) or float16
    const u16* B;       // this chunk's base rows, float16
    i64 nq;
    i64 ld;
    i64 bOff;           // global index of B row 0 (the keys hold global indices)
    const float* e;     // per query: E / (base-row norm) from its rounding (host)
    const float* bnorm; // bnorm[0]: an upper bound of the chunk's row norms
    const float* thr;   // per query: the exact threshold (topk_select raises it)
    float* thrF;        // per query: the filter's threshold
    const u32* before;  // per query: slots already exact
    const u32* count;   // per query: slots appended (<= cap: the host redid overflows)
    u64* keys;          // per query: cap slots
    i64 cap;
    i64 flags;          // TF_QF32
};

#define TF_QF32 1

// topk_filter_thr: a thread per query, thrF = a float32 lower bound of
// thr - e·bnorm (-inf stays -inf).
KERNEL __launch_bounds__(256) void topk_filter_thr(TopkFilterArgs f) {
    const i64 i = (i64)ctaid_x() * 256 + tid_x();
    if (i >= f.nq) return;
    const float t = f.thr[i];
    f.thrF[i] = (t == -__builtin_inff()) ? t : band_thr(t, f.e[i] * f.bnorm[0] * (1.0f + 0x1p-20f));
}

// topk_rescore: a block per query, its threads over the slots appended in
// this range: each key's value becomes version 1's FMA chain of the pair.
KERNEL __launch_bounds__(256) void topk_rescore(TopkFilterArgs f) {
    const i64 i = ctaid_x();
    if (i >= f.nq) return;
    u32 n = f.count[i];
    if ((i64)n > f.cap) n = (u32)f.cap;
    for (u32 s = f.before[i] + tid_x(); s < n; s += 256) {
        u64* slot = f.keys + i * f.cap + s;
        const i64 j = (i64)(~(u32)*slot);
        const u16* brow = f.B + (j - f.bOff) * f.ld;
        float acc = 0.0f;
        if (f.flags & TF_QF32) {
            const float* q = (const float*)f.Q + i * f.ld;
            for (i64 k = 0; k < f.ld; k++) acc = fmaf_rn(q[k], h2f(brow[k]), acc);
        } else {
            const u16* q = (const u16*)f.Q + i * f.ld;
            for (i64 k = 0; k < f.ld; k++) acc = fmaf_rn(h2f(q[k]), h2f(brow[k]), acc);
        }
        *slot = make_key(acc, j);
    }
}
#endif
