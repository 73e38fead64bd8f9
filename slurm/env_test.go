package slurm

import (
	"errors"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

func getenvFrom(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

// stepEnv is what srun gave task 5 of an 8-task step on 2 nodes, 4 each
// (trimmed).
func stepEnv() map[string]string {
	return map[string]string{
		"SLURM_PROCID":              "5",
		"SLURM_NTASKS":              "8",
		"SLURM_NPROCS":              "8",
		"SLURM_LOCALID":             "1",
		"SLURM_NODEID":              "1",
		"SLURM_JOB_ID":              "4242",
		"SLURM_JOBID":               "4242",
		"SLURM_STEP_ID":             "0",
		"SLURM_STEP_NODELIST":       "gpu[07-08]",
		"SLURM_JOB_NODELIST":        "gpu[07-09]",
		"SLURM_NNODES":              "2",
		"SLURM_JOB_NUM_NODES":       "3",
		"SLURM_STEP_TASKS_PER_NODE": "4(x2)",
		"SLURM_TASKS_PER_NODE":      "4(x3)",
		"SLURM_CPUS_PER_TASK":       "16",
		"SLURM_GPUS_ON_NODE":        "4",
		"CUDA_VISIBLE_DEVICES":      "0,1,2,3",
	}
}

func TestLoadEnvStep(t *testing.T) {
	e, err := LoadEnv(getenvFrom(stepEnv()))
	if err != nil {
		t.Fatal(err)
	}
	want := &Env{
		InSlurm: true, InStep: true,
		ProcID: 5, NTasks: 8, LocalID: 1, NodeID: 1, JobID: "4242", StepID: 0,
		NodeList: "gpu[07-08]", Nodes: []string{"gpu07", "gpu08"}, NNodes: 2,
		TasksPerNode: []int{4, 4}, CPUsPerTask: 16, GPUsOnNode: 4,
		CUDAVisibleDevices: "0,1,2,3",
	}
	if !reflect.DeepEqual(e, want) {
		t.Fatalf("LoadEnv:\n got %+v\nwant %+v", e, want)
	}
	if e.Rank() != 5 || e.Size() != 8 || e.FirstHost() != "gpu07" || e.TasksOnNode() != 4 || e.Threads() != 16 {
		t.Errorf("Rank %d Size %d FirstHost %q TasksOnNode %d Threads %d",
			e.Rank(), e.Size(), e.FirstHost(), e.TasksOnNode(), e.Threads())
	}
	if g := e.GPU(); g != (GPUBinding{Ordinal: 1, Device: "1", Visible: 4}) {
		t.Errorf("GPU() = %+v", g)
	}
}

func TestLoadEnvFallbacks(t *testing.T) {
	// The batch script's environment (no srun step) and older variable names.
	e, err := LoadEnv(getenvFrom(map[string]string{
		"SLURM_PROCID":         "0",
		"SLURM_JOBID":          "7",
		"SLURM_NODELIST":       "vm",
		"SLURM_TASKS_PER_NODE": "1",
	}))
	if err != nil {
		t.Fatal(err)
	}
	want := &Env{InSlurm: true, NTasks: 1, JobID: "7", StepID: -1, NodeList: "vm",
		Nodes: []string{"vm"}, NNodes: 1, TasksPerNode: []int{1}}
	if !reflect.DeepEqual(e, want) {
		t.Fatalf("LoadEnv:\n got %+v\nwant %+v", e, want)
	}
}

func TestLoadEnvOutsideSlurm(t *testing.T) {
	e, err := LoadEnv(getenvFrom(map[string]string{"SLURM_NTASKS": "garbage", "CUDA_VISIBLE_DEVICES": "GPU-abc"}))
	if err != nil {
		t.Fatal(err)
	}
	want := &Env{NTasks: 1, NNodes: 1, StepID: -1, CUDAVisibleDevices: "GPU-abc"}
	if !reflect.DeepEqual(e, want) {
		t.Fatalf("LoadEnv:\n got %+v\nwant %+v", e, want)
	}
	if e.GPU().Ordinal != 0 || e.TasksOnNode() != 1 || e.FirstHost() != "" {
		t.Errorf("GPU %+v TasksOnNode %d FirstHost %q", e.GPU(), e.TasksOnNode(), e.FirstHost())
	}
}

func TestLoadEnvErrors(t *testing.T) {
	for _, tc := range []struct {
		key, value string // set on top of stepEnv; value "-" deletes key
		wantVar    string
	}{
		{"SLURM_PROCID", "x", "SLURM_PROCID"},
		{"SLURM_PROCID", "-1", "SLURM_PROCID"},
		{"SLURM_PROCID", "8", "SLURM_PROCID"},
		{"SLURM_PROCID", "99999999999", "SLURM_PROCID"},
		{"SLURM_NTASKS", "0", "SLURM_NTASKS"},
		{"SLURM_NTASKS", "8.0", "SLURM_NTASKS"},
		{"SLURM_LOCALID", "one", "SLURM_LOCALID"},
		{"SLURM_LOCALID", "8", "SLURM_LOCALID"},
		{"SLURM_NODEID", "2", "SLURM_NODEID"},
		{"SLURM_JOB_ID", "12a", "SLURM_JOB_ID"},
		{"SLURM_STEP_ID", "batch", "SLURM_STEP_ID"},
		{"SLURM_CPUS_PER_TASK", "-4", "SLURM_CPUS_PER_TASK"},
		{"SLURM_GPUS_ON_NODE", "4 gpus", "SLURM_GPUS_ON_NODE"},
		{"SLURM_NNODES", "two", "SLURM_NNODES"},
		{"SLURM_STEP_NODELIST", "gpu[07-08", "SLURM_STEP_NODELIST"},
		{"SLURM_STEP_TASKS_PER_NODE", "4(x2", "SLURM_STEP_TASKS_PER_NODE"},
		{"SLURM_STEP_TASKS_PER_NODE", "-", ""}, // falls back to SLURM_TASKS_PER_NODE: fine
	} {
		m := stepEnv()
		if tc.value == "-" {
			delete(m, tc.key)
		} else {
			m[tc.key] = tc.value
		}
		_, err := LoadEnv(getenvFrom(m))
		if tc.wantVar == "" {
			if err != nil {
				t.Errorf("%s=%q: %v", tc.key, tc.value, err)
			}
			continue
		}
		var ee *EnvError
		if !errors.As(err, &ee) {
			t.Errorf("%s=%q: got %v, want an *EnvError", tc.key, tc.value, err)
			continue
		}
		if ee.Var != tc.wantVar || !strings.Contains(err.Error(), tc.wantVar) {
			t.Errorf("%s=%q: error %q names %s, want %s", tc.key, tc.value, err, ee.Var, tc.wantVar)
		}
	}
}

func TestParseTasksPerNode(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []int
	}{
		{"4", []int{4}},
		{"4(x2),3", []int{4, 4, 3}},
		{"2,1(x3), 5", []int{2, 1, 1, 1, 5}},
		{"0(x2)", []int{0, 0}},
		{"16(x1)", []int{16}},
	} {
		got, err := ParseTasksPerNode(tc.in)
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("ParseTasksPerNode(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
	for _, in := range []string{"", " ", "4,", ",4", "x", "4(x0)", "4(x)", "4(2)", "4(x2", "(x2)",
		"4(x2)3", "-1", "4(x-1)", "1(x200000)", "1(x99999999999)"} {
		if got, err := ParseTasksPerNode(in); err == nil {
			t.Errorf("ParseTasksPerNode(%q) = %v, want an error", in, got)
		}
	}
}

func TestThreadsFor(t *testing.T) {
	for _, tc := range []struct{ cpt, tasks, ncpu, want int }{
		{8, 4, 64, 8},
		{0, 4, 64, 16},
		{0, 3, 64, 21},
		{0, 0, 64, 64},
		{0, 128, 64, 1},
	} {
		if got := ThreadsFor(tc.cpt, tc.tasks, tc.ncpu); got != tc.want {
			t.Errorf("ThreadsFor(%d, %d, %d) = %d, want %d", tc.cpt, tc.tasks, tc.ncpu, got, tc.want)
		}
	}
}

func TestTasksOnNode(t *testing.T) {
	e := &Env{NTasks: 7, NNodes: 2, NodeID: 1, TasksPerNode: []int{4, 3}}
	if n := e.TasksOnNode(); n != 3 {
		t.Errorf("with TasksPerNode: %d, want 3", n)
	}
	e.TasksPerNode = nil
	if n := e.TasksOnNode(); n != 4 {
		t.Errorf("without TasksPerNode: %d, want 4", n)
	}
}

func TestBindGPU(t *testing.T) {
	for _, tc := range []struct {
		local, onNode int
		cvd           string
		want          GPUBinding
	}{
		// Several visible devices: local rank mod count.
		{0, 4, "0,1,2,3", GPUBinding{0, "0", 4}},
		{3, 4, "0,1,2,3", GPUBinding{3, "3", 4}},
		{5, 4, "0,1,2,3", GPUBinding{1, "1", 4}},
		{1, 2, "4,6", GPUBinding{1, "6", 2}},
		{1, 2, "GPU-aaa, GPU-bbb", GPUBinding{1, "GPU-bbb", 2}},
		// One device per task, bound by Slurm: use it.
		{3, 4, "3", GPUBinding{0, "3", 1}},
		{3, 1, "MIG-xyz", GPUBinding{0, "MIG-xyz", 1}},
		// No CUDA_VISIBLE_DEVICES: all the node's GPUs.
		{5, 4, "", GPUBinding{1, "1", 4}},
		// No GPU at all.
		{0, 0, "", GPUBinding{-1, "", 0}},
		// CUDA_VISIBLE_DEVICES hides every device.
		{0, 4, "NoDevFiles", GPUBinding{-1, "", 0}},
		{0, 4, "-1", GPUBinding{-1, "", 0}},
		{0, 4, " , ", GPUBinding{-1, "", 0}},
		// CUDA stops at the first invalid entry.
		{2, 0, "0,1,bogus,3", GPUBinding{0, "0", 2}},
		{-1, 0, "0,1", GPUBinding{0, "0", 2}},
	} {
		got := BindGPU(tc.local, tc.onNode, tc.cvd)
		if got != tc.want {
			t.Errorf("BindGPU(%d, %d, %q) = %+v, want %+v", tc.local, tc.onNode, tc.cvd, got, tc.want)
		}
		if got.OK() != (tc.want.Ordinal >= 0) {
			t.Errorf("BindGPU(%d, %d, %q).OK() = %v", tc.local, tc.onNode, tc.cvd, got.OK())
		}
	}
}

// FuzzLoadEnv feeds arbitrary values to the parsed variables: LoadEnv must
// not panic, and what it accepts must be consistent.
func FuzzLoadEnv(f *testing.F) {
	f.Add("5", "8", "1", "1", "gpu[07-08]", "4(x2)", "0,1,2,3")
	f.Add("0", "1", "0", "0", "vm", "1", "")
	f.Add("3", "4", "3", "0", "n[1-2", "4(x", "NoDevFiles")
	f.Fuzz(func(t *testing.T, procID, ntasks, localID, nodeID, nodelist, tpn, cvd string) {
		m := map[string]string{
			"SLURM_PROCID": procID, "SLURM_NTASKS": ntasks, "SLURM_LOCALID": localID,
			"SLURM_NODEID": nodeID, "SLURM_STEP_NODELIST": nodelist,
			"SLURM_TASKS_PER_NODE": tpn, "CUDA_VISIBLE_DEVICES": cvd,
		}
		e, err := LoadEnv(getenvFrom(m))
		if err != nil {
			var ee *EnvError
			if !errors.As(err, &ee) || !strings.HasPrefix(ee.Var, "SLURM_") {
				t.Fatalf("error %v (%T) does not name a variable", err, err)
			}
			return
		}
		if e.NTasks < 1 || e.ProcID < 0 || e.ProcID >= e.NTasks || e.LocalID < 0 || e.LocalID >= e.NTasks ||
			e.NodeID < 0 || e.NodeID >= e.NNodes || e.NNodes < 1 {
			t.Fatalf("inconsistent Env %+v", e)
		}
		if e.TasksOnNode() < 1 || e.Threads() < 1 {
			t.Fatalf("TasksOnNode %d Threads %d", e.TasksOnNode(), e.Threads())
		}
		g := e.GPU()
		if g.OK() && (g.Ordinal >= g.Visible || g.Device == "") {
			t.Fatalf("GPU %+v", g)
		}
	})
}

// FuzzParseTasksPerNode checks that what parses renders back to the same
// counts.
func FuzzParseTasksPerNode(f *testing.F) {
	for _, s := range []string{"4(x2),3", "1", "0(x5)", "4(x", "2,,3", "1(x131073)"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		counts, err := ParseTasksPerNode(s)
		if err != nil {
			return
		}
		if len(counts) == 0 || len(counts) > MaxHostlistHosts {
			t.Fatalf("%d counts from %q", len(counts), s)
		}
		var parts []string
		for _, c := range counts {
			if c < 0 {
				t.Fatalf("negative count from %q", s)
			}
			parts = append(parts, strconv.Itoa(c))
		}
		back, err := ParseTasksPerNode(strings.Join(parts, ","))
		if err != nil || !reflect.DeepEqual(back, counts) {
			t.Fatalf("%q: %v, re-parsed %v, %v", s, counts, back, err)
		}
	})
}
