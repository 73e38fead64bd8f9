#!/usr/bin/env bash
# run.sh - the CUDA backend's GPU check, run inside gpu-bundle/ (built by
# scripts/gpu-check.sh on a machine with Go) on a node with an NVIDIA GPU,
# its driver, python3 and torch; no Go toolchain or network needed.
#
#   bash run.sh          conformance tests, then the benchmark at the paper's size:
#                        top-k nq=50,000 x nb=10,000,000, d=512, k=1,000 (float16),
#                        NearestCentroid 10,000,000 points x 4,096 centroids,
#                        hpcrun vs PyTorch (x @ y.T + torch.topk) on the same GPU
#   bash run.sh quick    the same with nb=1,000,000, nq=10,000
#
# Environment: OUT (results dir; default ./out), NQ NB DIM K KC (bench shapes),
# TESTS (go test -run pattern), SKIP_TORCH=1, SKIP_BENCH=1.
# Results: $OUT/summary.txt (everything that matters), conformance.txt,
# bench-hpcrun.{txt,json}, bench-torch.{txt,json}, nvidia-smi.txt.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
OUT=${OUT:-$here/out}
mkdir -p "$OUT"
if [ "${1:-}" = quick ]; then
  : "${NQ:=10000}" "${NB:=1000000}"
fi
NQ=${NQ:-50000} NB=${NB:-10000000} DIM=${DIM:-512} K=${K:-1000} KC=${KC:-4096}
TESTS=${TESTS:-'^(TestGPU|TestPTXStructure|TestKeys|TestNoGPU|TestEmulatorEnv)'}
status=0
log() { echo "[gpu-check] $*" | tee -a "$OUT/summary.txt"; }
: > "$OUT/summary.txt"

log "bundle $(cat "$here/COMMIT" 2>/dev/null || echo '?'), $(date -u +%FT%TZ), host $(hostname)"
if command -v nvidia-smi >/dev/null; then
  nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1
  log "GPU: $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | head -1)"
else
  log "nvidia-smi not found"
fi
log "hpcrun: $("$here/hpcrun" version 2>&1 | head -1)"

# 1. conformance: every op vs the exact reference (kernels/kerneltest), both
#    kernel versions, k up to 20,000, CLIP-sized rows, determinism.
log "conformance: cuda.test -test.run '$TESTS'"
t0=$(date +%s)
"$here/cuda.test" -test.v -test.run "$TESTS" -test.timeout 1200s > "$OUT/conformance.txt" 2>&1
rc=$?
grep -E '^(=== RUN|--- (PASS|FAIL|SKIP)|    --- (FAIL|SKIP))' "$OUT/conformance.txt" | grep -v '=== RUN' | grep -E '^--- |FAIL|SKIP' | head -40 | tee -a "$OUT/summary.txt"
grep -E '^\s+\S+_test\.go:[0-9]+: (stats|NVIDIA|cuda\()' "$OUT/conformance.txt" | head -10 >> "$OUT/summary.txt"
if [ $rc -ne 0 ]; then
  status=1
  log "conformance FAILED (exit $rc) after $(( $(date +%s) - t0 )) s; first failures:"
  grep -B2 -A8 -m5 -E '^\s+\S+_test\.go:[0-9]+:' "$OUT/conformance.txt" | grep -v stats | head -60 | tee -a "$OUT/summary.txt"
else
  log "conformance passed in $(( $(date +%s) - t0 )) s"
fi

# 2. benchmark: hpcrun's CUDA backend, then PyTorch on the same GPU.
if [ "${SKIP_BENCH:-}" != 1 ]; then
  log "bench: nq=$NQ nb=$NB dim=$DIM k=$K centroids=$KC (float16)"
  timeout 900 "$here/cudabench" -ops topk,centroid -nq "$NQ" -nb "$NB" -dim "$DIM" -k "$K" -centroids "$KC" \
    -json "$OUT/bench-hpcrun.json" > "$OUT/bench-hpcrun.txt" 2>&1 || { status=1; log "cudabench FAILED (exit $?)"; }
  tee -a "$OUT/summary.txt" < "$OUT/bench-hpcrun.txt"
  if [ "${SKIP_TORCH:-}" != 1 ]; then
    timeout 900 python3 "$here/torch_ref.py" --nq "$NQ" --nb "$NB" --dim "$DIM" --k "$K" --centroids "$KC" \
      --json "$OUT/bench-torch.json" --ours "$OUT/bench-hpcrun.json" > "$OUT/bench-torch.txt" 2>&1 \
      || { status=1; log "torch_ref.py FAILED (exit $?)"; }
    tee -a "$OUT/summary.txt" < "$OUT/bench-torch.txt"
  fi
fi
log "done, status $status; results in $OUT"
exit $status
