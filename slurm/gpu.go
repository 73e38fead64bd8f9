package slurm

import (
	"strconv"
	"strings"
)

// GPUBinding says which GPU a task uses.
type GPUBinding struct {
	// Ordinal is the CUDA device index inside this process (what
	// cudaSetDevice / cuDeviceGet take); -1 when the task has no GPU.
	Ordinal int
	// Device names the physical device: the CUDA_VISIBLE_DEVICES entry at
	// Ordinal (an index or a GPU-/MIG- UUID), or Ordinal itself as text when
	// CUDA_VISIBLE_DEVICES is unset. "" when the task has no GPU.
	Device string
	// Visible is how many devices the process sees.
	Visible int
}

// OK reports whether the task has a GPU.
func (b GPUBinding) OK() bool { return b.Ordinal >= 0 }

// BindGPU picks the GPU of the task with local rank localRank
// (SLURM_LOCALID) on a node with gpusOnNode GPUs (SLURM_GPUS_ON_NODE),
// given CUDA_VISIBLE_DEVICES. The rule:
//
//  1. If CUDA_VISIBLE_DEVICES lists several devices, the task uses device
//     localRank mod count of that list (each local rank its own GPU while
//     there are enough; round robin beyond that).
//  2. If it lists exactly one device, the task uses it (ordinal 0): Slurm
//     already bound one device per task (--gpus-per-task=1,
//     --gpu-bind=single:1), or the node has a single GPU that every task
//     shares.
//  3. If CUDA_VISIBLE_DEVICES is set but lists no usable device ("-1",
//     Slurm's "NoDevFiles"), the task has no GPU: CUDA sees none.
//  4. If CUDA_VISIBLE_DEVICES is unset or empty but gpusOnNode > 0, CUDA
//     sees all the node's GPUs, and the task uses localRank mod gpusOnNode.
//  5. Otherwise the task has no GPU (Ordinal -1).
//
// CUDA_VISIBLE_DEVICES is read as CUDA reads it: the list ends at the first
// entry that is neither a device index nor a GPU-/MIG- UUID. A negative
// localRank counts as 0.
func BindGPU(localRank, gpusOnNode int, cudaVisibleDevices string) GPUBinding {
	localRank = max(localRank, 0)
	if strings.TrimSpace(cudaVisibleDevices) != "" {
		devs := parseDeviceList(cudaVisibleDevices)
		if len(devs) == 0 {
			return GPUBinding{Ordinal: -1}
		}
		o := localRank % len(devs)
		return GPUBinding{Ordinal: o, Device: devs[o], Visible: len(devs)}
	}
	if gpusOnNode > 0 {
		o := localRank % gpusOnNode
		return GPUBinding{Ordinal: o, Device: strconv.Itoa(o), Visible: gpusOnNode}
	}
	return GPUBinding{Ordinal: -1}
}

// parseDeviceList splits CUDA_VISIBLE_DEVICES as CUDA does: up to the
// first entry that is not a device index or UUID.
func parseDeviceList(v string) []string {
	var out []string
	for _, d := range strings.Split(v, ",") {
		d = strings.TrimSpace(d)
		if !validDevice(d) {
			break
		}
		out = append(out, d)
	}
	return out
}

func validDevice(d string) bool {
	if strings.HasPrefix(d, "GPU-") || strings.HasPrefix(d, "MIG-") {
		return len(d) > 4
	}
	if d == "" {
		return false
	}
	for i := 0; i < len(d); i++ {
		if d[i] < '0' || d[i] > '9' {
			return false
		}
	}
	return true
}
