// Package cuda is the similarity engine of package kernels on NVIDIA GPUs:
// Backend implements kernels.Backend (TopK, MaxArg, ShiftedMax,
// NearestCentroid with fixed-point kernels.Accum sums, PrefixMax) with the
// same results as kernels.Naive, within the tolerances of kernels/kerneltest.
//
// STATUS: checked on an H100 80GB HBM3 (docs/gpu/2026-11-26-h100, versions
// 1 to 4; docs/gpu/2026-11-27-h100, versions 5 to 7 and the tile orders)
// and an H200 (docs/gpu/2026-11-27-h200, versions 1 to 6, both
// precisions, the exact filter, top-k streams): every conformance suite
// passes, versions 2 to 5 and 7 agree bit for bit and so do 1 and 6, and
// the quickstart on the GPU writes the same outputs as on the CPU (float32,
// version 6, the exact filter, version 7). Other GPUs (sm_80, sm_86, sm_89)
// have not been run. Without a GPU: ptxas 12.4 assembles every kernel
// (TestPTXAssemble), the host simulator runs their CUDA C (TestHostSim,
// hostsim/), and the emulator runs their host side. Defaults: version 7 on
// sm_90 (4 elsewhere) for float16 operands, on a persistent grid (one block
// per SM, its copies running across its tiles; PersistEnv=0 turns it off)
// taking its tiles in groups of 8 A tiles (tunables.group, GroupEnv), 6
// for float32 ones, the exact filter on (runtime.gpu_filter).
//
// # Use
//
//	desc, err := cuda.Available()   // "NVIDIA H100 ... (device 0, sm_90, ...)" or ErrNoDriver / ErrNoDevice
//	b, err := cuda.New(0, threads)  // device 0; threads convert/check input rows on the host
//	defer b.Close()
//	res, err := b.TopK(q, base, kernels.TopKOptions{K: 1000})
//
// # Driver
//
// The CUDA driver API (libcuda.so.1) is bound at run time with
// github.com/ebitengine/purego (dlopen, no cgo), so one binary builds
// everywhere and runs on every node; without a driver or a GPU, Available
// and New return an error wrapping ErrNoDriver ("libcuda.so.1 not found")
// or ErrNoDevice, and the caller falls back to kernels.NewCPU.
//
// # Kernels and PTX
//
// The kernels are CUDA C, one file per op in llm.c style (topk.cu,
// maxarg.cu — MaxArg and ShiftedMax —, centroid.cu, prefixmax.cu; numbered
// versions listed in each header; common.cuh holds the tile engines and the
// argmax epilogue; cuda_min.h the few CUDA declarations needed without the
// toolkit). scripts/ptx.sh compiles them with Debian's clang-19 NVPTX backend
// into sm_80 PTX (ISA 7.0), which is committed and embedded (go:embed);
// the driver JIT-compiles it for the GPU at hand (sm_80 or newer; older GPUs
// get a clear error). Each .cu is compiled a second time with
// -DHPCRUN_SM90A into <op>_sm90a.ptx (ISA 8.0, target sm_90a: version 5's
// wgmma), which only sm_90 GPUs load (elsewhere, or if its JIT fails, the
// version-5 kernels are missing and version 5 falls back to 4).
// TestPTXAssemble runs NVIDIA's ptxas (CUDA 12.4, fetched by
// scripts/deps.sh from Debian's nvidia-cuda-toolkit .deb) on every module
// for sm_80, sm_90 and sm_90a: registers, no spills, no serialised wgmma.
// TestPTXFresh regenerates into a temp dir and fails on
// any difference (skipped without clang-19); TestPTXStructure always checks
// .version/.target, the entry points, parameter sizes against the Go
// argument structs, no calls or .extern functions, no local memory, and
// static shared memory per kernel within 48 KiB (largest: topk_select's
// 47 KiB, version 3's 40 KiB).
//
// Precision: an op with a float32 operand runs version 6 (FFMA) unless
// Backend.Precision says otherwise (runtime.gpu_precision). Float16
// rounds float32 rows to float16 while packing them (NearestCentroid takes
// its norms from the rounded centroids), so the op gives exactly what it
// gives on inputs rounded beforehand (TestPrecisionFloat16). Float16x2
// packs a float32 row as pieces of float16 halves (hi, lo = x - hi) and
// the other operand's rows as matching pieces (layout.pat), so the kernels'
// k sum over ld = parts*ld1 adds hi·y + lo·y: float32 tolerances on the
// tensor cores (TestPrecisionFloat16x2 runs kerneltest.All).
//
// Versions: 1 = FFMA tiles (64x64 per block, 4x4 per thread, float32
// arithmetic; float16 inputs converted exactly); 2 = tensor cores,
// mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 (128x128 per block,
// 64x32 per warp, register prefetch); 3 = version 2's tile, fragments and
// mma sequence (bit-identical results) fed by a two-stage cp.async
// pipeline and ldmatrix.x4; 4 = version 3 with a four-stage pipeline in 80
// KiB of dynamic shared memory (cuFuncSetAttribute; a GPU without that much
// falls back to 3), the default on GPUs other than sm_90; 5 = sm_90a
// only: a 128x256 tile per block of two warpgroups, each one
// wgmma.mma_async.m64n256k16 per 16 k on operands in 128-byte-swizzled
// shared memory (matrix descriptors), fed by a four-stage cp.async pipeline
// in 193 KiB of dynamic shared memory (1 block per SM, 128 float32
// accumulators per thread); the same k order and 16-product steps as
// version 2 (bit for bit on the H200); 6 = version 1's FMA chains
// (the same bits, float32 or float16 inputs) on a 128x128 tile with 8x8
// per thread, 16-byte shared loads and double buffering, the default for
// float32 operands (1.2-1.7x version 1 on the H200; Version 6 runs it for
// every op, as 1 does). Backend.Version (or HPCRUN_CUDA_KERNELS) forces
// one. float32 operands always run FFMA kernels (unless Precision or the
// exact filter says otherwise): converting them to float16 would change
// results beyond the conformance tolerances.
// 7 = version 5's engine with leaner epilogues: top-k skips a row of a
// tile whose largest entry (a max tree) does not pass the threshold; the
// argmax ops run common.cuh argmax_cols (float compares, one key per row,
// no per-entry bounds on full tiles, four compare chains per row). The same
// bits (the host simulator; on an H100 every conformance suite and
// TestGPUVersionsAgree), the default on sm_90: on the H100 the kernels
// alone ran at 598 (top-k) and 479 (NearestCentroid) TFLOP/s against
// version 5's 359 and 259 (docs/gpu/2026-11-27-h100/run1).
//
// Exact filter (Backend.Filter, runtime.gpu_filter; exact.cu, exact.go):
// TopK on float16 base rows lowers each query's exact threshold by its
// error bound (topk_filter_thr), lets the unchanged top-k kernels append
// against it (queries rounded to float16), and recomputes each range's new
// candidates exactly (topk_rescore) before topk_select. The argmax ops
// with float16 streamed rows and Precision Exact run the
// band kernels (the argmax epilogue on float16 operands, B rounded, also
// appending every entry within a proven bound w of the row's running best)
// and rescore_argmax, which recomputes the appended entries still within w
// of the final best with version 1's FMA chain and keeps the largest exact
// key: the CPU backend's results bit for bit (the emulator's tests compare
// them), at the tensor cores' speed plus a few candidate rows per row.
// Rows with more candidates than slots, or all rows when B cannot be
// rounded, go to rescore_rows (exact against every B row).
//
// # Numerics and tolerances
//
// Version 1 computes every pair as one fma.rn.f32 chain in k order, like
// the CPU backend. Version 2 on float16 inputs: products of two float16 are
// exact in float32, and the tensor core adds each group of products into
// the float32 accumulator with truncation instead of rounding (Fasi et al.,
// "Numerical behavior of NVIDIA tensor cores", 2021), so the error is at
// most about (d/8 + 1)·2⁻²²·Σ|a_k·b_k|, inside kerneltest.Tol =
// (d+2)·2⁻²³·‖a‖·‖b‖ (which bounds any float32 summation order); the same
// tests apply to both versions. In both, a pair's value depends only on its
// two rows (fixed k order, no split-k), so base chunks merge exactly with
// kernels.MergeTopK and chunked k-means gives identical assignments.
// Results are (value, index) keys compared as one uint64 (keys.go), so ties
// go to the smaller index as everywhere in kernels; -0 counts as +0.
//
// # Host side (ops.go, pack.go)
//
// The large set (base rows; points) is streamed in chunks of chunkBytes
// while the small one (queries; centroids; PrefixMax's x) stays resident.
// Two CUDA streams overlap copies with compute: while chunk c runs on the
// compute stream, a goroutine converts and NaN-checks chunk c+1 into the
// other page-locked staging buffer and copies it on the copy stream into
// the other device buffer; the compute stream is synchronised at the end of
// every chunk, so buffers are reused without events.
//
// TopK (k up to 20,000 and beyond) keeps per query k + max(k, 4096)
// candidate slots on the device and a threshold (the k-th best so far).
// Base rows are processed in increasing index order in adaptive ranges:
// topk_kernelN appends every value above the threshold, topk_select
// (radix select on the keys, one block per query) keeps the k best and
// raises the threshold. A value equal to the threshold always has a larger
// index than the k kept ones, so the strict > loses nothing. A range that
// overflowed some query's slots is redone in halves from the saved counts;
// a range of at most the headroom cannot overflow. Finally the k best keys
// per query are sorted by the last topk_select (for k <= 2,048: each key
// to its rank, counted in shared memory; larger k are sorted on the host)
// and copied back through the page-locked staging buffer, a batch of rows
// at a time, and decoded (BenchmarkDecodeTopK: 40 µs per row of 1,000 keys
// sorting on the host, 5 µs decoding device-sorted rows, one core).
// topk_select stages the keys in shared memory when they fit
// (k + headroom <= 5,888).
//
// NewTopKStream (kernels.TopKStreamer, stream.go) keeps one such query
// block — queries, thresholds, slots, the adapted range size — on the
// device while a scan adds its base blocks one after another (the sims and
// prune stages: blocks of 1M rows, flushed every 16M): the queries are
// uploaded once, no block starts from a threshold of -Inf with small
// ranges, and results are copied back and decoded at a flush only. A flush
// empties the slots and keeps the thresholds, so a later flush returns only
// what can still enter the top-k. kernels.ErrNoRoom when the queries need
// more than one query block (the stage then calls TopK per block).
//
// Keep (kernels.Keeper) uploads a set of points once, in NearestCentroid's
// layout against float32 centroids; a Kept set's NearestCentroid runs the
// same kernels on its device chunks (resident, instead of stream), so k-means
// iterations skip the host side. Keep answers kernels.ErrNoRoom past
// residentFrac of the free memory, or with HPCRUN_CUDA_KEEP=0.
//
// NearestCentroid adds each chunk's points to device int64 sums
// (centroid_sums: round-to-nearest-even(x·2³²), exactly kernels.ToFixed)
// right after their assignment (version 1: a thread per value; version 2,
// used with tile versions 2 and 3: a warp per point, red.global.add.u64);
// the counts are a histogram of the returned assignment.
//
// # Testing without a GPU
//
// hostsim/ runs the kernels' own CUDA C on the CPU: hostsim.h gives
// cuda_min.h's primitives host meanings (a std::thread per GPU thread;
// mma.sync, ldmatrix and shfl exchange values within a warp; wgmma reads
// shared memory through its descriptor; cp.async copies and wgmma groups
// are done at issue or as late as their wait_group allows; 16-byte
// accesses must be aligned), and sim.cc checks top-k, MaxArg and
// PrefixMax bit for bit on exactly representable inputs for versions 1-6
// (1-4 passed on the H100, so the model agrees with the hardware there) in
// all four eager/lazy modes, versions 1 and 6 bit for bit against the fma
// chain on random inputs, topk_select and the sums kernels: every kernel
// (TestHostSim). Deliberate bugs in version 5
// — a wait_group off by one, the prefetch one stage too far, no
// wgmma.wait_group, no swizzle, a wrong fragment row, no k-tail zero fill,
// no barrier — each fail it; a missing fence.proxy.async does not (the
// model has one memory proxy).
//
// emu.go is a device whose kernels are their contracts in plain Go; the
// tests run kerneltest.All through the whole host side on it with tiny
// tunables (every chunk, query block, grid slice and overflow split is
// crossed). On a GPU, TestGPU* run kerneltest.All for versions 1, 2 and 3,
// both select paths, v2 = v3 bit for bit,
// small tunables, k = 20,000, and CLIP-sized float16 rows (d = 512, 50,000
// base rows) against exact scores; without one they skip with a one-line
// reason. HPCRUN_CUDA_EMULATOR=1 makes Available and New use the emulator,
// so code that wires the CUDA backend (and scripts/gpu-check.sh --dry-run)
// runs end to end without a GPU, slowly.
package cuda
