package stages

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// lockWorkdir takes an exclusive lock on workdir/.hpcrun.lock for the
// life of the job (rank 0 holds it), so a second job pointed at the same
// workdir refuses to start and names the first. The lock is flock(2): the
// kernel drops it when the holder dies, so a crash never leaves a stale
// lock. (On network filesystems that do not share flock across hosts,
// two jobs whose rank 0 run on different hosts are not caught.)
func lockWorkdir(workdir string) (unlock func(), err error) {
	path := filepath.Join(workdir, ".hpcrun.lock")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("workdir lock %s: %w", path, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		holder, _ := os.ReadFile(path)
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			who := strings.TrimSpace(string(holder))
			if who == "" {
				who = "another process"
			}
			return nil, fmt.Errorf("workdir %s is in use by another hpcrun job (%s); wait for it to end or set a different job.workdir", workdir, who)
		}
		return nil, fmt.Errorf("workdir lock %s: %w", path, err)
	}
	host, _ := os.Hostname()
	f.Truncate(0)
	fmt.Fprintf(f, "pid %d on host %s, started %s\n", os.Getpid(), host, time.Now().UTC().Format(time.RFC3339))
	f.Sync()
	return func() {
		f.Truncate(0)
		syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
	}, nil
}
