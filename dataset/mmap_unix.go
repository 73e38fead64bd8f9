//go:build unix

package dataset

import (
	"os"

	"golang.org/x/sys/unix"
)

// mapFile maps the whole file read-only. Pages come from the page cache
// without a copy; dropPages gives processed ones back so the resident set
// stays bounded by the block size, not the file size.
func mapFile(f *os.File, size int64) ([]byte, error) {
	if size == 0 {
		return nil, nil
	}
	return unix.Mmap(int(f.Fd()), 0, int(size), unix.PROT_READ, unix.MAP_SHARED)
}

func unmapFile(b []byte) error {
	if b == nil {
		return nil
	}
	return unix.Munmap(b)
}

var pageSize = os.Getpagesize()

// dropPages tells the kernel we are done with the whole pages of m[lo:hi].
func dropPages(m []byte, lo, hi int) {
	lo = (lo + pageSize - 1) / pageSize * pageSize
	hi = hi / pageSize * pageSize
	if hi > lo {
		_ = unix.Madvise(m[lo:hi], unix.MADV_DONTNEED)
	}
}

// populate maps m[lo:hi] in one call (MADV_POPULATE_READ, Linux 5.14+)
// instead of one page fault per 64 KiB; elsewhere it asks for readahead.
func populate(m []byte, lo, hi int) {
	lo = lo / pageSize * pageSize
	if hi <= lo {
		return
	}
	if err := unix.Madvise(m[lo:hi], madvPopulateRead); err != nil {
		_ = unix.Madvise(m[lo:hi], unix.MADV_WILLNEED)
	}
}
