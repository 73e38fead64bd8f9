package slurm

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
)

// Env is what a task learns from the environment srun gives it. Use
// LoadEnv(os.Getenv) in a program and a map lookup in tests.
type Env struct {
	// InSlurm is true when SLURM_PROCID is set: this process is one task
	// (rank) of a Slurm job step. When false, every other field is zero
	// except NTasks = 1, NNodes = 1 and StepID = -1; CUDAVisibleDevices is
	// read either way.
	InSlurm bool
	// InStep is true when SLURM_STEP_ID is set too: the task was started
	// by srun. Slurm also sets SLURM_PROCID=0 in the batch script itself,
	// where SLURM_NTASKS is the job's task count but no other rank runs;
	// a program that expects its peers should check InStep.
	InStep bool

	ProcID  int    // SLURM_PROCID: global rank, 0 <= ProcID < NTasks
	NTasks  int    // SLURM_NTASKS (or SLURM_NPROCS): ranks in the step; 1 when unset
	LocalID int    // SLURM_LOCALID: rank among the tasks on this node
	NodeID  int    // SLURM_NODEID: index of this node in Nodes
	JobID   string // SLURM_JOB_ID (or SLURM_JOBID), digits
	StepID  int    // SLURM_STEP_ID (or SLURM_STEPID); -1 when unset

	// NodeList is the compressed hostlist of the step's nodes:
	// SLURM_STEP_NODELIST, else SLURM_JOB_NODELIST, else SLURM_NODELIST.
	NodeList string
	Nodes    []string // NodeList expanded
	// NNodes is SLURM_NNODES (srun sets it to the step's node count), else
	// SLURM_STEP_NUM_NODES or SLURM_JOB_NUM_NODES, else len(Nodes).
	NNodes int

	// TasksPerNode is SLURM_STEP_TASKS_PER_NODE, else SLURM_TASKS_PER_NODE
	// ("4(x2),3"), expanded to one count per node: [4 4 3]. Nil when unset.
	TasksPerNode []int

	CPUsPerTask int // SLURM_CPUS_PER_TASK; 0 when unset
	GPUsOnNode  int // SLURM_GPUS_ON_NODE; 0 when unset

	// CUDAVisibleDevices is CUDA_VISIBLE_DEVICES as given: device indices
	// or UUIDs separated by commas; see BindGPU.
	CUDAVisibleDevices string
}

// EnvError is a malformed Slurm environment variable.
type EnvError struct {
	Var   string // e.g. "SLURM_PROCID"
	Value string
	Msg   string
}

func (e *EnvError) Error() string {
	return fmt.Sprintf("slurm: bad %s=%q: %s", e.Var, e.Value, e.Msg)
}

// InSlurm reports whether this process runs as a task of a Slurm job step
// (SLURM_PROCID is set in its environment).
func InSlurm() bool { return os.Getenv("SLURM_PROCID") != "" }

// LoadEnv reads the Slurm environment through getenv (os.Getenv in a
// program; a map lookup in tests). Outside Slurm (SLURM_PROCID unset) it
// returns a one-task Env and no error. A malformed or inconsistent value
// is an *EnvError naming the variable.
func LoadEnv(getenv func(string) string) (*Env, error) {
	e := &Env{NTasks: 1, NNodes: 1, StepID: -1}
	e.CUDAVisibleDevices = strings.TrimSpace(getenv("CUDA_VISIBLE_DEVICES"))
	if strings.TrimSpace(getenv("SLURM_PROCID")) == "" {
		return e, nil
	}
	e.InSlurm = true
	var err error

	// first returns the first of the named variables that is set.
	first := func(names ...string) (name, value string) {
		for _, n := range names {
			if v := strings.TrimSpace(getenv(n)); v != "" {
				return n, v
			}
		}
		return names[0], ""
	}
	// num parses a non-negative integer; def when all names are unset.
	num := func(def int, names ...string) (int, error) {
		name, v := first(names...)
		if v == "" {
			return def, nil
		}
		n, err := parseCount(v)
		if err != nil {
			return 0, &EnvError{Var: name, Value: v, Msg: err.Error()}
		}
		return n, nil
	}

	if e.ProcID, err = num(0, "SLURM_PROCID"); err != nil {
		return nil, err
	}
	if e.NTasks, err = num(1, "SLURM_NTASKS", "SLURM_NPROCS"); err != nil {
		return nil, err
	}
	if e.NTasks == 0 {
		name, v := first("SLURM_NTASKS", "SLURM_NPROCS")
		return nil, &EnvError{Var: name, Value: v, Msg: "must be at least 1"}
	}
	if e.ProcID >= e.NTasks {
		return nil, &EnvError{Var: "SLURM_PROCID", Value: strconv.Itoa(e.ProcID),
			Msg: fmt.Sprintf("not below SLURM_NTASKS=%d", e.NTasks)}
	}
	if e.LocalID, err = num(0, "SLURM_LOCALID"); err != nil {
		return nil, err
	}
	if e.NodeID, err = num(0, "SLURM_NODEID"); err != nil {
		return nil, err
	}
	if name, v := first("SLURM_JOB_ID", "SLURM_JOBID"); v != "" {
		if _, err := parseCount(v); err != nil {
			return nil, &EnvError{Var: name, Value: v, Msg: err.Error()}
		}
		e.JobID = v
	}
	if e.StepID, err = num(-1, "SLURM_STEP_ID", "SLURM_STEPID"); err != nil {
		return nil, err
	}
	e.InStep = e.StepID >= 0
	if e.CPUsPerTask, err = num(0, "SLURM_CPUS_PER_TASK"); err != nil {
		return nil, err
	}
	if e.GPUsOnNode, err = num(0, "SLURM_GPUS_ON_NODE"); err != nil {
		return nil, err
	}

	if name, v := first("SLURM_STEP_NODELIST", "SLURM_JOB_NODELIST", "SLURM_NODELIST"); v != "" {
		if e.Nodes, err = ExpandHostlist(v); err != nil {
			var he *HostlistError
			msg := err.Error()
			if errors.As(err, &he) {
				msg = fmt.Sprintf("at byte %d: %s", he.Offset, he.Msg)
			}
			return nil, &EnvError{Var: name, Value: v, Msg: msg}
		}
		e.NodeList = v
	}
	if e.NNodes, err = num(len(e.Nodes), "SLURM_NNODES", "SLURM_STEP_NUM_NODES", "SLURM_JOB_NUM_NODES"); err != nil {
		return nil, err
	}
	if e.NNodes == 0 {
		e.NNodes = 1
	}
	if e.NodeID >= e.NNodes {
		return nil, &EnvError{Var: "SLURM_NODEID", Value: strconv.Itoa(e.NodeID),
			Msg: fmt.Sprintf("not below the node count %d", e.NNodes)}
	}
	if name, v := first("SLURM_STEP_TASKS_PER_NODE", "SLURM_TASKS_PER_NODE"); v != "" {
		if e.TasksPerNode, err = ParseTasksPerNode(v); err != nil {
			return nil, &EnvError{Var: name, Value: v, Msg: err.Error()}
		}
	}
	if e.LocalID >= e.NTasks {
		return nil, &EnvError{Var: "SLURM_LOCALID", Value: strconv.Itoa(e.LocalID),
			Msg: fmt.Sprintf("not below SLURM_NTASKS=%d", e.NTasks)}
	}
	return e, nil
}

// parseCount parses a non-negative decimal integer that fits an int32.
func parseCount(v string) (int, error) {
	for i := 0; i < len(v); i++ {
		if v[i] < '0' || v[i] > '9' {
			return 0, errors.New("not a non-negative integer")
		}
	}
	n, err := strconv.ParseInt(v, 10, 32)
	if err != nil {
		return 0, errors.New("number out of range")
	}
	return int(n), nil
}

// maxTasksPerNodeEntries caps how many nodes a SLURM_TASKS_PER_NODE value
// may describe, like MaxHostlistHosts for hostlists.
const maxTasksPerNodeEntries = MaxHostlistHosts

// ParseTasksPerNode expands Slurm's tasks-per-node notation, a comma list
// of counts where "N(xR)" means R nodes with N tasks each: "4(x2),3" gives
// [4 4 3]. Counts may be 0; repeats must be at least 1; more than
// MaxHostlistHosts nodes is an error.
func ParseTasksPerNode(s string) ([]int, error) {
	if strings.TrimSpace(s) == "" {
		return nil, errors.New("empty tasks-per-node list")
	}
	var out []int
	for _, item := range strings.Split(s, ",") {
		item = strings.TrimSpace(item)
		countS, rep := item, 1
		if open := strings.IndexByte(item, '('); open >= 0 {
			if !strings.HasSuffix(item, ")") || !strings.HasPrefix(item[open+1:], "x") {
				return nil, fmt.Errorf("item %q: want N or N(xR)", item)
			}
			countS = item[:open]
			r, err := parseCount(item[open+2 : len(item)-1])
			if err != nil || r < 1 {
				return nil, fmt.Errorf("item %q: repeat must be a positive integer", item)
			}
			rep = r
		}
		if countS == "" {
			return nil, fmt.Errorf("item %q: missing task count", item)
		}
		n, err := parseCount(countS)
		if err != nil {
			return nil, fmt.Errorf("item %q: task count %v", item, err)
		}
		if len(out)+rep > maxTasksPerNodeEntries {
			return nil, fmt.Errorf("describes more than %d nodes", maxTasksPerNodeEntries)
		}
		for range rep {
			out = append(out, n)
		}
	}
	return out, nil
}

// Rank is the global rank (SLURM_PROCID; 0 outside Slurm).
func (e *Env) Rank() int { return e.ProcID }

// Size is the number of ranks (SLURM_NTASKS; 1 outside Slurm).
func (e *Env) Size() int { return e.NTasks }

// FirstHost is the first node of the step, where rank 0 runs under the
// default block distribution; "" when the node list is unknown.
func (e *Env) FirstHost() string {
	if len(e.Nodes) == 0 {
		return ""
	}
	return e.Nodes[0]
}

// TasksOnNode is the number of tasks on this node: TasksPerNode[NodeID]
// when known, else NTasks spread evenly over NNodes (rounded up).
func (e *Env) TasksOnNode() int {
	if e.NodeID < len(e.TasksPerNode) && e.TasksPerNode[e.NodeID] > 0 {
		return e.TasksPerNode[e.NodeID]
	}
	nn := max(e.NNodes, 1)
	return max((e.NTasks+nn-1)/nn, 1)
}

// Threads is how many compute threads this task should use:
// SLURM_CPUS_PER_TASK when set, else runtime.NumCPU() shared by the tasks
// on this node (at least 1). See ThreadsFor.
func (e *Env) Threads() int {
	return ThreadsFor(e.CPUsPerTask, e.TasksOnNode(), runtime.NumCPU())
}

// ThreadsFor returns cpusPerTask when it is positive, else numCPU divided
// by tasksOnNode (rounded down, at least 1).
func ThreadsFor(cpusPerTask, tasksOnNode, numCPU int) int {
	if cpusPerTask > 0 {
		return cpusPerTask
	}
	return max(numCPU/max(tasksOnNode, 1), 1)
}

// GPU returns the GPU this task should use; see BindGPU for the rule.
func (e *Env) GPU() GPUBinding {
	return BindGPU(e.LocalID, e.GPUsOnNode, e.CUDAVisibleDevices)
}
