//go:build linux && amd64 && !noasm

package kernels

import "syscall"

// requestAMX asks Linux (>= 5.16) for permission to use the AMX tile data
// state (arch_prctl ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA); without it
// the first tile instruction raises SIGILL.
func requestAMX() bool {
	const archReqXcompPerm, xfeatureXtiledata = 0x1023, 18
	_, _, errno := syscall.RawSyscall(syscall.SYS_ARCH_PRCTL, archReqXcompPerm, xfeatureXtiledata, 0)
	return errno == 0
}
