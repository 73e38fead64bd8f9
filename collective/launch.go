package collective

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Launch runs the ranks of one job as local processes of the same
// program: `hpcrun run --ranks N` outside Slurm.
//
// It makes a fresh job id and secret, and a private rendezvous directory
// (mode 0700) where rank 0 publishes its embedded server's URL. Each child
// gets its rank, the job id, the secret and the rest through the
// environment (see OptionsFromEnv): the secret is never put in argv, a
// file or a log. The children's stdout lines are passed through as they
// are; stderr lines get a "[rank N] " prefix.
//
// When a rank exits non-zero, the others are expected to fail by
// themselves within Timeout (their collectives name the dead rank); any
// still running Timeout+Grace later are killed. So the job always ends,
// and Run returns an error naming the first rank that failed.
type Launch struct {
	Ranks   int
	Argv    []string      // program and arguments, the same for every rank
	Env     []string      // base environment (e.g. os.Environ()); the variables Launch sets are replaced
	Timeout time.Duration // the job's failure-detection timeout (HPCRUN_TIMEOUT); default 60s
	Grace   time.Duration // extra time before stragglers are killed; default 5s
	// URL and Secret of an external NATS server (runtime.nats_url); if URL
	// is empty, rank 0 embeds a server and Secret is generated.
	URL, Secret    string
	Stdout, Stderr io.Writer // default os.Stdout, os.Stderr
	Logger         *slog.Logger
}

// launchVars are the variables Launch sets; any in Launch.Env are replaced.
var launchVars = []string{EnvRank, EnvSize, EnvLocalRank, EnvJobID, EnvSecret, EnvURL, EnvHost0, EnvRendezvous, EnvTimeout}

// LaunchLocal runs n local ranks of argv with the environment baseEnv plus
// what they need to form a job (see Launch).
func LaunchLocal(ctx context.Context, n int, argv []string, baseEnv []string, timeout time.Duration) error {
	return (&Launch{Ranks: n, Argv: argv, Env: baseEnv, Timeout: timeout}).Run(ctx)
}

// RankExit is how one rank's process ended.
type RankExit struct {
	Rank, PID int
	Err       error  // from exec.Cmd.Wait
	Killed    string // why the launcher killed it, if it did
}

func (e RankExit) String() string {
	if e.Killed != "" {
		return fmt.Sprintf("rank %d (pid %d) killed by the launcher: %s", e.Rank, e.PID, e.Killed)
	}
	return fmt.Sprintf("rank %d (pid %d) exited: %v", e.Rank, e.PID, e.Err)
}

// LaunchError lists the ranks that failed, the likely root cause first: a
// rank that died of a signal, else the first to exit non-zero.
type LaunchError struct{ Failed []RankExit }

func (e *LaunchError) Error() string {
	var b strings.Builder
	b.WriteString(e.Failed[0].String())
	for i, f := range e.Failed[1:] {
		if i == 0 {
			b.WriteString("; then ")
		} else {
			b.WriteString(", ")
		}
		b.WriteString(f.String())
	}
	return b.String()
}

// Run starts the ranks and waits until all have ended.
func (l *Launch) Run(ctx context.Context) error {
	if l.Ranks < 1 || len(l.Argv) == 0 {
		return fmt.Errorf("collective: launch %d ranks of %q", l.Ranks, l.Argv)
	}
	timeout, grace := l.Timeout, l.Grace
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	if grace <= 0 {
		grace = 5 * time.Second
	}
	stdout, stderr := l.Stdout, l.Stderr
	if stdout == nil {
		stdout = os.Stdout
	}
	if stderr == nil {
		stderr = os.Stderr
	}
	log := l.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}

	secret := l.Secret
	if l.URL == "" {
		var err error
		if secret, err = NewSecret(); err != nil {
			return err
		}
	}
	idBytes := make([]byte, 6)
	if _, err := rand.Read(idBytes); err != nil {
		return fmt.Errorf("collective: job id: %w", err)
	}
	jobID := "local-" + hex.EncodeToString(idBytes)
	rdv, err := os.MkdirTemp("", "hpcrun-"+jobID+"-")
	if err != nil {
		return fmt.Errorf("collective: rendezvous directory: %w", err)
	}
	defer os.RemoveAll(rdv)

	var base []string
	for _, kv := range l.Env {
		if !slices.Contains(launchVars, strings.SplitN(kv, "=", 2)[0]) {
			base = append(base, kv)
		}
	}
	var outMu sync.Mutex // whole lines only, across ranks
	type proc struct {
		cmd      *exec.Cmd
		out, err *lineWriter
	}
	procs := make([]proc, l.Ranks)
	for r := range procs {
		env := append(append([]string{}, base...),
			EnvRank+"="+strconv.Itoa(r),
			EnvSize+"="+strconv.Itoa(l.Ranks),
			EnvLocalRank+"="+strconv.Itoa(r),
			EnvJobID+"="+jobID,
			EnvSecret+"="+secret,
			EnvRendezvous+"="+rdv,
			EnvTimeout+"="+timeout.String(),
		)
		if l.URL != "" {
			env = append(env, EnvURL+"="+l.URL)
		}
		cmd := exec.Command(l.Argv[0], l.Argv[1:]...)
		cmd.Env = env
		p := proc{cmd: cmd, out: &lineWriter{mu: &outMu, w: stdout}, err: &lineWriter{mu: &outMu, w: stderr, prefix: fmt.Sprintf("[rank %d] ", r)}}
		cmd.Stdout, cmd.Stderr = p.out, p.err
		setParentDeathSignal(cmd)
		procs[r] = p
	}

	type exit struct {
		rank int
		err  error
	}
	exits := make(chan exit, l.Ranks)
	running := make(map[int]*exec.Cmd)
	for r, p := range procs {
		if err := p.cmd.Start(); err != nil {
			for _, c := range running {
				_ = c.Process.Kill()
				_ = c.Wait()
			}
			return fmt.Errorf("collective: start rank %d: %w", r, err)
		}
		running[r] = p.cmd
		log.Debug("rank started", "rank", r, "pid", p.cmd.Process.Pid, "job", jobID)
		go func() { exits <- exit{r, p.cmd.Wait()} }()
	}

	var failed []RankExit
	killed := make(map[int]string)
	var killTimer <-chan time.Time
	var killWhy string
	done := ctx.Done()
	for len(running) > 0 {
		select {
		case e := <-exits:
			pid := running[e.rank].Process.Pid
			delete(running, e.rank)
			procs[e.rank].out.flush()
			procs[e.rank].err.flush()
			if e.err == nil && killed[e.rank] == "" {
				continue
			}
			failed = append(failed, RankExit{Rank: e.rank, PID: pid, Err: e.err, Killed: killed[e.rank]})
			log.Debug("rank failed", "rank", e.rank, "pid", pid, "err", e.err)
			if killTimer == nil {
				killTimer = time.After(timeout + grace)
				killWhy = fmt.Sprintf("still running %v after rank %d failed", timeout+grace, e.rank)
			}
		case <-killTimer:
			for r, c := range running {
				killed[r] = killWhy
				_ = c.Process.Kill()
			}
		case <-done:
			done = nil
			for _, c := range running {
				_ = c.Process.Signal(syscall.SIGTERM)
			}
			killTimer = time.After(grace)
			killWhy = fmt.Sprintf("still running %v after it was told to stop (%v)", grace, ctx.Err())
		}
	}
	if len(failed) > 0 {
		// Root cause first: ranks that died of a signal (crashed, killed
		// from outside), then ranks that reported an error (usually about
		// the dead one), then the stragglers the launcher killed.
		slices.SortStableFunc(failed, func(a, b RankExit) int { return exitClass(a) - exitClass(b) })
		return &LaunchError{Failed: failed}
	}
	return ctx.Err()
}

func exitClass(e RankExit) int {
	var ee *exec.ExitError
	switch {
	case e.Killed != "":
		return 2
	case errors.As(e.Err, &ee) && ee.ExitCode() == -1: // signal
		return 0
	default:
		return 1
	}
}

// lineWriter passes whole lines to w under a mutex shared by all ranks,
// with a prefix.
type lineWriter struct {
	mu     *sync.Mutex
	w      io.Writer
	prefix string
	buf    []byte
}

func (lw *lineWriter) Write(p []byte) (int, error) {
	lw.buf = append(lw.buf, p...)
	for {
		i := bytes.IndexByte(lw.buf, '\n')
		if i < 0 {
			break
		}
		lw.emit(lw.buf[:i+1])
		lw.buf = lw.buf[i+1:]
	}
	return len(p), nil
}

func (lw *lineWriter) emit(line []byte) {
	lw.mu.Lock()
	defer lw.mu.Unlock()
	if lw.prefix != "" {
		_, _ = io.WriteString(lw.w, lw.prefix)
	}
	_, _ = lw.w.Write(line)
}

// flush writes a last unterminated line, once the process has exited.
func (lw *lineWriter) flush() {
	if len(lw.buf) > 0 {
		lw.emit(append(lw.buf, '\n'))
		lw.buf = nil
	}
}
