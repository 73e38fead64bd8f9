package slurm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// Client runs Slurm's commands. The zero value is ready to use and runs
// sbatch, scontrol and sacct from PATH; DefaultClient is one.
type Client struct {
	// Sbatch, Scontrol and Sacct are the commands to run; "" means the
	// plain name, looked up in PATH.
	Sbatch, Scontrol, Sacct string
	// CommandTimeout bounds every single command; default 60 s.
	CommandTimeout time.Duration
	// PollInterval is the longest pause between two polls of Wait; the
	// first polls come sooner (250 ms, then doubling). Default 1 s. Keep it
	// well below the cluster's MinJobAge, after which a finished job
	// disappears from slurmctld.
	PollInterval time.Duration
	// GiveUpAfter is how long Wait keeps retrying while scontrol fails for
	// another reason than an unknown job (slurmctld restarting, a network
	// hiccup); default 2 min.
	GiveUpAfter time.Duration
}

// DefaultClient is used by the package-level Submit and Wait.
var DefaultClient = &Client{}

// Submit submits script with DefaultClient; see Client.Submit.
func Submit(ctx context.Context, script, dir string) (string, error) {
	return DefaultClient.Submit(ctx, script, dir)
}

// Wait waits for a job with DefaultClient; see Client.Wait.
func Wait(ctx context.Context, jobID string) (int, string, error) {
	return DefaultClient.Wait(ctx, jobID)
}

func (c *Client) cmd(name, def string) string {
	if name != "" {
		return name
	}
	return def
}

func (c *Client) timeout() time.Duration {
	if c.CommandTimeout > 0 {
		return c.CommandTimeout
	}
	return 60 * time.Second
}

// CommandError is a Slurm command that failed.
type CommandError struct {
	Args   []string // the command line
	Err    error    // from exec: exit status, not found, context deadline
	Stderr string   // trimmed
}

func (e *CommandError) Error() string {
	msg := fmt.Sprintf("slurm: %s: %v", strings.Join(e.Args, " "), e.Err)
	if e.Stderr != "" {
		msg += ": " + e.Stderr
	}
	return msg
}

func (e *CommandError) Unwrap() error { return e.Err }

// run runs one command under the per-command timeout.
func (c *Client) run(ctx context.Context, dir, stdin string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout())
	defer cancel()
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	cmd.Dir = dir
	cmd.Stdin = strings.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.WaitDelay = 5 * time.Second // do not hang on children that keep the pipes open
	err := cmd.Run()
	if err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("%w (after %v)", ctx.Err(), c.timeout())
		}
		return stdout.String(), &CommandError{Args: args, Err: err, Stderr: strings.TrimSpace(stderr.String())}
	}
	return stdout.String(), nil
}

// Submit hands script to `sbatch --parsable` on its standard input, run in
// dir ("" = the current directory; it is the job's working directory
// unless the script sets --chdir), and returns the job id.
func (c *Client) Submit(ctx context.Context, script, dir string) (string, error) {
	out, err := c.run(ctx, dir, script, c.cmd(c.Sbatch, "sbatch"), "--parsable")
	if err != nil {
		return "", err
	}
	// --parsable prints "<jobid>" or "<jobid>;<cluster>".
	line := strings.TrimSpace(out)
	if i := strings.LastIndexByte(line, '\n'); i >= 0 {
		line = strings.TrimSpace(line[i+1:])
	}
	id, _, _ := strings.Cut(line, ";")
	if _, err := parseCount(id); err != nil || id == "" {
		return "", fmt.Errorf("slurm: sbatch --parsable printed %q, not a job id", strings.TrimSpace(out))
	}
	return id, nil
}

// terminalStates are the job states after which a job never runs again
// (unless requeued by hand).
var terminalStates = map[string]bool{
	"COMPLETED": true, "FAILED": true, "CANCELLED": true, "TIMEOUT": true,
	"NODE_FAIL": true, "PREEMPTED": true, "BOOT_FAIL": true, "DEADLINE": true,
	"OUT_OF_MEMORY": true, "SPECIAL_EXIT": true, "REVOKED": true,
}

// IsTerminal reports whether a job state (as scontrol or sacct print it,
// e.g. "CANCELLED by 0") means the job has finished.
func IsTerminal(state string) bool { return terminalStates[baseState(state)] }

func baseState(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexAny(s, " +"); i >= 0 {
		s = s[:i]
	}
	return strings.ToUpper(s)
}

// ErrJobUnknown means slurmctld no longer knows a job (it finished more
// than MinJobAge ago, or the id is wrong) and sacct could not say how it
// ended either.
var ErrJobUnknown = errors.New("job unknown to slurmctld and sacct")

// Wait polls `scontrol show job -o ID` until the job reaches a terminal
// state and returns its exit status and state (COMPLETED, FAILED,
// CANCELLED, TIMEOUT, NODE_FAIL, OUT_OF_MEMORY, ...).
//
// The exit status is the batch script's: its exit code, or 128+signal
// when a signal ended it (as a shell reports it). It is 0 only for
// COMPLETED; a job in another terminal state that Slurm reports with exit
// code 0 (cancelled before it started, say) gets 1, so the status can be
// handed straight to os.Exit. err is nil whenever the job's end was seen,
// failed or not.
//
// Why polling and not `sbatch --wait`: Submit can print the job id at once,
// the caller's context can stop the wait without touching the job, every
// command runs under a timeout, and the poll interval stays short (sbatch
// --wait backs off to 32 s on clusters with a large MinJobAge).
// slurmctld forgets a finished job MinJobAge after its end (300 s by
// default, 5 s on the local test cluster). If the job is gone before Wait
// saw its end, Wait asks sacct (which needs slurmdbd) and otherwise
// returns an error wrapping ErrJobUnknown. Requeues after a terminal state
// was seen are not followed.
func (c *Client) Wait(ctx context.Context, jobID string) (int, string, error) {
	if _, err := parseCount(jobID); err != nil || jobID == "" {
		return 0, "", fmt.Errorf("slurm: bad job id %q", jobID)
	}
	maxPoll := c.PollInterval
	if maxPoll <= 0 {
		maxPoll = time.Second
	}
	giveUp := c.GiveUpAfter
	if giveUp <= 0 {
		giveUp = 2 * time.Minute
	}
	pause := min(250*time.Millisecond, maxPoll)
	var failingSince time.Time
	for {
		st, err := c.showJob(ctx, jobID)
		switch {
		case err == nil:
			failingSince = time.Time{}
			if IsTerminal(st.state) {
				return st.status(), baseState(st.state), nil
			}
		case errors.Is(err, errUnparsable):
			return 0, "", err
		case errors.Is(err, errInvalidJob):
			code, state, aerr := c.sacctJob(ctx, jobID)
			if aerr != nil {
				return 0, "", fmt.Errorf("slurm: job %s: %w (scontrol: %v; sacct: %v)", jobID, ErrJobUnknown, err, aerr)
			}
			return code, state, nil
		default:
			if ctx.Err() != nil {
				return 0, "", fmt.Errorf("slurm: waiting for job %s: %w", jobID, ctx.Err())
			}
			if failingSince.IsZero() {
				failingSince = time.Now()
			} else if time.Since(failingSince) > giveUp {
				return 0, "", fmt.Errorf("slurm: waiting for job %s: scontrol failing for %v: %w", jobID, giveUp, err)
			}
		}
		t := time.NewTimer(pause)
		select {
		case <-ctx.Done():
			t.Stop()
			return 0, "", fmt.Errorf("slurm: waiting for job %s: %w", jobID, ctx.Err())
		case <-t.C:
		}
		pause = min(2*pause, maxPoll)
	}
}

var (
	errInvalidJob = errors.New("invalid job id")
	errUnparsable = errors.New("unexpected scontrol output")
)

type jobStatus struct {
	state        string
	exit, signal int
}

// status turns Slurm's exit code and signal into a process exit status.
func (s jobStatus) status() int {
	code := s.exit
	if s.signal != 0 {
		code = 128 + s.signal
	}
	if code == 0 && baseState(s.state) != "COMPLETED" {
		code = 1
	}
	return code
}

// showJob runs `scontrol show job -o ID` and returns the job's state and
// exit code. errInvalidJob (wrapped) means slurmctld does not know the job.
func (c *Client) showJob(ctx context.Context, jobID string) (jobStatus, error) {
	out, err := c.run(ctx, "", "", c.cmd(c.Scontrol, "scontrol"), "show", "job", "-o", jobID)
	if err != nil {
		var ce *CommandError
		if errors.As(err, &ce) && strings.Contains(ce.Stderr, "Invalid job id") {
			return jobStatus{}, fmt.Errorf("%w: %v", errInvalidJob, err)
		}
		return jobStatus{}, err
	}
	st, err := parseShowJob(out, jobID)
	if err != nil {
		return st, fmt.Errorf("%w: %v", errUnparsable, err)
	}
	return st, nil
}

// parseShowJob reads JobState and ExitCode from one-line-per-job scontrol
// output, choosing the line of jobID (array and heterogeneous jobs print
// several).
func parseShowJob(out, jobID string) (jobStatus, error) {
	var line string
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "JobId="+jobID+" ") {
			line = l
			break
		}
		if line == "" && strings.HasPrefix(l, "JobId=") {
			line = l
		}
	}
	if line == "" {
		return jobStatus{}, fmt.Errorf("slurm: scontrol show job %s printed no job: %q", jobID, strings.TrimSpace(out))
	}
	var st jobStatus
	var haveState, haveExit bool
	for _, f := range strings.Fields(line) {
		k, v, ok := strings.Cut(f, "=")
		if !ok {
			continue
		}
		switch k {
		case "JobState":
			st.state, haveState = v, true
		case "ExitCode":
			e, s, err := parseExitCode(v)
			if err != nil {
				return jobStatus{}, fmt.Errorf("slurm: job %s: %v", jobID, err)
			}
			st.exit, st.signal, haveExit = e, s, true
		}
	}
	if !haveState || !haveExit {
		return jobStatus{}, fmt.Errorf("slurm: scontrol show job %s: no JobState or ExitCode in %q", jobID, line)
	}
	return st, nil
}

// parseExitCode reads Slurm's "exit:signal" pair.
func parseExitCode(v string) (exit, signal int, err error) {
	es, ss, ok := strings.Cut(strings.TrimSpace(v), ":")
	if !ok {
		return 0, 0, fmt.Errorf("exit code %q is not EXIT:SIGNAL", v)
	}
	if exit, err = strconv.Atoi(es); err != nil || exit < 0 || exit > 255 {
		return 0, 0, fmt.Errorf("exit code %q is not EXIT:SIGNAL", v)
	}
	if signal, err = strconv.Atoi(ss); err != nil || signal < 0 || signal > 127 {
		return 0, 0, fmt.Errorf("exit code %q is not EXIT:SIGNAL", v)
	}
	return exit, signal, nil
}

// sacctJob asks the accounting database how a job ended.
func (c *Client) sacctJob(ctx context.Context, jobID string) (int, string, error) {
	out, err := c.run(ctx, "", "", c.cmd(c.Sacct, "sacct"), "-n", "-P", "-X", "-j", jobID, "-o", "JobID,State,ExitCode")
	if err != nil {
		return 0, "", err
	}
	for _, l := range strings.Split(out, "\n") {
		f := strings.Split(strings.TrimSpace(l), "|")
		if len(f) != 3 || f[0] != jobID {
			continue
		}
		e, s, err := parseExitCode(f[2])
		if err != nil {
			return 0, "", err
		}
		st := jobStatus{state: baseState(f[1]), exit: e, signal: s}
		if !IsTerminal(st.state) {
			return 0, "", fmt.Errorf("sacct says job %s is %s, not finished", jobID, f[1])
		}
		return st.status(), st.state, nil
	}
	return 0, "", fmt.Errorf("sacct knows no job %s", jobID)
}
