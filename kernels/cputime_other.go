//go:build !unix

package kernels

// ProcessCPUSeconds returns 0: no rusage on this OS.
func ProcessCPUSeconds() float64 { return 0 }
