// Package slurm reads the Slurm environment, expands hostlists and renders
// sbatch scripts. It knows nothing of NATS, kernels or stages, and imports
// nothing of hpcrun.
//
// # Environment
//
// Under `srun hpcrun run CONFIG` every task is one rank. LoadEnv(os.Getenv)
// reads what srun gave the task: rank (SLURM_PROCID), size (SLURM_NTASKS),
// local rank, node index, job and step ids, the step's node list (expanded),
// tasks per node, CPUs per task, GPUs on the node and CUDA_VISIBLE_DEVICES.
// Outside Slurm it returns a one-task Env; a malformed variable is an
// *EnvError that names it. InSlurm reports whether SLURM_PROCID is set.
// Slurm sets SLURM_PROCID=0 in the batch script too, where no other rank
// runs; Env.InStep (SLURM_STEP_ID set) tells a task started by srun apart.
//
// Rank 0 runs on the first host of the step (FirstHost) under Slurm's
// default block distribution. Env.GPU and BindGPU give a task's GPU:
// local rank mod the devices in CUDA_VISIBLE_DEVICES, the one device Slurm
// bound when it bound one per task, else local rank mod SLURM_GPUS_ON_NODE.
// Env.Threads is SLURM_CPUS_PER_TASK, else the node's CPUs shared by its
// tasks.
//
// # Hostlists
//
// ExpandHostlist turns "gpu[01-04,07],cpu-a[1-2]" into host names without
// calling scontrol (zero padding kept, several ranges and bracket groups
// per name, at most MaxHostlistHosts hosts); CompressHostlist is its
// inverse.
//
// # sbatch scripts
//
// Render fills the embedded templates/sbatch.tmpl from ScriptOptions;
// RenderTemplate takes a user's text/template instead (it sees ScriptData).
// Every value is quoted for where it goes: #SBATCH values as sbatch parses
// them (values with newlines are refused), the srun command line for bash.
// The script runs with `set -euo pipefail` and umask 077, makes a fresh
// job secret at run time (32 bytes from /dev/urandom as hex, in the
// variable named by SecretEnv, exported, never printed) and starts
// `srun --kill-on-bad-exit=1 --export=ALL hpcrun run CONFIG`, so one failed
// rank ends the others.
//
// # Submitting and waiting
//
// Submit pipes a script to `sbatch --parsable` and returns the job id.
// Wait polls `scontrol show job -o ID` (250 ms rising to 1 s) until the job
// reaches a terminal state and returns its exit status and state; sacct is
// asked only if slurmctld has already forgotten the job (MinJobAge after
// its end), and it needs slurmdbd. Each command runs under a timeout
// (Client.CommandTimeout). The job's exit status is the batch script's,
// that is srun's: the highest status of any task, where a task killed by
// --kill-on-bad-exit counts as 128+15, so the failing rank's own code is in
// the job's log rather than in the status.
//
// # Tests
//
// The tests in cluster_test.go submit real jobs to the one-node cluster of
// ../shared/slurm/start-local-slurm.sh (relative to the repository root);
// they skip when sbatch is missing or slurmctld does not answer, and
// HPCRUN_TEST_SLURM=1 makes them start the cluster first. Golden scripts
// live in testdata/*.golden; `go test ./slurm -run TestRenderGolden
// -update` rewrites them. Fuzz targets: FuzzExpandHostlist, FuzzLoadEnv,
// FuzzParseTasksPerNode.
package slurm
