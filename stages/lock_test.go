package stages

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

func TestWorkdirLock(t *testing.T) {
	dir := t.TempDir()
	unlock, err := lockWorkdir(dir)
	if err != nil {
		t.Fatal(err)
	}
	// a second holder (another open file description, as another process has) is refused, naming the first
	_, err = lockWorkdir(dir)
	if err == nil || !strings.Contains(err.Error(), "is in use by another hpcrun job (pid ") || !strings.Contains(err.Error(), dir) {
		t.Fatalf("second lock: %v", err)
	}
	// flock(1), a separate process, sees it too
	if _, err := exec.LookPath("flock"); err == nil {
		if exec.Command("flock", "-n", dir+"/.hpcrun.lock", "true").Run() == nil {
			t.Fatal("flock(1) got the lock while we hold it")
		}
	}
	unlock()
	unlock2, err := lockWorkdir(dir)
	if err != nil {
		t.Fatalf("after unlock: %v", err)
	}
	unlock2()
	if _, err := os.Stat(dir + "/.hpcrun.lock"); err != nil {
		t.Fatal(err)
	}
}
