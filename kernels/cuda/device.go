package cuda

import (
	"errors"
	"runtime"
)

// ErrNoDriver is returned (wrapped) by Available and New when the CUDA
// driver library cannot be loaded or initialised.
var ErrNoDriver = errors.New("kernels/cuda: no CUDA driver")

// ErrNoDevice is returned (wrapped) by Available and New when the driver
// loads but reports no (or not the asked-for) CUDA device.
var ErrNoDevice = errors.New("kernels/cuda: no CUDA device")

// dptr is a device address (CUdeviceptr); stream a CUstream.
type dptr uint64
type stream uintptr

// device is what the host side of the ops needs from a GPU: memory, copies,
// launches by kernel name with one by-value struct parameter (a []uint64 of
// its 8-byte fields), two streams. cudaDevice (driver.go) is the real one;
// emuDevice (emu.go) runs every kernel's contract in plain Go so the host
// side is tested without a GPU.
type device interface {
	describe() string
	alloc(bytes int) (dptr, error)
	free(p dptr)
	hostAlloc(bytes int) ([]byte, error) // page-locked, for async copies
	hostFree(b []byte)
	h2d(dst dptr, src []byte, s stream) error // async on s
	d2h(dst []byte, src dptr, s stream) error // async on s
	memsetD32(dst dptr, v uint32, n int, s stream) error
	launch(kernel string, grid, block [3]int, s stream, params []uint64) error
	has(kernel string) bool // the kernel is loaded and this GPU can run it
	sync(s stream) error
	newStream() (stream, error)
	memInfo() (free, total uint64, err error)
	bind() func() // make the context current on this goroutine's thread; returns the undo
	close() error
}

func lockThread()   { runtime.LockOSThread() }
func unlockThread() { runtime.UnlockOSThread() }
