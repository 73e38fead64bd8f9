package cuda

import (
	"fmt"
	"os"
	"runtime"
	"strconv"
	"sync"

	"hpcrun/kernels"
)

// Backend is the similarity engine on one NVIDIA GPU; it implements
// kernels.Backend. Its methods may be called from any goroutine; calls on
// one Backend run one at a time. Close releases the GPU.
type Backend struct {
	// Version selects the kernel version of every op (see the .cu
	// headers): 0 picks the fastest that applies (defaultVersion, tensor
	// cores, when both inputs are float16; else ffmaVersion), 1 and 6 force
	// the FFMA kernels of that version everywhere, 2 to 5 and 7 the
	// tensor-core kernels where the inputs are float16 (others use
	// ffmaVersion; 7 is 5 with leaner epilogues; 7 falls back to 5, 5 to 4
	// on a GPU without sm_90a, 4 to 3 on one without 80 KiB of shared
	// memory per block).
	Version int

	// Precision says what a float32 input becomes on the GPU (set it
	// before the first call): Exact keeps it float32, so an op with a
	// float32 operand runs the FFMA kernels (version 1) and gives the CPU
	// backend's results; Float16x2 splits it into two float16 halves, hi =
	// x rounded and lo = x - hi rounded, and the tensor cores add hi·y +
	// lo·y (both float32: hi·hi + hi·lo + lo·hi) over 2 (3) pieces of every
	// row: within kerneltest's float32 tolerances at 2 (3) times the
	// tensor-core work (NearestCentroid with float32 points and sums keeps
	// Exact: the sums need the points exactly); Float16 rounds it to
	// float16 (to nearest even, as PyTorch's .half() in the paper's code) so
	// every op runs on the tensor cores, with results then off by up to
	// about 2⁻¹¹·‖a‖·‖b‖ in each similarity (beyond kerneltest's
	// tolerances). A value beyond float16's range is an error in both.
	Precision Precision

	// Filter turns on the exact filter (exact.go) for every op with float16
	// streamed rows (base rows, points) and Precision Exact: the tensor cores find each row's candidates
	// within a proven error bound and version 1's FMA chain recomputes
	// them, so the results are the CPU backend's, bit for bit. Set it
	// before the first call (FilterEnv=1 sets it in New).
	Filter bool

	dev     device
	threads int
	tun     tunables

	mu              sync.Mutex
	compute, copyS  stream
	pinned          [2][]byte
	closed          bool
	stats           stats
	deviceDescribed string
}

// stats counts what the host side did (the tests check that the small
// tunables exercise every path).
type stats struct {
	chunks     int // streamed chunks
	launches   int // similarity kernel launches
	splits     int // TopK ranges redone in halves after a candidate overflow
	selects    int // topk_select launches
	queryBlock int // TopK query blocks

	bandExactRows int // exact filter: rows recomputed against every B row (slots overflowed, or no filter possible)
	// with tunables.profile: rows through the band kernels and the
	// candidates they appended (the rescoring's work)
	bandRows, bandCandidates int

	// with tunables.profile (synchronising after every kernel): seconds
	// in the similarity kernels (with TopK's count copy), in topk_select,
	// and waiting for the next chunk's packing and copy
	kernelSec, selectSec, stallSec float64
	// always: seconds packing and copying the first chunk of a stream
	// (nothing overlaps it), and TopK's last select, copy back and decode
	firstSec, resultSec float64
}

// Profile reports, for benchmarks, what the host side did since the last
// call (launches, chunks, splits, selects, query blocks) and, after
// SetProfile(true), where the time went. It resets the counters.
func (e *Backend) Profile() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	s := e.stats
	e.stats = stats{}
	out := fmt.Sprintf("launches %d, chunks %d, selects %d, splits %d, query blocks %d", s.launches, s.chunks, s.selects, s.splits, s.queryBlock)
	if s.bandExactRows > 0 {
		out += fmt.Sprintf(", exact-filter rows recomputed whole %d", s.bandExactRows)
	}
	if s.bandRows > 0 {
		out += fmt.Sprintf(", exact-filter candidates per row %.2f", float64(s.bandCandidates)/float64(s.bandRows))
	}
	if s.firstSec > 0 || s.resultSec > 0 {
		out += fmt.Sprintf("; first chunk %.3f s, waiting for chunks %.3f s", s.firstSec, s.stallSec)
		if s.resultSec > 0 {
			out += fmt.Sprintf(", top-k results back %.3f s", s.resultSec)
		}
	}
	if e.tun.profile {
		out += fmt.Sprintf("; kernels %.3f s, select (TopK) or sums (NearestCentroid) %.3f s", s.kernelSec, s.selectSec)
	}
	return out
}

// SetProfile makes the ops synchronise after every kernel to time them
// (Profile reports the times); slower, for benchmarks only.
func (e *Backend) SetProfile(on bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.tun.profile = on
}

var _ kernels.Backend = (*Backend)(nil)

// EmulatorEnv names the environment variable that, set to 1, makes
// Available and New use the Go emulator of the kernels (emu.go) instead of
// a GPU: exact reference semantics, very slow, for running the CUDA code
// paths and scripts end to end on machines without a GPU.
const EmulatorEnv = "HPCRUN_CUDA_EMULATOR"

func emulated() bool { return os.Getenv(EmulatorEnv) == "1" }

// VersionEnv names the environment variable that sets a new Backend's
// Version (0 to 7; e.g. to run a whole experiment on one kernel
// version).
const VersionEnv = "HPCRUN_CUDA_KERNELS"

func versionFromEnv() (int, error) {
	s := os.Getenv(VersionEnv)
	if s == "" {
		return 0, nil
	}
	v, err := strconv.Atoi(s)
	if err != nil || v < 0 || v > 7 {
		return 0, fmt.Errorf("kernels/cuda: %s=%q: want 0 (auto) or 1 to 7", VersionEnv, s)
	}
	return v, nil
}

// Available reports whether a CUDA GPU can be used: a description of
// device 0 ("NVIDIA H100 80GB HBM3 (device 0, sm_90, 132 SMs, 79.1 GiB,
// driver 13.0)"), or an error wrapping ErrNoDriver ("libcuda.so.1 not
// found") or ErrNoDevice. It loads the driver but creates no context.
func Available() (string, error) {
	if emulated() {
		return "emulated CUDA device (" + EmulatorEnv + "=1: Go reference kernels, no GPU)", nil
	}
	return probe()
}

// DeviceCount returns the number of CUDA devices visible to this process
// (after CUDA_VISIBLE_DEVICES), e.g. to map local ranks to GPUs with
// New(localRank % n, ...); 1 with the emulator.
func DeviceCount() (int, error) {
	if emulated() {
		return 1, nil
	}
	return deviceCount()
}

// New opens GPU ordinal (0 = first), JIT-compiles the embedded PTX and
// creates the two streams. threads bounds the host goroutines that convert
// and check input rows (<= 0: GOMAXPROCS). Without a driver or device it
// returns an error wrapping ErrNoDriver or ErrNoDevice, with a one-line
// reason (e.g. "kernels/cuda: no CUDA driver: libcuda.so.1 not found ...").
func New(ordinal, threads int) (*Backend, error) {
	if emulated() {
		dev, err := newEmuDevice()
		if err != nil {
			return nil, err
		}
		return newBackend(dev, threads)
	}
	dev, err := openDevice(ordinal)
	if err != nil {
		return nil, err
	}
	return newBackend(dev, threads)
}

func newBackend(dev device, threads int) (*Backend, error) {
	if threads <= 0 {
		threads = runtime.GOMAXPROCS(0)
	}
	v, err := versionFromEnv()
	var group int
	if err == nil {
		group, err = groupFromEnv(defaultTunables.group)
	}
	if err != nil {
		dev.close()
		return nil, err
	}
	e := &Backend{Version: v, Filter: filterFromEnv(), dev: dev, threads: threads, tun: defaultTunables}
	e.tun.group = group
	undo := dev.bind()
	defer undo()
	if e.compute, err = dev.newStream(); err == nil {
		e.copyS, err = dev.newStream()
	}
	if err != nil {
		dev.close()
		return nil, err
	}
	e.deviceDescribed = dev.describe()
	if persistFromEnv() {
		e.tun.persistBlocks = smCount(dev)
	}
	return e, nil
}

// Version 5 runs on a persistent grid, one block per SM
// (tunables.persistBlocks; the emulator takes 3 blocks), unless
// PersistEnv=0. On the H200 (docs/gpu/2026-11-27-h200/run4) it passed
// every version-5 and exact-filter conformance suite and took top-k at the
// paper's size from 2.086 to 1.904 s (NearestCentroid's kernel 248 -> 257
// TFLOP/s, top-k's kernel alone unchanged at 368).
const PersistEnv = "HPCRUN_CUDA_PERSIST"

func persistFromEnv() bool { return os.Getenv(PersistEnv) != "0" }

// GroupEnv sets the v5 engine's tile order (tunables.group): "0" A tiles
// fastest, g > 0 groups of g A tiles; unset keeps the default.
const GroupEnv = "HPCRUN_CUDA_GROUP"

// maxGroup bounds the group (v5_tile reads it as 32 bits; a group of at
// least the A tiles' count is order 0 anyway).
const maxGroup = 1 << 16

func groupFromEnv(def int) (int, error) {
	s := os.Getenv(GroupEnv)
	if s == "" {
		return def, nil
	}
	g, err := strconv.Atoi(s)
	if err != nil || g < 0 || g > maxGroup {
		return 0, fmt.Errorf("cuda: %s=%q: want 0 (A tiles fastest) or a group of 1 to %d A tiles", GroupEnv, s, maxGroup)
	}
	return g, nil
}

// smCount is the GPU's streaming multiprocessors (the emulator: 3, so
// that its tests give each persistent block several tiles).
func smCount(dev device) int {
	if c, ok := dev.(*cudaDevice); ok && c.inf.sms > 0 {
		return c.inf.sms
	}
	return 3
}

// launchSim launches similarity kernel name of version v over a's rows on
// the compute stream, with the tile order of the tunables.
func (e *Backend) launchSim(name string, v int, a *simArgs) error {
	a.Group = int64(e.tun.group)
	return e.dev.launch(name, e.grid(v, int(a.NA), int(a.NB)), [3]int{threads, 1, 1}, e.compute, words(a))
}

// grid is the launch grid of similarity kernel version v over nA x nB rows:
// one block per tile, or the v5 engine's persistent grid (persistBlocks).
func (e *Backend) grid(v, nA, nB int) [3]int {
	ta, tb := tiles(v)
	gx, gy := ceilDiv(nA, ta), ceilDiv(nB, tb)
	if wgmmaEngine(v) && e.tun.persistBlocks > 0 && gx*gy > e.tun.persistBlocks {
		return [3]int{e.tun.persistBlocks, 1, 1}
	}
	return [3]int{gx, gy, 1}
}

// Name reports the backend and the device.
func (e *Backend) Name() string { return "cuda(" + e.deviceDescribed + ")" }

// Close frees the staging memory, unloads the modules and releases the
// device's primary context. The Backend must not be used afterwards.
func (e *Backend) Close() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return nil
	}
	e.closed = true
	undo := e.dev.bind()
	for i, b := range e.pinned {
		if b != nil {
			e.dev.hostFree(b)
			e.pinned[i] = nil
		}
	}
	undo()
	return e.dev.close()
}

// begin serialises calls and makes the context current on this thread.
func (e *Backend) begin() (func(), error) {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return nil, fmt.Errorf("kernels/cuda: Backend used after Close")
	}
	undo := e.dev.bind()
	return func() { undo(); e.mu.Unlock() }, nil
}

// version returns the kernel version for layout l: float32 layouts run
// the FFMA kernels (version 1 when Version is 1, else 6: the same bits,
// faster); float16 ones Version, or defaultVersion when it is 0, after the
// fallbacks of GPUs that lack it.
func (e *Backend) version(l layout) int {
	if e.Version == 1 || e.Version == 6 {
		return e.Version // FFMA for every layout
	}
	if !l.f16 {
		return ffmaVersion
	}
	v := e.Version
	if v == 0 {
		v = defaultVersion
	}
	return e.loaded("topk", v)
}

// loaded walks the fallbacks from version v down to one whose float16
// kernel of op this GPU has loaded: 7 to 5 (7 is 5's engine), 5 to 4
// (wgmma needs sm_90a), 4 to 3 (80 KiB of shared memory per block); 2
// and 3 run everywhere.
func (e *Backend) loaded(op string, v int) int {
	for v >= 4 && !e.dev.has(fmt.Sprintf("%s_kernel%d_f16", op, v)) {
		if v == 7 {
			v = 5
		} else {
			v--
		}
	}
	return v
}

// wgmmaEngine: version v runs common.cuh's v5 engine (wgmma, 128x256 tiles,
// the persistent grid): 5 and 7.
func wgmmaEngine(v int) bool { return v == 5 || v == 7 }

// tensorCores: version v runs the tensor cores (2 to 5, 7; 1 and 6 are FFMA).
func tensorCores(v int) bool { return v >= 2 && v != 6 }

// Precision is what float32 inputs become on the GPU (Backend.Precision).
type Precision int

const (
	Exact     Precision = iota // float32 stays float32 (FFMA kernels when an operand is float32)
	Float16                    // float32 rounded to float16 (tensor cores for every op)
	Float16x2                  // float32 split into two float16 halves (tensor cores, float32 tolerance)
)

// ParsePrecision reads runtime.gpu_precision: "float32" (Exact), "float16"
// or "float16x2".
func ParsePrecision(s string) (Precision, error) {
	switch s {
	case "", "float32":
		return Exact, nil
	case "float16":
		return Float16, nil
	case "float16x2":
		return Float16x2, nil
	}
	return Exact, fmt.Errorf("kernels/cuda: precision %q: want float32, float16x2 or float16", s)
}

func (p Precision) String() string {
	switch p {
	case Float16:
		return "float16"
	case Float16x2:
		return "float16x2"
	}
	return "float32"
}

// Numerics is "gpu-float16" when float32 inputs are rounded (results then
// differ from the exact ones), else "" (stages put it in their hashes).
func (e *Backend) Numerics() string {
	switch e.Precision {
	case Float16:
		return "gpu-float16"
	case Float16x2:
		return "gpu-float16x2"
	}
	return ""
}

// layoutOf is the device layout of an op's operands: float16 when every
// operand is float16, or always with Precision Float16.
func (e *Backend) layoutOf(dim int, ms ...kernels.Matrix) layout {
	if e.Precision == Float16 {
		return layoutOf(dim) // every operand is (or is rounded to) float16
	}
	l := layoutOf(dim, ms...)
	if e.Precision != Float16x2 || l.f16 || len(ms) != 2 {
		return l
	}
	// Float16x2: float32 operands split into hi + lo; the sum over pieces
	// is a·b's hi·hi + hi·lo (+ lo·hi when both are float32)
	l = layoutOf(dim)
	l.ld1 = l.ld
	switch f32A, f32B := ms[0].F16 == nil, ms[1].F16 == nil; {
	case f32A && f32B:
		l.parts, l.pat = 3, [2]string{"hhl", "hlh"}
	case f32A:
		l.parts, l.pat = 2, [2]string{"hl", "hh"}
	default:
		l.parts, l.pat = 2, [2]string{"hh", "hl"}
	}
	l.ld = l.parts * l.ld1
	return l
}

// Float16Version is the kernel version float16 inputs run with now: Version
// (or the default) after the fallbacks of GPUs that lack it (5 needs sm_90a,
// 4 needs 80 KiB of shared memory per block).
func (e *Backend) Float16Version() int { return e.version(layout{f16: true}) }

// Float32Version is the kernel version an op with a float32 operand kept
// float32 (Precision Exact, no filter) runs with now: 1 or ffmaVersion.
func (e *Backend) Float32Version() int { return e.version(layout{}) }

// Versions names the kernel versions ops run with now, for a log line:
// "float16 v5, float32 v6" (with the filter on, ", filter bands v4").
func (e *Backend) Versions() string {
	s := fmt.Sprintf("float16 v%d, float32 v%d", e.Float16Version(), e.Float32Version())
	if e.filtering() {
		s += fmt.Sprintf(", filter bands v%d", e.BandVersion())
	}
	return s
}

// BandVersion is the version of the exact filter's band kernels (the
// argmax ops on float16 rows with Filter) now: bandVersion.
func (e *Backend) BandVersion() int { return e.bandVersion(layoutOf(0)) }

// defaultVersion is the tensor-core kernel version used when Version is 0
// (version() falls back to 5, 4, then 3, on GPUs without its kernels,
// sm_90a or 80 KiB of shared memory per block). Versions 2 to 5 and 7 give
// the same bits. On an H100 (docs/gpu/2026-11-27-h100, same runs) version
// 7 ran the kernels alone at 598 (top-k) and 479 (NearestCentroid) TFLOP/s
// against version 5's 359 and 259, 501-504 for NearestCentroid with the
// grouped tile order (tunables.group); top-k at the paper's size (50,000 x
// 10,000,000, k = 1,000) took 2.23 s (v5: 2.26 s, PyTorch 4.96 s). On an
// H200 (docs/gpu/2026-11-27-h200/run1) version 4 ran 239 / 208 TFLOP/s
// and version 5 377 / 255.
const defaultVersion = 7

// ffmaVersion is the FFMA kernel version of float32 layouts unless Version
// is 1: version 6 (128x128 tiles) computes version 1's FMA chains, so the
// same bits (TestGPUVersionsAgree/v6, the quickstart byte for byte), and on
// an H200 (docs/gpu/2026-11-27-h200/run1, float32 queries x 1,000,000
// float16 rows) took 0.38 / 0.20 / 0.28 s for top-k / NearestCentroid /
// MaxArg against version 1's 0.51 / 0.25 / 0.49 s.
const ffmaVersion = 6

// bandVersion is the version of the exact filter's band kernels: version()'s,
// except 4 where Version is 0 and version() picks 5 (a GPU without
// version 7's kernels), whose band kernels ran slower on an H200
// (docs/gpu/2026-11-27-h200/run1: MaxArg 0.154 vs 0.122 s, NearestCentroid
// on 10,000,000 kept points 0.61 vs 0.54 s). Version 7's run faster than
// 4's on an H100 (docs/gpu/2026-11-27-h100 runs 2-3, float32 queries x
// 1,000,000 rows: MaxArg 0.111 / 0.148 s against 0.278 / 0.568;
// NearestCentroid even, 0.187 / 0.143 against 0.108 / 0.153).
func (e *Backend) bandVersion(l layout) int {
	v := e.version(l)
	if e.Version == 0 && v == 5 {
		v = 4
	}
	return e.loaded("band", v) // its module or shared memory may be missing where the top-k kernels' were not
}

// kernelName is "<op>_kernel<version>_<f16|f32>".
func kernelName(op string, version int, l layout) string {
	return fmt.Sprintf("%s_kernel%d_%s", op, version, l.dtypeShort)
}

func ceilDiv(a, b int) int { return (a + b - 1) / b }
