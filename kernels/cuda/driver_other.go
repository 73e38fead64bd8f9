//go:build !(linux && (amd64 || arm64))

package cuda

import (
	"fmt"
	"runtime"
)

func openDevice(ordinal int) (device, error) {
	_, err := probe()
	return nil, err
}

func probe() (string, error) {
	return "", fmt.Errorf("%w: the CUDA backend is built for linux/amd64 and linux/arm64 only (this is %s/%s)", ErrNoDriver, runtime.GOOS, runtime.GOARCH)
}

func deviceCount() (int, error) {
	_, err := probe()
	return 0, err
}
