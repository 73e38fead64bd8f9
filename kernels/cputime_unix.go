//go:build unix

package kernels

import "syscall"

// ProcessCPUSeconds returns user+system CPU time of this process (0 where
// unsupported).
func ProcessCPUSeconds() float64 {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e9
}
