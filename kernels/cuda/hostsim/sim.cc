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
// runs in the four modes of eager/lazy cp.async and wgmma. Prints one line
// per case; exit status 1 on any failure.
#include "../topk.cu"
#include "../maxarg.cu"
#include "../centroid.cu"
#include "../prefixmax.cu"

#include <algorithm>
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
static void launch(Kernel k, const SimArgs& a, int gx, int gy) {
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
                    me.tid = t, me.cx = cx, me.cy = cy, me.gx = gx;
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
};

static int failures = 0;
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
    launch(ver.topk, a, (c.nA + ver.ta - 1) / ver.ta, (c.nB + ver.tb - 1) / ver.tb);
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
    launch(prefix ? ver.prefix : ver.maxarg, a, (c.nA + ver.ta - 1) / ver.ta, (c.nB + ver.tb - 1) / ver.tb);
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

int main() {
#ifdef HPCRUN_SM90A
    const std::vector<Version> versions = {{5, V5_BM, V5_BN, topk_kernel5_f16, maxarg_kernel5_f16, prefixmax_kernel5_f16, false, false}};
#else
    const std::vector<Version> versions = {
        {1, V1_TILE, V1_TILE, topk_kernel1_f16, maxarg_kernel1_f16, prefixmax_kernel1_f16, false, true},
        {1, V1_TILE, V1_TILE, topk_kernel1_f32, maxarg_kernel1_f32, prefixmax_kernel1_f32, true, true},
        {2, V2_TILE, V2_TILE, topk_kernel2_f16, maxarg_kernel2_f16, prefixmax_kernel2_f16, false, false},
        {3, V2_TILE, V2_TILE, topk_kernel3_f16, maxarg_kernel3_f16, prefixmax_kernel3_f16, false, false},
        {4, V2_TILE, V2_TILE, topk_kernel4_f16, maxarg_kernel4_f16, prefixmax_kernel4_f16, false, false},
        {6, V6_TILE, V6_TILE, topk_kernel6_f16, maxarg_kernel6_f16, prefixmax_kernel6_f16, false, true},
        {6, V6_TILE, V6_TILE, topk_kernel6_f32, maxarg_kernel6_f32, prefixmax_kernel6_f32, true, true},
    };
#endif
    // ragged tiles, k tails (ld 96 and 160 end in half a 64-k stage), dim < ld,
    // and more k steps than pipeline stages (ld 320: five 64-k steps)
    const std::vector<Case> cases = {{1, 1, 8, 32}, {70, 90, 40, 64}, {130, 300, 96, 96}, {129, 257, 150, 160}, {40, 260, 300, 320}};
    unsigned seed = 1;
    for (const Case& c : cases) {
      for (Kind kind : {ExactF16, RandomF16, RandomF32}) {
        const Data d = gen(c, seed++, kind);
        for (const Version& ver : versions) {
            if (ver.f32 != (kind == RandomF32) || (kind != ExactF16 && !ver.ffma)) continue;
            for (int mode = 0; mode < 4; mode++) {
                sim::lazyCp = mode & 1, sim::lazyWg = mode & 2;
                const bool async = ver.v >= 3 && ver.v <= 5; // cp.async: versions 3, 4, 5
                if (!async && mode != 0) continue;
                if (ver.v != 5 && sim::lazyWg) continue;
                char tag[128];
                std::snprintf(tag, sizeof tag, "v%d %s %dx%d d=%d ld=%d cp=%s wgmma=%s", ver.v, kindName[kind], c.nA, c.nB, c.dim, c.ld,
                              sim::lazyCp ? "lazy" : "eager", sim::lazyWg ? "lazy" : "eager");
                checkTopK(ver, c, d, tag);
                checkArgmax(ver, c, d, false, tag);
                checkArgmax(ver, c, d, true, tag);
            }
        }
      }
    }
    std::printf("%d failures\n", failures);
    return failures ? 1 : 0;
}
