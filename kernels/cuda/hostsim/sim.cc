// sim.cc - runs the similarity kernels' CUDA C on the CPU (hostsim.h) and
// checks every result exactly. Built twice by TestHostSim: as is (kernel
// versions 1-4 and 6, the sm_80 module) and with -DHPCRUN_SM90A (version 5,
// the wgmma kernels). Two kinds of input:
//   - float16 multiples of 1/4 in [-2, 2]: every product and sum is exact
//     in float32, so every version must give the reference bit for bit;
//   - random float32 and float16 values: the FFMA versions (1 and 6) must
//     give the fma.rn.f32 chain in k order bit for bit — the CPU backend's
//     arithmetic.
// Checked: top-k's candidate keys above the thresholds, and MaxArg's and
// PrefixMax's best keys (with scale, bias and the prefix mask). Every case
// runs in the four modes of eager/lazy cp.async and wgmma. The sm_80 build
// also checks topk_select (both paths) and the centroid sums kernels, so
// every kernel of the package runs here. Prints one line per case; exit
// status 1 on any failure.
#include "../topk.cu"
#include "../maxarg.cu"
#include "../centroid.cu"
#include "../prefixmax.cu"
#include "../exact.cu"

#include <algorithm>
#include <array>
#include <random>
#include <string>
#include <thread>

unsigned char sim_dynamic[16 + 1024 + V5_SMEM_BYTES] __attribute__((section("simshared"), aligned(1024)));
extern "C" unsigned char __start_simshared[], __stop_simshared[];

namespace sim {
thread_local Thread* self;
bool lazyCp, lazyWg;
std::barrier<>* blockBar;
std::barrier<>* warpBar[8];
u64 slot[8][32][4];
unsigned char* sharedBase() { return __start_simshared; }
size_t sharedSize() { return (size_t)(__stop_simshared - __start_simshared); }
void fail(const char* what) {
    std::fprintf(stderr, "hostsim: %s (thread %d of block %d,%d)\n", what, self ? self->tid : -1, self ? self->cx : -1,
                 self ? self->cy : -1);
    std::exit(2);
}
} // namespace sim

typedef void (*Kernel)(SimArgs);

// launch runs grid gx x gy of 256-thread blocks, one block at a time, on
// 256 threads (each plays its thread of every block in turn)
template <typename Args>
static void launch(void (*k)(Args), const Args& a, int gx, int gy) {
    std::barrier<> block(V2_THREADS);
    std::vector<std::barrier<>*> warps;
    for (int w = 0; w < V2_THREADS / 32; w++) {
        warps.push_back(new std::barrier<>(32));
        sim::warpBar[w] = warps.back();
    }
    sim::blockBar = &block;
    std::vector<std::thread> th;
    for (int t = 0; t < V2_THREADS; t++) {
        th.emplace_back([&, t] {
            for (int cy = 0; cy < gy; cy++) {
                for (int cx = 0; cx < gx; cx++) {
                    if (t == 0) std::memset(sim::sharedBase(), 0xff, sim::sharedSize());
                    block.arrive_and_wait(); // shared memory is fresh for every block
                    sim::Thread me;
                    me.tid = t, me.cx = cx, me.cy = cy, me.gx = gx, me.gy = gy;
                    sim::self = &me;
                    k(a);
                    if (!me.wgOpen.empty() || !me.wgGroups.empty()) sim::fail("kernel ended with wgmma groups in flight");
                    sim::self = nullptr;
                    block.arrive_and_wait(); // every thread is done with the block
                }
            }
        });
    }
    for (auto& x : th) x.join();
    for (auto* w : warps) delete w;
}

static u16 f2h(float x) { return __builtin_bit_cast(u16, (_Float16)x); }

struct Case {
    int nA, nB, dim, ld;
};

enum Kind { ExactF16, RandomF16, RandomF32 };
static const char* kindName[] = {"exact-f16", "random-f16", "random-f32"};

struct Data {
    Kind kind;
    std::vector<u16> A, B;      // float16 kinds
    std::vector<float> Af, Bf;  // RandomF32
    std::vector<float> dot;     // nA x nB: the fma chain in k order (exact for ExactF16)
    const void* a() const { return kind == RandomF32 ? (const void*)Af.data() : A.data(); }
    const void* b() const { return kind == RandomF32 ? (const void*)Bf.data() : B.data(); }
};

static Data gen(const Case& c, unsigned seed, Kind kind) {
    std::mt19937 rng(seed);
    std::uniform_int_distribution<int> q(-8, 8);
    std::normal_distribution<float> g(0.0f, 0.3f);
    auto value = [&] { return kind == ExactF16 ? q(rng) / 4.0f : g(rng); };
    Data d;
    d.kind = kind;
    std::vector<float> A((size_t)c.nA * c.ld, 0), B((size_t)c.nB * c.ld, 0);
    for (int i = 0; i < c.nA; i++)
        for (int k = 0; k < c.dim; k++) A[(size_t)i * c.ld + k] = value();
    for (int j = 0; j < c.nB; j++)
        for (int k = 0; k < c.dim; k++) B[(size_t)j * c.ld + k] = value();
    if (kind == RandomF32) {
        d.Af = A, d.Bf = B;
    } else {
        d.A.resize(A.size()), d.B.resize(B.size());
        for (size_t x = 0; x < A.size(); x++) d.A[x] = f2h(A[x]), A[x] = sim::half(d.A[x]);
        for (size_t x = 0; x < B.size(); x++) d.B[x] = f2h(B[x]), B[x] = sim::half(d.B[x]);
    }
    d.dot.assign((size_t)c.nA * c.nB, 0);
    for (int i = 0; i < c.nA; i++)
        for (int j = 0; j < c.nB; j++) {
            float s = 0;
            for (int k = 0; k < c.ld; k++) s = std::fmaf(A[(size_t)i * c.ld + k], B[(size_t)j * c.ld + k], s);
            d.dot[(size_t)i * c.nB + j] = s;
        }
    return d;
}

struct Version {
    int v, ta, tb;
    Kernel topk, maxarg, prefix;
    bool f32;  // takes float32 inputs
    bool ffma; // one fma chain per pair in k order: exact on random inputs too
    Kernel band = nullptr, bandprefix = nullptr; // exact.cu's band kernels (tensor-core versions)
};

static int failures = 0;

// persist > 0: version 5 runs on a persistent grid of persist blocks, each
// taking several tiles (its k steps one stream across them), instead of one
// block per tile; group: the v5 engine's tile order (SimArgs.group, v5_tile)
static int persist = 0, group = 0;
static void launchTiles(Kernel k, const SimArgs& args, const Version& ver, const Case& c) {
    SimArgs a = args;
    a.group = group;
    if ((ver.v == 5 || ver.v == 7) && persist > 0) return launch(k, a, persist, 1);
    launch(k, a, (c.nA + ver.ta - 1) / ver.ta, (c.nB + ver.tb - 1) / ver.tb);
}
static void report(bool ok, const std::string& what) {
    std::printf("%s %s\n", ok ? "ok  " : "FAIL", what.c_str());
    if (!ok) failures++;
}

static void checkTopK(const Version& ver, const Case& c, const Data& d, const std::string& tag) {
    const i64 cap = c.nB, bOff = 1000;
    std::vector<float> thr(c.nA);
    for (int i = 0; i < c.nA; i++) thr[i] = (i % 3 == 0) ? -INFINITY : (float)((i % 5) - 2) * 0.5f;
    std::vector<u32> count(c.nA, 0);
    std::vector<u64> keys((size_t)c.nA * cap, 0);
    SimArgs a{};
    a.A = d.a(), a.B = d.b(), a.nA = c.nA, a.nB = c.nB, a.ld = c.ld, a.bOff = bOff;
    a.thr = thr.data(), a.count = count.data(), a.keys = keys.data(), a.cap = cap;
    launchTiles(ver.topk, a, ver, c);
    bool ok = true;
    for (int i = 0; i < c.nA && ok; i++) {
        std::vector<u64> want, got(keys.begin() + (size_t)i * cap, keys.begin() + (size_t)i * cap + count[i]);
        for (int j = 0; j < c.nB; j++)
            if (d.dot[(size_t)i * c.nB + j] > thr[i]) want.push_back(make_key(d.dot[(size_t)i * c.nB + j], bOff + j));
        std::sort(want.begin(), want.end());
        std::sort(got.begin(), got.end());
        if (want != got) {
            std::printf("  row %d: %zu candidates, want %zu\n", i, got.size(), want.size());
            ok = false;
        }
    }
    report(ok, tag + " topk");
}

static void checkArgmax(const Version& ver, const Case& c, const Data& d, bool prefix, const std::string& tag) {
    const i64 aOff = prefix ? 37 : 0, bOff = prefix ? 0 : 500;
    std::vector<float> scale(c.nB), bias(c.nB);
    for (int j = 0; j < c.nB; j++) scale[j] = (j % 4 == 0) ? 0.5f : 1.0f, bias[j] = (float)((j % 7) - 3) * 0.25f;
    std::vector<u64> best(c.nA, 0);
    SimArgs a{};
    a.A = d.a(), a.B = d.b(), a.nA = c.nA, a.nB = c.nB, a.ld = c.ld, a.aOff = aOff, a.bOff = bOff;
    a.scale = prefix ? nullptr : scale.data(), a.bias = bias.data(), a.best = best.data();
    launchTiles(prefix ? ver.prefix : ver.maxarg, a, ver, c);
    bool ok = true;
    for (int i = 0; i < c.nA; i++) {
        u64 want = 0;
        for (int j = 0; j < c.nB; j++) {
            if (prefix && bOff + j >= aOff + i) continue;
            float v = d.dot[(size_t)i * c.nB + j];
            if (a.scale) v = v * scale[j];
            v = v + bias[j];
            want = std::max(want, make_key(v, bOff + j));
        }
        if (best[i] != want) {
            if (ok) std::printf("  row %d: key %016llx, want %016llx\n", i, best[i], want);
            ok = false;
        }
    }
    report(ok, tag + (prefix ? " prefixmax" : " maxarg"));
}

// checkBand: the band kernels (exact.cu) on exactly representable inputs:
// best[i] is the argmax epilogue's, and the appended keys are distinct pairs
// of the row with their exact values, including every one within the band
// (band_thr of the final best, w = thr[0]) — more may come (the running best
// lags), none outside the op's pairs.
static void checkBand(const Version& ver, const Case& c, const Data& d, bool prefix, const std::string& tag) {
    const i64 aOff = prefix ? 37 : 0, bOff = prefix ? 0 : 500, cap = c.nB;
    std::vector<float> scale(c.nB), bias(c.nB), w = {0.75f};
    for (int j = 0; j < c.nB; j++) scale[j] = (j % 4 == 0) ? 0.5f : 1.0f, bias[j] = (float)((j % 7) - 3) * 0.25f;
    std::vector<u64> best(c.nA, 0), keys((size_t)c.nA * cap, 0);
    std::vector<u32> count(c.nA, 0);
    SimArgs a{};
    a.A = d.a(), a.B = d.b(), a.nA = c.nA, a.nB = c.nB, a.ld = c.ld, a.aOff = aOff, a.bOff = bOff;
    a.scale = prefix ? nullptr : scale.data(), a.bias = bias.data(), a.best = best.data();
    a.thr = w.data(), a.count = count.data(), a.keys = keys.data(), a.cap = cap;
    launchTiles(prefix ? ver.bandprefix : ver.band, a, ver, c);
    bool ok = true;
    for (int i = 0; i < c.nA && ok; i++) {
        std::vector<u64> all;
        u64 want = 0;
        for (int j = 0; j < c.nB; j++) {
            if (prefix && bOff + j >= aOff + i) continue;
            float v = d.dot[(size_t)i * c.nB + j];
            if (a.scale) v = v * scale[j];
            v = v + bias[j];
            all.push_back(make_key(v, bOff + j));
            want = std::max(want, all.back());
        }
        std::vector<u64> got(keys.begin() + (size_t)i * cap, keys.begin() + (size_t)i * cap + std::min<i64>(count[i], cap));
        std::sort(got.begin(), got.end());
        std::sort(all.begin(), all.end());
        const bool distinct = std::adjacent_find(got.begin(), got.end()) == got.end();
        const bool within = std::includes(all.begin(), all.end(), got.begin(), got.end());
        bool covers = true;
        if (want) {
            const float t = band_thr(key_value(want), w[0]);
            for (u64 k : all)
                if (key_value(k) >= t && !std::binary_search(got.begin(), got.end(), k)) covers = false;
        }
        if (best[i] != want || (i64)count[i] > cap || !distinct || !within || !covers) {
            std::printf("  row %d: best %016llx want %016llx, %u keys, distinct %d, pairs of the row %d, band covered %d\n", i, best[i], want,
                        count[i], distinct, within, covers);
            ok = false;
        }
    }
    report(ok, tag + (prefix ? " bandprefix" : " band"));
}

#ifndef HPCRUN_SM90A
// checkRescore: band_width, rescore_argmax and rescore_rows against the
// float32 FMA chain on random float16 A rows and float32 or float16 B rows
// (with scale and bias, or PrefixMax's mask): the slots hold every pair
// within a band of an approximate best (exact values nudged), some rows
// more than cap (listed in over, then rescored against every B row).
static void checkRescore() {
    std::mt19937 rng(11);
    std::normal_distribution<float> g(0.0f, 0.3f);
    const int nA = 70, nB = 90, dim = 40, ld = 64, cap = 12;
    for (int bf32 = 0; bf32 <= 1; bf32++) {
        for (int prefix = 0; prefix <= 1; prefix++) {
            std::vector<u16> A((size_t)nA * ld, 0), Bh((size_t)nB * ld, 0);
            std::vector<float> Af((size_t)nA * ld, 0), Bf((size_t)nB * ld, 0);
            for (int i = 0; i < nA; i++)
                for (int k = 0; k < dim; k++) A[i * ld + k] = f2h(g(rng)), Af[i * ld + k] = sim::half(A[i * ld + k]);
            for (int j = 0; j < nB; j++)
                for (int k = 0; k < dim; k++) {
                    Bh[j * ld + k] = f2h(g(rng));
                    Bf[j * ld + k] = bf32 ? g(rng) : sim::half(Bh[j * ld + k]);
                }
            std::vector<float> scale(nB), bias(nB);
            for (int j = 0; j < nB; j++) scale[j] = 0.5f + (j % 5) * 0.25f, bias[j] = (float)((j % 7) - 3) * 0.125f;
            const i64 aOff = prefix ? 20 : 0;
            auto exact = [&](int i, int j) {
                float s = 0;
                for (int k = 0; k < ld; k++) s = std::fmaf(Af[i * ld + k], Bf[j * ld + k], s);
                if (!prefix) s = s * scale[j], s = s + bias[j];
                return s;
            };
            const float w = 0.05f;
            std::vector<u64> best(nA, 0), keys((size_t)nA * cap, 0), want(nA, 0);
            std::vector<u32> count(nA, 0), over(1 + nA, 0);
            for (int i = 0; i < nA; i++) {
                const int nb = prefix ? std::min<int>(nB, aOff + i) : nB;
                std::vector<std::pair<float, int>> approx;
                for (int j = 0; j < nb; j++) {
                    approx.push_back({exact(i, j) + 0.004f * (float)((i * 31 + j * 17) % 9 - 4) / 4.0f, j});
                    best[i] = std::max(best[i], make_key(approx.back().first, j));
                }
                u64 all = 0, band = 0;
                for (int j = 0; j < nb; j++) all = std::max(all, make_key(exact(i, j), j));
                if (!best[i]) continue;
                const float t = band_thr(key_value(best[i]), w);
                std::shuffle(approx.begin(), approx.end(), rng);
                for (auto& [v, j] : approx) {
                    if (v < t - 0.02f) continue; // a few below the band too (the running best lags)
                    if (count[i] < cap) keys[(size_t)i * cap + count[i]] = make_key(v, j);
                    count[i]++;
                    if (v >= t) band = std::max(band, make_key(exact(i, j), j));
                }
                if (i % 9 == 4) count[i] = cap + 1 + i; // overflowed
                want[i] = (i64)count[i] > cap ? all : band;
            }
            std::vector<float> wv = {w};
            RescoreArgs r{};
            r.A = A.data(), r.B = bf32 ? (const void*)Bf.data() : (const void*)Bh.data(), r.nA = nA, r.nB = nB, r.ld = ld, r.aOff = aOff;
            r.scale = prefix ? nullptr : scale.data(), r.bias = prefix ? nullptr : bias.data();
            r.best = best.data(), r.count = count.data(), r.keys = keys.data(), r.cap = cap, r.w = wv.data(), r.over = over.data();
            r.flags = (bf32 ? RS_BF32 : 0) | (prefix ? RS_PREFIX : 0);
            launch(rescore_argmax, r, (nA + 255) / 256, 1);
            launch(rescore_rows, r, 3, 1);
            char tag[96];
            std::snprintf(tag, sizeof tag, "rescore_argmax + rescore_rows B=%s prefix=%d", bf32 ? "f32" : "f16", prefix);
            report(best == want && over[0] == (u32)((nA + 4) / 9), tag);
            // RS_ALL: every row against every B row
            std::fill(best.begin(), best.end(), 0);
            r.flags |= RS_ALL;
            launch(rescore_rows, r, 2, 1);
            bool ok = true;
            for (int i = 0; i < nA; i++) {
                u64 all = 0;
                const int nb = prefix ? std::min<int>(nB, aOff + i) : nB;
                for (int j = 0; j < nb; j++) all = std::max(all, make_key(exact(i, j), j));
                ok = ok && best[i] == all;
            }
            std::snprintf(tag, sizeof tag, "rescore_rows all B=%s prefix=%d", bf32 ? "f32" : "f16", prefix);
            report(ok, tag);
        }
    }
    // band_width: 2·(‖a‖·k1 + k2) rounded up, the largest over the rows
    std::vector<u16> A(5 * 32, 0);
    double wantW = 0;
    for (int i = 0; i < 5; i++) {
        double s = 0;
        for (int k = 0; k < 20; k++) {
            A[i * 32 + k] = f2h(g(rng) * (i + 1));
            s += (double)sim::half(A[i * 32 + k]) * (double)sim::half(A[i * 32 + k]);
        }
        wantW = std::max(wantW, 2.0 * (std::sqrt(s) * 3e-4 + 1e-7));
    }
    std::vector<float> wv = {0.0f};
    RescoreArgs r{};
    r.A = A.data(), r.nA = 5, r.ld = 32, r.w = wv.data(), r.k1 = 3e-4, r.k2 = 1e-7;
    launch(band_width, r, 1, 1);
    report(wv[0] >= wantW && wv[0] <= wantW * (1 + 1e-5), "band_width");
}

// checkTopkFilter: topk_filter_thr (thr - e·bnorm, rounded down; -inf kept)
// and topk_rescore (slots from before on get the FMA chain's value of their
// pair, earlier ones stay), float32 and float16 queries.
static void checkTopkFilter() {
    std::mt19937 rng(13);
    std::normal_distribution<float> g(0.0f, 0.3f);
    const int nq = 5, nb = 60, dim = 50, ld = 64, cap = 40;
    const i64 bOff = 1000;
    for (int qf32 = 0; qf32 <= 1; qf32++) {
        std::vector<u16> B((size_t)nb * ld, 0), Qh((size_t)nq * ld, 0);
        std::vector<float> Bf((size_t)nb * ld, 0), Qf((size_t)nq * ld, 0);
        for (int j = 0; j < nb; j++)
            for (int k = 0; k < dim; k++) B[j * ld + k] = f2h(g(rng)), Bf[j * ld + k] = sim::half(B[j * ld + k]);
        for (int i = 0; i < nq; i++)
            for (int k = 0; k < dim; k++) {
                Qh[i * ld + k] = f2h(g(rng));
                Qf[i * ld + k] = qf32 ? g(rng) : sim::half(Qh[i * ld + k]);
            }
        std::vector<float> e(nq), thr(nq), thrF(nq, 0), bnorm = {1.25f};
        std::vector<u32> before(nq), count(nq);
        std::vector<u64> keys((size_t)nq * cap), want((size_t)nq * cap);
        for (int i = 0; i < nq; i++) {
            e[i] = 1e-3f * (i + 1), thr[i] = i == 2 ? -INFINITY : 0.1f * (i - 2);
            before[i] = i, count[i] = i == 4 ? cap + 3 : 10 + 5 * i; // row 4: more than cap
            for (int s = 0; s < cap; s++) {
                const int j = (s * 7 + i) % nb;
                float v = 0;
                for (int k = 0; k < ld; k++) v = std::fmaf(Qf[i * ld + k], Bf[j * ld + k], v);
                keys[(size_t)i * cap + s] = make_key(-5.0f, bOff + j); // a stale value
                want[(size_t)i * cap + s] = (u32)s >= before[i] && s < std::min<int>(count[i], cap) ? make_key(v, bOff + j) : keys[(size_t)i * cap + s];
            }
        }
        TopkFilterArgs f{};
        f.Q = qf32 ? (const void*)Qf.data() : (const void*)Qh.data(), f.B = B.data(), f.nq = nq, f.ld = ld, f.bOff = bOff;
        f.e = e.data(), f.bnorm = bnorm.data(), f.thr = thr.data(), f.thrF = thrF.data(), f.before = before.data(), f.count = count.data();
        f.keys = keys.data(), f.cap = cap, f.flags = qf32 ? TF_QF32 : 0;
        launch(topk_filter_thr, f, 1, 1);
        launch(topk_rescore, f, nq, 1);
        bool ok = keys == want;
        for (int i = 0; i < nq; i++) {
            const double lower = (double)thr[i] - (double)e[i] * bnorm[0];
            ok = ok && (i == 2 ? thrF[i] == -INFINITY : (double)thrF[i] <= lower && (double)thrF[i] > lower - 1e-5);
        }
        report(ok, std::string("topk_filter_thr + topk_rescore queries=") + (qf32 ? "f32" : "f16"));
    }
}

// topk_select: per query, n = count distinct random keys; with n >= k the k
// largest move to the front in their order, count = k, thr = the k-th's
// value; out gets the first min(n, k) and zero padding. Both the shared-
// memory path (n <= SEL_SMEM_KEYS) and the global one (more keys, or flags);
// with SEL_SORT_OUT out is best first (k = 6,000 > SEL_SMEM_KEYS: unsorted).
static void checkSelect() {
    std::mt19937_64 rng(7);
    for (const auto& c : std::vector<std::array<int, 3>>{{1, 0, 0}, {5, 1, 0}, {7, 300, 0}, {3, 300, 1}, {40, 6000, 0}, {2, 9000, 1},
                                                         {1, 0, 2}, {7, 300, 2}, {300, 1000, 3}, {40, 6000, 2}, {1000, 4000, 2}, {6000, 7000, 2},
                                                         {7, 300, 4}, {300, 1000, 6}, {40, 6000, 5}}) {
        // flags 4 (the test's, not the kernel's): values from {0.25, 0.5}, so
        // keys tie on their value and the radix select goes down to the index bits
        const int k = c[0], capMax = c[1], flags = c[2] & 3;
        const bool ties = c[2] & 4;
        const int nq = 5;
        const i64 cap = std::max(capMax + 16, k);
        std::vector<u64> keys(nq * cap), out(nq * k, ~0ull);
        std::vector<u32> count(nq);
        std::vector<float> thr(nq, -1.0f);
        std::vector<std::vector<u64>> orig(nq);
        for (int q = 0; q < nq; q++) {
            const int n = std::min<i64>(cap, (q == 0) ? std::max(0, k - 1) : (q == 1 ? k : capMax + q));
            count[q] = n;
            for (int x = 0; x < n; x++) {
                const float v = ties ? ((rng() & 1) ? 0.5f : 0.25f) : (float)std::normal_distribution<double>(0, 1)(rng);
                keys[q * cap + x] = make_key(v, x * 7 + q);
            }
            orig[q].assign(keys.begin() + q * cap, keys.begin() + q * cap + n);
        }
        SelectArgs s{keys.data(), count.data(), thr.data(), out.data(), nq, cap, k, flags};
        launch(topk_select, s, nq, 1);
        bool ok = true;
        for (int q = 0; q < nq && ok; q++) {
            const std::vector<u64>& o = orig[q];
            const int n = (int)o.size();
            std::vector<u64> want = o;
            if (n >= k) {
                std::vector<u64> sorted = o;
                std::sort(sorted.rbegin(), sorted.rend());
                const u64 kth = k ? sorted[k - 1] : ~0ull;
                want.clear();
                for (u64 x : o)
                    if (k && x >= kth) want.push_back(x);
                ok = ok && count[q] == (u32)k && (k == 0 || thr[q] == key_value(kth));
            } else {
                ok = ok && count[q] == (u32)n && thr[q] == -1.0f;
            }
            ok = ok && std::equal(want.begin(), want.end(), keys.begin() + q * cap);
            // SEL_SORT_OUT: out best first (when the m keys fit shared memory)
            if ((flags & SEL_SORT_OUT) && want.size() <= SEL_SMEM_KEYS) std::sort(want.rbegin(), want.rend());
            for (int r = 0; r < k; r++) ok = ok && out[q * k + r] == (r < (int)want.size() ? want[r] : 0);
        }
        char tag[96];
        std::snprintf(tag, sizeof tag, "topk_select k=%d n<=%d flags=%d%s", k, capMax + nq, flags, ties ? " ties" : "");
        report(ok, tag);
    }
}

// centroid_sums kernels 1 and 2, float32 and float16: sums[c][k] is the
// int64 sum of round-to-nearest-even(x * 2^32) over the points assigned to c.
static void checkSums() {
    std::mt19937 rng(9);
    std::normal_distribution<float> g(0.0f, 0.5f);
    const int n = 333, dim = 70, ld = 96, kc = 5;
    std::vector<float> xf(n * ld, 0);
    std::vector<u16> xh(n * ld, 0);
    std::vector<u64> best(n);
    for (int i = 0; i < n; i++) {
        for (int k = 0; k < dim; k++) xh[i * ld + k] = f2h(g(rng)), xf[i * ld + k] = (i % 2) ? g(rng) : sim::half(xh[i * ld + k]);
        best[i] = (i % 11 == 3) ? 0 : make_key(1.0f, i % kc);
    }
    for (int v = 1; v <= 2; v++) {
        for (int f16 = 0; f16 <= 1; f16++) {
            std::vector<u64> sums(kc * dim, 0), want(kc * dim, 0);
            for (int i = 0; i < n; i++) {
                if (!best[i]) continue;
                for (int k = 0; k < dim; k++) {
                    const float x = f16 ? sim::half(xh[i * ld + k]) : xf[i * ld + k];
                    want[(i % kc) * dim + k] += (u64)(i64)std::nearbyint((double)x * 4294967296.0);
                }
            }
            SumArgs s{f16 ? (const void*)xh.data() : (const void*)xf.data(), best.data(), sums.data(), n, dim, ld};
            void (*k)(SumArgs) = v == 1 ? (f16 ? centroid_sums_kernel1_f16 : centroid_sums_kernel1_f32)
                                        : (f16 ? centroid_sums_kernel2_f16 : centroid_sums_kernel2_f32);
            launch(k, s, 3, 1);
            char tag[64];
            std::snprintf(tag, sizeof tag, "centroid_sums v%d %s", v, f16 ? "f16" : "f32");
            report(sums == want, tag);
        }
    }
}
#endif

int main() {
#ifdef HPCRUN_SM90A
    const std::vector<Version> versions = {
        {5, V5_BM, V5_BN, topk_kernel5_f16, maxarg_kernel5_f16, prefixmax_kernel5_f16, false, false, band_kernel5_f16, bandprefix_kernel5_f16},
        {7, V5_BM, V5_BN, topk_kernel7_f16, maxarg_kernel7_f16, prefixmax_kernel7_f16, false, false, band_kernel7_f16, bandprefix_kernel7_f16}};
#else
    const std::vector<Version> versions = {
        {1, V1_TILE, V1_TILE, topk_kernel1_f16, maxarg_kernel1_f16, prefixmax_kernel1_f16, false, true},
        {1, V1_TILE, V1_TILE, topk_kernel1_f32, maxarg_kernel1_f32, prefixmax_kernel1_f32, true, true},
        {2, V2_TILE, V2_TILE, topk_kernel2_f16, maxarg_kernel2_f16, prefixmax_kernel2_f16, false, false, band_kernel2_f16, bandprefix_kernel2_f16},
        {3, V2_TILE, V2_TILE, topk_kernel3_f16, maxarg_kernel3_f16, prefixmax_kernel3_f16, false, false, band_kernel3_f16, bandprefix_kernel3_f16},
        {4, V2_TILE, V2_TILE, topk_kernel4_f16, maxarg_kernel4_f16, prefixmax_kernel4_f16, false, false, band_kernel4_f16, bandprefix_kernel4_f16},
        {6, V6_TILE, V6_TILE, topk_kernel6_f16, maxarg_kernel6_f16, prefixmax_kernel6_f16, false, true},
        {6, V6_TILE, V6_TILE, topk_kernel6_f32, maxarg_kernel6_f32, prefixmax_kernel6_f32, true, true},
    };
#endif
    // ragged tiles, k tails (ld 96 and 160 end in half a 64-k stage), dim < ld,
    // more k steps than pipeline stages (ld 320: five 64-k steps), and 3x3
    // tiles of one k step (a persistent block's copies run two tiles ahead)
    const std::vector<Case> cases = {{1, 1, 8, 32}, {70, 90, 40, 64}, {130, 300, 96, 96}, {129, 257, 150, 160}, {40, 260, 300, 320},
                                     {300, 600, 64, 64}};
    unsigned seed = 1;
    for (const Case& c : cases) {
      for (Kind kind : {ExactF16, RandomF16, RandomF32}) {
        const Data d = gen(c, seed++, kind);
        for (const Version& ver : versions) {
            if (ver.f32 != (kind == RandomF32) || (kind != ExactF16 && !ver.ffma)) continue;
            for (int mode = 0; mode < 20; mode++) {
                sim::lazyCp = mode & 1, sim::lazyWg = mode & 2;
                // versions 5, 7: one block per tile, or 1 or 3 blocks for all;
                // the tiles A fastest, or B fastest (group 1) on 3 blocks, or
                // in groups of 2 A tiles (the last one narrower where 3 A tiles) on one block per tile
                persist = (int[]){0, 1, 3, 3, 0}[mode >> 2];
                group = (int[]){0, 0, 0, 1, 2}[mode >> 2];
                const bool wgmma = ver.v == 5 || ver.v == 7;         // the v5 engine
                const bool async = (ver.v >= 3 && ver.v <= 5) || wgmma; // cp.async: versions 3, 4, 5, 7
                if ((!async && (mode & 3) != 0) || (!wgmma && mode >= 4)) continue;
                if (!wgmma && sim::lazyWg) continue;
                char tag[128];
                std::snprintf(tag, sizeof tag, "v%d %s %dx%d d=%d ld=%d cp=%s wgmma=%s%s%s", ver.v, kindName[kind], c.nA, c.nB, c.dim, c.ld,
                              sim::lazyCp ? "lazy" : "eager", sim::lazyWg ? "lazy" : "eager",
                              persist == 1 ? " grid=1" : persist == 3 ? " grid=3" : "", group == 1 ? " group=1" : group == 2 ? " group=2" : "");
                checkTopK(ver, c, d, tag);
                checkArgmax(ver, c, d, false, tag);
                checkArgmax(ver, c, d, true, tag);
                if (ver.band && kind == ExactF16) {
                    checkBand(ver, c, d, false, tag);
                    checkBand(ver, c, d, true, tag);
                }
            }
        }
      }
    }
#ifndef HPCRUN_SM90A
    checkSelect();
    checkSums();
    checkRescore();
    checkTopkFilter();
#endif
    std::printf("%d failures\n", failures);
    return failures ? 1 : 0;
}
