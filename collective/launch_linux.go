package collective

import (
	"os/exec"
	"syscall"
)

// setParentDeathSignal kills a rank if the launcher itself dies.
func setParentDeathSignal(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
