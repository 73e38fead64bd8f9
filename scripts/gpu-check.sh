#!/usr/bin/env bash
# gpu-check.sh - build the CUDA backend's GPU check bundle in gpu-bundle/
# (git-ignored) on a machine with Go; then copy gpu-bundle/ to a GPU node
# (CUDA driver, python3 + torch; no Go, no network) and run
#   bash gpu-bundle/run.sh [quick|full|all]   (results in $OUT or gpu-bundle/out)
# The bundle: cuda.test (go test -c ./kernels/cuda: conformance on the GPU),
# cudabench (times the ops), hpcrun, torch_ref.py (PyTorch on the same GPU,
# prints the ratios), run.sh. Static binaries (CGO_ENABLED=0; the driver is
# loaded with dlopen at run time), GOARCH from the environment (amd64).
#
#   scripts/gpu-check.sh             build the bundle
#   scripts/gpu-check.sh --dry-run   build it and run run.sh here on the Go
#                                    emulator of the kernels (tiny shapes, no torch)
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=/usr/local/go/bin:$PATH
B=${BUNDLE:-gpu-bundle}
export CGO_ENABLED=0 GOOS=linux GOARCH=${GOARCH:-amd64}
rm -rf "$B"
mkdir -p "$B"
echo '*' > "$B/.gitignore" # never committed
go test -c -ldflags "-s -w" -o "$B/cuda.test" ./kernels/cuda
go build -ldflags "-s -w" -o "$B/cudabench" ./kernels/cuda/cmd/cudabench
# hpcrun itself needs cgo (onnxruntime_go); glibc there is newer than here.
CGO_ENABLED=1 go build -ldflags "-s -w -X main.version=$(git describe --always --dirty 2>/dev/null || echo dev)" -o "$B/hpcrun" ./cmd/hpcrun
# hpcrun travels gzipped (41 -> 16 MB: bundle and tree must fit the 64 MiB a
# device run carries); run.sh unpacks it. The PTX for ptxas's register report
# there is read from the tree beside the bundle (kernels/cuda/*.ptx).
gzip -6 "$B/hpcrun"
cp kernels/cuda/gpucheck/run.sh kernels/cuda/gpucheck/torch_ref.py kernels/cuda/gpucheck/compare_runs.py "$B/"
echo "$(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet 2>/dev/null || echo '-dirty')" > "$B/COMMIT"
echo "[gpu-check] bundle ready: $B/ ($(du -sh "$B" | cut -f1)); on a GPU node: bash $B/run.sh"
if [ "${1:-}" = --dry-run ]; then
  echo "[gpu-check] dry run on the emulator (HPCRUN_CUDA_EMULATOR=1), tiny shapes, no torch"
  HPCRUN_CUDA_EMULATOR=1 OUT="$B/dry-run" NQ=32 NB=2000 DIM=64 K=10 KC=16 SKIP_TORCH=1 \
    TESTS='^(TestGPULargeK|TestPTXStructure|TestKeys)$' NEW_TESTS='^TestGPUSmallTunables$/^v[56]$' bash "$B/run.sh" quick && rc=0 || rc=$?
  rm -f "$B/hpcrun" # unpacked by run.sh: the bundle carries hpcrun.gz only (64 MiB)
  exit $rc
fi
