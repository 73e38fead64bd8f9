//go:build !linux && amd64 && !noasm

package kernels

// requestAMX: the AMX filter is only enabled on Linux, where the tile
// state permission is known to be requested correctly.
func requestAMX() bool { return false }
