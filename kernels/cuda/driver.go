//go:build linux && (amd64 || arm64)

package cuda

import (
	"fmt"
	"sync"
	"unsafe"

	"github.com/ebitengine/purego"
)

// driver holds the CUDA driver API entry points, bound at run time from
// libcuda.so.1 with purego (dlopen/dlsym, no cgo): one binary runs on every
// node, and without a driver New fails with ErrNoDriver.
type driver struct {
	cuInit                    func(flags uint32) int32
	cuDriverGetVersion        func(v *int32) int32
	cuDeviceGetCount          func(n *int32) int32
	cuDeviceGet               func(dev *int32, ordinal int32) int32
	cuDeviceGetAttribute      func(v *int32, attr int32, dev int32) int32
	cuDeviceGetName           func(name *byte, n int32, dev int32) int32
	cuDeviceTotalMem          func(bytes *uint64, dev int32) int32
	cuDevicePrimaryCtxRetain  func(ctx *uintptr, dev int32) int32
	cuDevicePrimaryCtxRelease func(dev int32) int32
	cuCtxSetCurrent           func(ctx uintptr) int32
	cuCtxSynchronize          func() int32
	cuModuleLoadDataEx        func(mod *uintptr, image *byte, n uint32, opts *int32, vals *uintptr) int32
	cuModuleUnload            func(mod uintptr) int32
	cuModuleGetFunction       func(f *uintptr, mod uintptr, name string) int32
	cuMemAlloc                func(p *uint64, size uintptr) int32
	cuMemFree                 func(p uint64) int32
	cuMemAllocHost            func(p *unsafe.Pointer, size uintptr) int32
	cuMemFreeHost             func(p unsafe.Pointer) int32
	cuMemcpyHtoDAsync         func(dst uint64, src unsafe.Pointer, n uintptr, s uintptr) int32
	cuMemcpyDtoHAsync         func(dst unsafe.Pointer, src uint64, n uintptr, s uintptr) int32
	cuMemsetD32Async          func(dst uint64, v uint32, n uintptr, s uintptr) int32
	cuMemGetInfo              func(free, total *uint64) int32
	cuStreamCreate            func(s *uintptr, flags uint32) int32
	cuStreamDestroy           func(s uintptr) int32
	cuStreamSynchronize       func(s uintptr) int32
	cuFuncSetAttribute        func(f uintptr, attr int32, v int32) int32
	cuLaunchKernel            func(f uintptr, gx, gy, gz, bx, by, bz, shared uint32, s uintptr, params *unsafe.Pointer, extra *unsafe.Pointer) int32
	cuGetErrorName            func(e int32, s **byte) int32
	cuGetErrorString          func(e int32, s **byte) int32
}

// CUDA driver constants used here (cuda.h).
const (
	cuSuccess          = 0
	cuErrorNoDevice    = 100
	attrMultiprocessor = 16 // CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT
	attrCCMajor        = 75 // CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR
	attrCCMinor        = 76 // CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR
	jitInfoLogBuffer   = 3  // CU_JIT_INFO_LOG_BUFFER
	jitInfoLogSize     = 4  // CU_JIT_INFO_LOG_BUFFER_SIZE_BYTES
	jitErrorLogBuffer  = 5  // CU_JIT_ERROR_LOG_BUFFER
	jitErrorLogSize    = 6  // CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES
	streamNonBlocking  = 1  // CU_STREAM_NON_BLOCKING
	attrMaxDynShared   = 8  // CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES
)

var (
	drvOnce sync.Once
	drv     *driver
	drvErr  error
)

// loadDriver opens libcuda.so.1, binds every entry point and calls cuInit,
// once per process.
func loadDriver() (*driver, error) {
	drvOnce.Do(func() { drv, drvErr = openDriver() })
	return drv, drvErr
}

func openDriver() (*driver, error) {
	lib, err := purego.Dlopen("libcuda.so.1", purego.RTLD_NOW|purego.RTLD_GLOBAL)
	if err != nil {
		return nil, fmt.Errorf("%w: libcuda.so.1 not found (%v)", ErrNoDriver, err)
	}
	d := &driver{}
	bind := []struct {
		fn    any
		names []string // first found wins (versioned names first)
	}{
		{&d.cuInit, []string{"cuInit"}},
		{&d.cuDriverGetVersion, []string{"cuDriverGetVersion"}},
		{&d.cuDeviceGetCount, []string{"cuDeviceGetCount"}},
		{&d.cuDeviceGet, []string{"cuDeviceGet"}},
		{&d.cuDeviceGetAttribute, []string{"cuDeviceGetAttribute"}},
		{&d.cuDeviceGetName, []string{"cuDeviceGetName"}},
		{&d.cuDeviceTotalMem, []string{"cuDeviceTotalMem_v2"}},
		{&d.cuDevicePrimaryCtxRetain, []string{"cuDevicePrimaryCtxRetain"}},
		{&d.cuDevicePrimaryCtxRelease, []string{"cuDevicePrimaryCtxRelease_v2", "cuDevicePrimaryCtxRelease"}},
		{&d.cuCtxSetCurrent, []string{"cuCtxSetCurrent"}},
		{&d.cuCtxSynchronize, []string{"cuCtxSynchronize"}},
		{&d.cuModuleLoadDataEx, []string{"cuModuleLoadDataEx"}},
		{&d.cuModuleUnload, []string{"cuModuleUnload"}},
		{&d.cuModuleGetFunction, []string{"cuModuleGetFunction"}},
		{&d.cuMemAlloc, []string{"cuMemAlloc_v2"}},
		{&d.cuMemFree, []string{"cuMemFree_v2"}},
		{&d.cuMemAllocHost, []string{"cuMemAllocHost_v2"}},
		{&d.cuMemFreeHost, []string{"cuMemFreeHost"}},
		{&d.cuMemcpyHtoDAsync, []string{"cuMemcpyHtoDAsync_v2"}},
		{&d.cuMemcpyDtoHAsync, []string{"cuMemcpyDtoHAsync_v2"}},
		{&d.cuMemsetD32Async, []string{"cuMemsetD32Async"}},
		{&d.cuMemGetInfo, []string{"cuMemGetInfo_v2"}},
		{&d.cuStreamCreate, []string{"cuStreamCreate"}},
		{&d.cuStreamDestroy, []string{"cuStreamDestroy_v2", "cuStreamDestroy"}},
		{&d.cuStreamSynchronize, []string{"cuStreamSynchronize"}},
		{&d.cuFuncSetAttribute, []string{"cuFuncSetAttribute"}},
		{&d.cuLaunchKernel, []string{"cuLaunchKernel"}},
		{&d.cuGetErrorName, []string{"cuGetErrorName"}},
		{&d.cuGetErrorString, []string{"cuGetErrorString"}},
	}
	for _, b := range bind {
		var sym uintptr
		for _, name := range b.names {
			if s, err := purego.Dlsym(lib, name); err == nil && s != 0 {
				sym = s
				break
			}
		}
		if sym == 0 {
			return nil, fmt.Errorf("%w: libcuda.so.1 has no %s (driver too old)", ErrNoDriver, b.names[0])
		}
		purego.RegisterFunc(b.fn, sym)
	}
	if r := d.cuInit(0); r != cuSuccess {
		if r == cuErrorNoDevice {
			return nil, fmt.Errorf("%w: cuInit: %s", ErrNoDevice, d.errText(r))
		}
		return nil, fmt.Errorf("%w: cuInit: %s", ErrNoDriver, d.errText(r))
	}
	return d, nil
}

// errText renders a CUresult as "CUDA_ERROR_X: description (code N)".
func (d *driver) errText(r int32) string {
	var name, desc *byte
	d.cuGetErrorName(r, &name)
	d.cuGetErrorString(r, &desc)
	n, s := cstring(name), cstring(desc)
	if n == "" {
		n = "CUDA error"
	}
	return fmt.Sprintf("%s: %s (code %d)", n, s, r)
}

// check turns a CUresult into an error naming the call.
func (d *driver) check(call string, r int32) error {
	if r == cuSuccess {
		return nil
	}
	return fmt.Errorf("kernels/cuda: %s: %s", call, d.errText(r))
}

// cstring copies a NUL-terminated C string (at most 4 KiB).
func cstring(p *byte) string {
	if p == nil {
		return ""
	}
	var b []byte
	for i := 0; i < 4096; i++ {
		c := *(*byte)(unsafe.Add(unsafe.Pointer(p), i))
		if c == 0 {
			break
		}
		b = append(b, c)
	}
	return string(b)
}

// deviceInfo describes device ordinal.
type deviceInfo struct {
	ordinal      int
	dev          int32
	name         string
	major, minor int
	sms          int
	totalMem     uint64
	driver       int
}

func (i deviceInfo) String() string {
	return fmt.Sprintf("%s (device %d, sm_%d%d, %d SMs, %.1f GiB, driver %d.%d)", i.name, i.ordinal,
		i.major, i.minor, i.sms, float64(i.totalMem)/(1<<30), i.driver/1000, i.driver%1000/10)
}

func (d *driver) info(ordinal int) (deviceInfo, error) {
	var n int32
	if err := d.check("cuDeviceGetCount", d.cuDeviceGetCount(&n)); err != nil {
		return deviceInfo{}, err
	}
	if n == 0 {
		return deviceInfo{}, fmt.Errorf("%w (the driver reports 0 devices)", ErrNoDevice)
	}
	if ordinal < 0 || ordinal >= int(n) {
		return deviceInfo{}, fmt.Errorf("%w: device %d asked for, %d present", ErrNoDevice, ordinal, n)
	}
	inf := deviceInfo{ordinal: ordinal}
	if err := d.check("cuDeviceGet", d.cuDeviceGet(&inf.dev, int32(ordinal))); err != nil {
		return inf, err
	}
	buf := make([]byte, 256)
	if err := d.check("cuDeviceGetName", d.cuDeviceGetName(&buf[0], int32(len(buf)), inf.dev)); err != nil {
		return inf, err
	}
	inf.name = cstring(&buf[0])
	for _, a := range []struct {
		attr int32
		dst  *int
	}{{attrCCMajor, &inf.major}, {attrCCMinor, &inf.minor}, {attrMultiprocessor, &inf.sms}} {
		var v int32
		if err := d.check("cuDeviceGetAttribute", d.cuDeviceGetAttribute(&v, a.attr, inf.dev)); err != nil {
			return inf, err
		}
		*a.dst = int(v)
	}
	if err := d.check("cuDeviceTotalMem", d.cuDeviceTotalMem(&inf.totalMem, inf.dev)); err != nil {
		return inf, err
	}
	var v int32
	d.cuDriverGetVersion(&v)
	inf.driver = int(v)
	return inf, nil
}

// ---------------------------------------------------------------------------
// cudaDevice: the device interface over the driver

type cudaDevice struct {
	d       *driver
	inf     deviceInfo
	ctx     uintptr
	mods    []uintptr
	funcs   map[string]uintptr
	missing map[string]string // kernels this GPU cannot run, and why
	streams []uintptr
}

func openDevice(ordinal int) (device, error) {
	d, err := loadDriver()
	if err != nil {
		return nil, err
	}
	inf, err := d.info(ordinal)
	if err != nil {
		return nil, err
	}
	if inf.major < 8 {
		return nil, fmt.Errorf("kernels/cuda: %s: compute capability %d.%d; the kernels need sm_80 or newer", inf.name, inf.major, inf.minor)
	}
	c := &cudaDevice{d: d, inf: inf, funcs: map[string]uintptr{}, missing: map[string]string{}}
	if err := d.check("cuDevicePrimaryCtxRetain", d.cuDevicePrimaryCtxRetain(&c.ctx, inf.dev)); err != nil {
		return nil, err
	}
	undo := c.bind()
	defer undo()
	for _, m := range ptxModules {
		if m.arch == "sm_90a" && (inf.major != 9 || inf.minor != 0) {
			// "a" targets run on exactly their architecture
			for _, e := range m.entries {
				c.missing[e] = fmt.Sprintf("needs sm_90a (this GPU is sm_%d%d)", inf.major, inf.minor)
			}
			continue
		}
		if err := c.loadModule(m); err != nil {
			if m.arch != "" {
				// an optional module: its kernels are missing, the others run
				for _, e := range m.entries {
					c.missing[e] = err.Error()
				}
				continue
			}
			c.closeLocked()
			return nil, err
		}
	}
	return c, nil
}

// loadModule JIT-compiles one embedded PTX module, keeping the JIT error log
// for the error message.
func (c *cudaDevice) loadModule(m ptxModule) error {
	src, err := ptxSource(m.file)
	if err != nil {
		return err
	}
	image := append([]byte(src), 0)
	errLog := make([]byte, 16<<10)
	infoLog := make([]byte, 16<<10)
	opts := []int32{jitErrorLogBuffer, jitErrorLogSize, jitInfoLogBuffer, jitInfoLogSize}
	vals := []uintptr{uintptr(unsafe.Pointer(&errLog[0])), uintptr(len(errLog)), uintptr(unsafe.Pointer(&infoLog[0])), uintptr(len(infoLog))}
	var mod uintptr
	r := c.d.cuModuleLoadDataEx(&mod, &image[0], uint32(len(opts)), &opts[0], &vals[0])
	if r != cuSuccess {
		return fmt.Errorf("kernels/cuda: loading %s on %s: %s\nJIT log:\n%s", m.file, c.inf.name, c.d.errText(r), cstring(&errLog[0]))
	}
	c.mods = append(c.mods, mod)
	for _, name := range m.entries {
		var f uintptr
		if err := c.d.check("cuModuleGetFunction("+name+")", c.d.cuModuleGetFunction(&f, mod, name)); err != nil {
			return err
		}
		if n := dynamicShared(name); n > 0 {
			// more than 48 KiB needs the opt-in; a GPU without that much
			// shared memory per block just lacks the kernel (has reports it)
			if r := c.d.cuFuncSetAttribute(f, attrMaxDynShared, int32(n)); r != cuSuccess {
				c.missing[name] = fmt.Sprintf("%d bytes of shared memory: %s", n, c.d.errText(r))
				continue
			}
		}
		c.funcs[name] = f
	}
	return nil
}

func (c *cudaDevice) String() string { return c.inf.String() }

func (c *cudaDevice) has(kernel string) bool { _, ok := c.funcs[kernel]; return ok }

func (c *cudaDevice) describe() string {
	return fmt.Sprintf("%s, sm_%d%d", c.inf.name, c.inf.major, c.inf.minor)
}

func (c *cudaDevice) alloc(n int) (dptr, error) {
	var p uint64
	err := c.d.check(fmt.Sprintf("cuMemAlloc(%d bytes)", n), c.d.cuMemAlloc(&p, uintptr(max(n, 256))))
	return dptr(p), err
}

func (c *cudaDevice) free(p dptr) {
	if p != 0 {
		c.d.cuMemFree(uint64(p))
	}
}

func (c *cudaDevice) hostAlloc(n int) ([]byte, error) {
	var p unsafe.Pointer
	if err := c.d.check(fmt.Sprintf("cuMemAllocHost(%d bytes)", n), c.d.cuMemAllocHost(&p, uintptr(max(n, 256)))); err != nil {
		return nil, err
	}
	return unsafe.Slice((*byte)(p), max(n, 256))[:n], nil
}

func (c *cudaDevice) hostFree(b []byte) {
	if cap(b) > 0 {
		c.d.cuMemFreeHost(unsafe.Pointer(unsafe.SliceData(b)))
	}
}

func (c *cudaDevice) h2d(dst dptr, src []byte, s stream) error {
	if len(src) == 0 {
		return nil
	}
	return c.d.check("cuMemcpyHtoDAsync", c.d.cuMemcpyHtoDAsync(uint64(dst), unsafe.Pointer(&src[0]), uintptr(len(src)), uintptr(s)))
}

func (c *cudaDevice) d2h(dst []byte, src dptr, s stream) error {
	if len(dst) == 0 {
		return nil
	}
	return c.d.check("cuMemcpyDtoHAsync", c.d.cuMemcpyDtoHAsync(unsafe.Pointer(&dst[0]), uint64(src), uintptr(len(dst)), uintptr(s)))
}

func (c *cudaDevice) memsetD32(dst dptr, v uint32, n int, s stream) error {
	if n == 0 {
		return nil
	}
	return c.d.check("cuMemsetD32Async", c.d.cuMemsetD32Async(uint64(dst), v, uintptr(n), uintptr(s)))
}

func (c *cudaDevice) launch(name string, grid, block [3]int, s stream, params []uint64) error {
	f, ok := c.funcs[name]
	if !ok {
		if why, ok := c.missing[name]; ok {
			return fmt.Errorf("kernels/cuda: %s cannot run on %s: %s", name, c.inf.name, why)
		}
		return fmt.Errorf("kernels/cuda: no kernel %q in the embedded PTX", name)
	}
	for _, g := range grid {
		if g < 1 || g > 1<<31-1 {
			return fmt.Errorf("kernels/cuda: %s: grid %v out of range", name, grid)
		}
	}
	if grid[1] > 65535 || grid[2] > 65535 {
		return fmt.Errorf("kernels/cuda: %s: grid %v out of range", name, grid)
	}
	// one by-value struct parameter: kernelParams[0] points at its bytes
	kp := []unsafe.Pointer{unsafe.Pointer(&params[0])}
	r := c.d.cuLaunchKernel(f, uint32(grid[0]), uint32(grid[1]), uint32(grid[2]),
		uint32(block[0]), uint32(block[1]), uint32(block[2]), uint32(dynamicShared(name)), uintptr(s), &kp[0], nil)
	return c.d.check("cuLaunchKernel("+name+")", r)
}

func (c *cudaDevice) sync(s stream) error {
	return c.d.check("cuStreamSynchronize", c.d.cuStreamSynchronize(uintptr(s)))
}

func (c *cudaDevice) newStream() (stream, error) {
	var s uintptr
	if err := c.d.check("cuStreamCreate", c.d.cuStreamCreate(&s, streamNonBlocking)); err != nil {
		return 0, err
	}
	c.streams = append(c.streams, s)
	return stream(s), nil
}

func (c *cudaDevice) memInfo() (free, total uint64, err error) {
	err = c.d.check("cuMemGetInfo", c.d.cuMemGetInfo(&free, &total))
	return
}

// bind pins the calling goroutine to its OS thread and makes the device's
// primary context current there (a CUDA context is per thread).
func (c *cudaDevice) bind() func() {
	lockThread()
	c.d.cuCtxSetCurrent(c.ctx)
	return unlockThread
}

func (c *cudaDevice) close() error {
	undo := c.bind()
	defer undo()
	c.closeLocked()
	return nil
}

func (c *cudaDevice) closeLocked() {
	c.d.cuCtxSynchronize()
	for _, s := range c.streams {
		c.d.cuStreamDestroy(s)
	}
	c.streams = nil
	for _, m := range c.mods {
		c.d.cuModuleUnload(m)
	}
	c.mods = nil
	if c.ctx != 0 {
		c.d.cuDevicePrimaryCtxRelease(c.inf.dev)
		c.ctx = 0
	}
}

// deviceCount returns the number of CUDA devices.
func deviceCount() (int, error) {
	d, err := loadDriver()
	if err != nil {
		return 0, err
	}
	var n int32
	if err := d.check("cuDeviceGetCount", d.cuDeviceGetCount(&n)); err != nil {
		return 0, err
	}
	return int(n), nil
}

// probe returns a description of device 0 or why there is none.
func probe() (string, error) {
	d, err := loadDriver()
	if err != nil {
		return "", err
	}
	inf, err := d.info(0)
	if err != nil {
		return "", err
	}
	return inf.String(), nil
}
