#!/usr/bin/env bash
# ptx.sh - regenerate kernels/cuda/*.ptx from kernels/cuda/*.cu with Debian's
# clang NVPTX backend (apt-get install clang-19): no CUDA toolkit, no nvcc.
# The PTX is committed and embedded (go:embed); kernels/cuda's TestPTXFresh
# fails when it is stale. Usage: scripts/ptx.sh [OUTDIR] (default: in place).
set -euo pipefail
cd "$(dirname "$0")/.."
CLANG=${CLANG:-clang-19}
out=${1:-kernels/cuda}
command -v "$CLANG" >/dev/null || { echo "ptx.sh: $CLANG not found (apt-get install clang-19)" >&2; exit 1; }
mkdir -p "$out"
for cu in kernels/cuda/*.cu; do
  name=$(basename "$cu" .cu)
  # sm_80 PTX (mma.sync m16n8k16 needs PTX ISA 7.0); the driver JIT-compiles it
  # for the GPU at hand (sm_80, sm_86, sm_89, sm_90, ...).
  "$CLANG" -x cuda --cuda-device-only -nocudainc -nocudalib --cuda-gpu-arch=sm_80 \
    -Xclang -target-feature -Xclang +ptx70 -O3 -ffp-contract=off -std=c++17 \
    -S -o "$out/$name.ptx.tmp" "$cu"
  mv "$out/$name.ptx.tmp" "$out/$name.ptx"
  # the sm_90a module (wgmma needs PTX ISA 8.0 and the "a" target, which the
  # driver loads on sm_90 GPUs only): the version-5 kernels, -DHPCRUN_SM90A.
  "$CLANG" -x cuda --cuda-device-only -nocudainc -nocudalib --cuda-gpu-arch=sm_90a \
    -Xclang -target-feature -Xclang +ptx80 -O3 -ffp-contract=off -std=c++17 -DHPCRUN_SM90A \
    -S -o "$out/${name}_sm90a.ptx.tmp" "$cu"
  mv "$out/${name}_sm90a.ptx.tmp" "$out/${name}_sm90a.ptx"
done
