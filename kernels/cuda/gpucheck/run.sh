#!/usr/bin/env bash
# run.sh - the CUDA backend's GPU check, run inside gpu-bundle/ (built by
# scripts/gpu-check.sh on a machine with Go) on a node with an NVIDIA GPU,
# its driver, python3 and torch; no Go toolchain or network needed.
#
#   bash run.sh [MODE]
#     quick   ptxas report, conformance, benchmark nq=10,000 x nb=1,000,000
#     full    ptxas report, conformance, benchmark at the paper's size:
#             top-k nq=50,000 x nb=10,000,000, d=512, k=1,000 (float16),
#             NearestCentroid 10,000,000 points x 4,096 centroids
#     all     (default) quick, then full, then the quickstart end to end
#             (backend=cpu vs backend=cuda), each step only while the
#             DEADLINE (seconds from the start, default 540) leaves room
#   Every benchmark runs hpcrun's kernel versions $VERSIONS (default "5,7";
#   5 is the sm_90a wgmma engine, 7 the same with a leaner argmax epilogue,
#   both skipped on other GPUs)
#   and then PyTorch (x @ y.T + torch.topk, the paper's implementation) on
#   the same GPU in the same run.
#
# Environment: OUT (results dir; default ./out), NQ NB DIM K KC (bench shapes
# of mode quick|full), VERSIONS, TESTS (go test -run pattern), NEW_TESTS (the
# same for the process of versions 5, 6 and 7 (5 and 6 first run on the H200
# of 2026-11-27, 7 on the H100 that day);
# SKIP_NEW=1 skips it), DEADLINE,
# SKIP_TORCH=1, TORCH_OPS (torch_ref.py --ops, default all), SKIP_BENCH=1,
# SKIP_E2E=1, SKIP_QUICK=1 / SKIP_MIXED=1 / SKIP_FULL=1 (mode all without
# the quick / mixed / full bench), FILTER_TESTS (the exact filter's process, default ^TestExactFilter),
# TILE_GROUPS="0,1,8,..." (the v5 engine's tile orders, HPCRUN_CUDA_GROUP: each
# runs kernel-topk and kernel-centroid of $VERSIONS, then the exact filter's
# band kernels of versions $BANDS (default 4,7) at the mixed shape: bench-groups.txt), NCU=1 (Nsight Compute on one launch of each similarity kernel:
# ncu.txt), PROFILE=1 (cudabench -profile:
# one more run of each op, timing its kernels, selection and chunk waits).
# Results: $OUT/summary.txt (everything that matters), ptxas.txt,
# conformance.txt (conformance-new.txt: versions 5, 6 and 7; conformance-filter.txt:
# the exact filter), bench-{quick,full}-{hpcrun,torch}.{txt,json},
# bench-{quick,full}-kept.{txt,json} (NearestCentroid on kept points),
# bench-mixed-hpcrun.{txt,json}, e2e.txt,
# nvidia-smi.txt.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
OUT=${OUT:-$here/out}
mkdir -p "$OUT"
MODE=${1:-all}
DEADLINE=${DEADLINE:-540}
VERSIONS=${VERSIONS:-5,7}
DIM=${DIM:-512} K=${K:-1000} KC=${KC:-4096}
TESTS=${TESTS:-'^(TestGPU|TestPTXStructure|TestKeys|TestNoGPU|TestEmulatorEnv)'}
NEW_TESTS=${NEW_TESTS:-'^TestGPU(Conformance|SmallTunables|RealShape|VersionsAgree|Float16x2)$/^v[567]$'}
status=0
start=$SECONDS
log() { echo "[gpu-check +$((SECONDS - start))s] $*" | tee -a "$OUT/summary.txt"; }
left() { echo $((DEADLINE - (SECONDS - start))); }
: > "$OUT/summary.txt"

log "bundle $(cat "$here/COMMIT" 2>/dev/null || echo '?'), $(date -u +%FT%TZ), host $(hostname), mode $MODE"
if command -v nvidia-smi >/dev/null; then
  nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1
  log "GPU: $(nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader 2>/dev/null | head -1)"
else
  log "nvidia-smi not found"
fi
if [ -f "$here/hpcrun.gz" ] && [ ! -x "$here/hpcrun" ]; then
  gzip -dc "$here/hpcrun.gz" > "$here/hpcrun.tmp" && chmod +x "$here/hpcrun.tmp" && mv "$here/hpcrun.tmp" "$here/hpcrun"
fi
log "hpcrun: $("$here/hpcrun" version 2>&1 | head -1)"

# 0. ptxas (when the toolkit is there): compile every embedded PTX for the
#    GPU at hand; registers, spills and shared memory per kernel.
PTXAS=$(command -v ptxas || ls /usr/local/cuda/bin/ptxas 2>/dev/null | head -1)
PTXDIR=$here/ptx
[ -d "$PTXDIR" ] || PTXDIR=$here/../kernels/cuda
if [ -n "$PTXAS" ] && ls "$PTXDIR"/*.ptx >/dev/null 2>&1; then
  arch=sm_$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d .)
  [ "$arch" = sm_ ] && arch=sm_90
  : > "$OUT/ptxas.txt"
  for f in "$PTXDIR"/*.ptx; do
    a=$arch
    case $f in
      *_sm90a.ptx) [ "$arch" = sm_90 ] || continue; a=sm_90a ;; # the wgmma modules: sm_90 only
    esac
    "$PTXAS" -arch="$a" -v "$f" -o /dev/null >> "$OUT/ptxas.txt" 2>&1 || { status=1; log "ptxas FAILED on $(basename "$f")"; }
  done
  # one line per kernel: name, registers, spills
  awk '/Compiling entry function/ { match($0, /\047[^\047]+\047/); fn = substr($0, RSTART + 1, RLENGTH - 2) }
       /spill stores/ { sub(/^ +/, ""); sp = $0 }
       /Used [0-9]+ registers/ { sub(/.*Used/, "Used"); print "  " fn ": " $0 "; " sp }' "$OUT/ptxas.txt" \
    | grep -E 'kernel[2345]|select' | tee -a "$OUT/summary.txt"
else
  log "no ptxas here: skipped the register report"
fi

# 1. conformance: every op vs the exact reference (kernels/kerneltest), every
#    kernel version, k up to 20,000, CLIP-sized rows, determinism, v2 = v3.
#    The subtests of versions 5 (wgmma) and 6 (FFMA 128x128) run after the
#    others in a process of their own (as does a new version's): a
#    faulting kernel poisons its CUDA context, and the rest must report.
log "conformance: cuda.test -test.run '$TESTS' (versions 5, 6 and 7 apart)"
t0=$SECONDS
timeout 300 "$here/cuda.test" -test.v -test.run "$TESTS" -test.skip '/^v[567]$' -test.timeout 290s > "$OUT/conformance.txt" 2>&1
rc=$?
if [ "${SKIP_NEW:-}" != 1 ]; then
  timeout 200 "$here/cuda.test" -test.v -test.run "$NEW_TESTS" -test.timeout 190s \
    > "$OUT/conformance-new.txt" 2>&1
  rcn=$?
  cat "$OUT/conformance-new.txt" >> "$OUT/conformance.txt"
  if [ $rcn -ne 0 ]; then
    rc=$rcn
    log "versions 5/6/7 conformance FAILED (exit $rcn): conformance-new.txt"
    # a faulting kernel would end each cudabench run at its first launch:
    # bench without 7, and without 5 unless its suites passed
    drop=7
    if ! grep -q -- '--- PASS: TestGPUConformance/v5' "$OUT/conformance-new.txt" || grep -qE -- '--- FAIL: [A-Za-z0-9]+/v5' "$OUT/conformance-new.txt"; then
      drop="5 7"
    fi
    for d in $drop; do VERSIONS=$(echo ",$VERSIONS," | sed "s/,$d,/,/g; s/^,//; s/,$//"); done
    log "benchmarks go on with versions ${VERSIONS:-0}"
    VERSIONS=${VERSIONS:-0}
  fi
fi
# the exact filter's kernels (band, rescore): a process of their own too;
# on failure the e2e runs the defaults with gpu_filter = false
if [ "${SKIP_NEW:-}" != 1 ]; then
  timeout 200 "$here/cuda.test" -test.v -test.run "${FILTER_TESTS:-^TestExactFilter}" -test.timeout 190s > "$OUT/conformance-filter.txt" 2>&1
  rcf=$?
  cat "$OUT/conformance-filter.txt" >> "$OUT/conformance.txt"
  if [ $rcf -ne 0 ]; then
    rc=$rcf
    NO_FILTER=1
    log "exact filter conformance FAILED (exit $rcf): conformance-filter.txt"
  fi
fi
grep -E '^--- |^    --- (FAIL|SKIP|PASS: [A-Za-z]+/v[0-9] )' "$OUT/conformance.txt" | head -60 | tee -a "$OUT/summary.txt"
grep -E '^\s+\S+_test\.go:[0-9]+: (stats|largest|NVIDIA|cuda\()' "$OUT/conformance.txt" | sort -u | head -10 >> "$OUT/summary.txt"
if [ $rc -ne 0 ]; then
  status=1
  log "conformance FAILED (exit $rc) after $((SECONDS - t0)) s; first failures:"
  grep -B2 -A8 -m8 -E '^\s+\S+_test\.go:[0-9]+:|panic|CUDA_ERROR' "$OUT/conformance.txt" | grep -v stats | head -80 | tee -a "$OUT/summary.txt"
else
  log "conformance passed in $((SECONDS - t0)) s"
fi

# 2. benchmark: hpcrun's CUDA backend (each version), then PyTorch, same GPU.
bench() { # name nq nb
  local name=$1 nq=$2 nb=$3
  if [ "$(left)" -lt 60 ]; then log "bench $name skipped: $(left) s left of DEADLINE"; return; fi
  log "bench $name: nq=$nq nb=$nb dim=$DIM k=$K centroids=$KC (float16), versions $VERSIONS"
  timeout $(( $(left) - 10 )) "$here/cudabench" -ops topk,topk-stream,centroid,kernel-topk,kernel-centroid -nq "$nq" -nb "$nb" -dim "$DIM" -k "$K" -centroids "$KC" \
    -version "$VERSIONS" ${PROFILE:+-profile} -json "$OUT/bench-$name-hpcrun.json" > "$OUT/bench-$name-hpcrun.txt" 2>&1 || { status=1; log "cudabench FAILED (exit $?)"; }
  tee -a "$OUT/summary.txt" < "$OUT/bench-$name-hpcrun.txt"
  # k-means' case: the points kept on the device, float32 centroids, on the
  # tensor cores (gpu_precision float16; gpu_filter: exact)
  if [ "$(left)" -gt 60 ]; then
    local precs=float16,filter
    [ "${NO_FILTER:-}" = 1 ] && precs=float16
    timeout $(( $(left) - 10 )) "$here/cudabench" -ops centroid-kept -nq 1 -nb "$nb" -dim "$DIM" -centroids "$KC" -precision $precs \
      -version "$VERSIONS" -json "$OUT/bench-$name-kept.json" > "$OUT/bench-$name-kept.txt" 2>&1 || { status=1; log "cudabench (kept) FAILED (exit $?)"; }
    grep -v '^ *launches' "$OUT/bench-$name-kept.txt" | tee -a "$OUT/summary.txt"
  fi
  if [ "${SKIP_TORCH:-}" != 1 ] && [ "$(left)" -gt 30 ]; then
    PYTHONUNBUFFERED=1 timeout $(( $(left) - 5 )) python3 "$here/torch_ref.py" --nq "$nq" --nb "$nb" --dim "$DIM" --k "$K" --centroids "$KC" ${TORCH_OPS:+--ops "$TORCH_OPS"} \
      --json "$OUT/bench-$name-torch.json" --ours "$OUT/bench-$name-hpcrun.json,$OUT/bench-$name-kept.json" > "$OUT/bench-$name-torch.txt" 2>&1 \
      || { status=1; log "torch_ref.py FAILED or cut (exit $?)"; }
    tee -a "$OUT/summary.txt" < "$OUT/bench-$name-torch.txt"
  fi
}
# 2a. the pipeline's operands: float32 queries / centroids against float16
#     rows, with runtime.gpu_precision float32 (FFMA: versions 1 and 6) and
#     float16 (rounded onto the tensor cores), at the quick shape.
bench_mixed() { # nq nb
  if [ "$(left)" -lt 40 ]; then log "bench mixed skipped: $(left) s left of DEADLINE"; return; fi
  local precs=float32,float16x2,float16,filter
  [ "${NO_FILTER:-}" = 1 ] && precs=float32,float16x2,float16
  log "bench mixed: float32 queries/centroids x float16 rows, nq=$1 nb=$2, gpu_precision $precs"
  timeout $(( $(left) - 10 )) "$here/cudabench" -ops topk,centroid,maxarg -nq "$1" -nb "$2" -dim "$DIM" -k "$K" -centroids "$KC" \
    -queries float32 -precision $precs -version "1,6,$VERSIONS" -json "$OUT/bench-mixed-hpcrun.json" > "$OUT/bench-mixed-hpcrun.txt" 2>&1 \
    || { status=1; log "cudabench (mixed) FAILED (exit $?)"; }
  grep -v '^ *launches' "$OUT/bench-mixed-hpcrun.txt" | tee -a "$OUT/summary.txt"
}
# 2c. TILE_GROUPS (not GROUPS: bash's own): the v5 engine's tile order (HPCRUN_CUDA_GROUP), the kernels
#     alone at the shapes of kernel-topk / kernel-centroid; then the
#     exact filter's band kernels per version (MaxArg, NearestCentroid).
if [ -n "${TILE_GROUPS:-}" ] && [ "${SKIP_BENCH:-}" != 1 ]; then
  log "tile orders (HPCRUN_CUDA_GROUP) $TILE_GROUPS: kernel-topk, kernel-centroid, versions $VERSIONS"
  : > "$OUT/bench-groups.txt"
  for g in ${TILE_GROUPS//,/ }; do
    [ "$(left)" -lt 30 ] && { log "groups: $(left) s left of DEADLINE"; break; }
    echo "== HPCRUN_CUDA_GROUP=$g" >> "$OUT/bench-groups.txt"
    HPCRUN_CUDA_GROUP=$g timeout $(( $(left) - 10 )) "$here/cudabench" -ops kernel-topk,kernel-centroid -nq 50000 -nb 262144 -dim "$DIM" \
      -centroids "$KC" -version "$VERSIONS" >> "$OUT/bench-groups.txt" 2>&1 || { status=1; log "cudabench (group $g) FAILED (exit $?)"; }
  done
  if [ "$(left)" -gt 40 ] && [ "${NO_FILTER:-}" != 1 ]; then
    echo "== band kernels, versions ${BANDS:-4,7}" >> "$OUT/bench-groups.txt"
    timeout $(( $(left) - 10 )) "$here/cudabench" -ops maxarg,centroid -nq 10000 -nb 1000000 -dim "$DIM" -centroids "$KC" \
      -queries float32 -precision filter -version "${BANDS:-4,7}" >> "$OUT/bench-groups.txt" 2>&1 || { status=1; log "cudabench (bands) FAILED (exit $?)"; }
  fi
  grep -E '^==|TFLOP' "$OUT/bench-groups.txt" | tee -a "$OUT/summary.txt"
fi
if [ "${SKIP_BENCH:-}" != 1 ]; then
  case $MODE in
    quick) bench quick "${NQ:-10000}" "${NB:-1000000}"; bench_mixed "${NQ:-10000}" "${NB:-1000000}" ;;
    full) bench full "${NQ:-50000}" "${NB:-10000000}"; bench_mixed 10000 1000000 ;;
    all)
      [ "${SKIP_QUICK:-}" = 1 ] || bench quick 10000 1000000
      [ "${SKIP_MIXED:-}" = 1 ] || bench_mixed 10000 1000000
      [ "${SKIP_FULL:-}" = 1 ] || bench full 50000 10000000 ;;
  esac
fi

# 2b. NCU=1: Nsight Compute on one launch of each default-version similarity
#     kernel (speed of light, memory, warp stalls), for the next tuning step.
if [ "${NCU:-}" = 1 ]; then
  NCU_BIN=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu /usr/local/cuda/bin/ncu 2>/dev/null | head -1)
  if [ -z "$NCU_BIN" ]; then
    log "ncu not found: profile skipped"
  elif [ "$(left)" -lt 60 ]; then
    log "ncu skipped: $(left) s left of DEADLINE"
  else
    NCU_VERSIONS=${NCU_VERSIONS:-${VERSIONS##*,}}
    log "ncu: one launch each of topk_kernel and centroid_kernel, versions $NCU_VERSIONS"
    : > "$OUT/ncu.txt"
    for v in ${NCU_VERSIONS//,/ }; do
      for op in topk centroid; do
        timeout $(( $(left) / 2 )) "$NCU_BIN" --kernel-name regex:"${op}_kernel${v}_f16" --launch-count 1 \
          --section SpeedOfLight --section MemoryWorkloadAnalysis --section WarpStateStats --section Occupancy \
          "$here/cudabench" -ops "kernel-$op" -version "$v" -nq 50000 -nb 262144 -dim "$DIM" -centroids "$KC" \
          >> "$OUT/ncu.txt" 2>&1 || log "ncu $op v$v FAILED or cut (exit $?), see ncu.txt"
      done
    done
    grep -E 'topk_kernel|centroid_kernel|Compute \(SM\) Throughput|Memory Throughput|Achieved Occupancy|Registers Per Thread|Stall' "$OUT/ncu.txt" | head -30 | tee -a "$OUT/summary.txt"
  fi
fi

# 3. the quickstart end to end on the GPU (every stage but embed and
#    zeroshot, which need ONNX Runtime): backend=cpu vs backend=cuda.
if [ "$MODE" = all ] && [ "${SKIP_E2E:-}" != 1 ] && [ -x "$here/hpcrun" ] && [ -d "$here/../configs" ]; then
  if [ "$(left)" -lt 45 ]; then
    log "e2e skipped: $(left) s left of DEADLINE"
  else
    log "e2e: quickstart (kmeans dedup sims prune subsample), backend=cpu --ranks 1 vs backend=cuda --ranks 2"
    (
      cd "$here/.." || exit 1
      e2e=/tmp/hpcrun-e2e
      rm -rf $e2e && mkdir -p $e2e
      t=$(( $(left) - 5 ))
      timeout $t "$here/hpcrun" synth --out data/quickstart --preset quickstart --seed 333 > $e2e/synth.log 2>&1 || exit 1
      # cuda: the defaults (kernel versions 7/6 on sm_90, the exact filter
      # on with version 7's bands; off when its conformance failed); cudanf: runtime.gpu_filter = false
      # (float32 operands on the FFMA kernels, version 6); cuda1:
      # HPCRUN_CUDA_KERNELS=1 with it -- all three must equal cpu; cuda16:
      # runtime.gpu_precision = "float16" (every op on the tensor cores);
      # cuda162: "float16x2" (split float32, within float32 tolerances);
      # cuda4: HPCRUN_CUDA_KERNELS=4 with float16 (must equal cuda16, which
      # runs the default version 7)
      runs="cpu cuda cudanf cuda1 cuda16 cuda162 cuda4"
      for be in $runs; do
        ranks=1; [ $be != cpu ] && ranks=2
        bk=cuda; [ $be = cpu ] && bk=cpu
        kv=; case $be in cuda1) kv=1 ;; cuda4) kv=4 ;; esac
        sets=()
        case $be in
          cuda) [ "${NO_FILTER:-}" = 1 ] && sets=(--set runtime.gpu_filter=false) ;;
          cudanf|cuda1) sets=(--set runtime.gpu_filter=false) ;;
          cuda16|cuda4) sets=(--set runtime.gpu_precision=float16) ;;
          cuda162) sets=(--set runtime.gpu_precision=float16x2) ;;
        esac
        t0=$SECONDS
        HPCRUN_CUDA_KERNELS=$kv timeout $(( $(left) - 5 )) "$here/hpcrun" run configs/quickstart.toml --ranks $ranks --only kmeans,dedup,sims,prune,subsample \
          --set job.workdir=$e2e/$be --set runtime.backend=$bk "${sets[@]}" > $e2e/$be.log 2>&1
        rc=$?
        echo "$be: exit $rc in $((SECONDS - t0)) s; $(grep -m1 -o 'backend [a-z]*[^"]*' $e2e/$be.log | head -1)"
        grep -E 'stage done' $e2e/$be.log | sed 's/.*stage=/  stage=/'
        [ $rc -eq 0 ] || { tail -20 $e2e/$be.log; exit 1; }
      done
      for be in cuda cudanf cuda1 cuda16 cuda162; do
        echo "== cpu vs $be"
        python3 "$here/compare_runs.py" $e2e/cpu $e2e/$be
      done
      for be in cuda4; do
        echo "== cuda16 vs $be"
        python3 "$here/compare_runs.py" $e2e/cuda16 $e2e/$be
      done
    ) > "$OUT/e2e.txt" 2>&1 || { status=1; log "e2e FAILED"; }
    tee -a "$OUT/summary.txt" < "$OUT/e2e.txt"
  fi
fi
log "done, status $status; results in $OUT"
exit $status
