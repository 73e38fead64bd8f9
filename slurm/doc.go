// Package slurm reads the Slurm environment, expands hostlists and renders
// sbatch scripts. It knows nothing of NATS, kernels or stages.
package slurm
