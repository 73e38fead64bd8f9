//go:build noasm || !amd64

package kernels
