//go:build unix && !linux

package dataset

import "golang.org/x/sys/unix"

const madvPopulateRead = unix.MADV_WILLNEED
