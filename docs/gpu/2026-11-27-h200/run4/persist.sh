#!/bin/bash
# one-off check of version 5's persistent grid (HPCRUN_CUDA_PERSIST=1)
B=$(cd "$(dirname "$0")" && pwd); OUT=${OUT:-/tmp/out}; mkdir -p $OUT
S=$OUT/summary.txt; : > $S
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader > $OUT/nvidia-smi.txt 2>&1
cat $OUT/nvidia-smi.txt | tee -a $S
echo "== conformance v5, persistent grid (one block per SM; 2 blocks with small tunables)" | tee -a $S
HPCRUN_CUDA_PERSIST=1 timeout 120 $B/cuda.test -test.v -test.run '^(TestGPUConformance|TestGPURealShape|TestGPUVersionsAgree|TestGPUSmallTunables)$/^v5$' -test.timeout 115s > $OUT/conformance-persist.txt 2>&1
echo "rc=$?" | tee -a $S
grep -E '^(--- |ok|FAIL|PASS)|^    --- |_test.go' $OUT/conformance-persist.txt | head -40 | tee -a $S
echo "== exact filter, persistent grid" | tee -a $S
HPCRUN_CUDA_PERSIST=1 timeout 50 $B/cuda.test -test.v -test.run '^TestExactFilterGPU$' -test.timeout 45s > $OUT/conformance-filter-persist.txt 2>&1
echo "rc=$?" | tee -a $S
grep -E '^(--- |ok|FAIL|PASS)|_test.go' $OUT/conformance-filter-persist.txt | head -20 | tee -a $S
for P in 0 1; do
  echo "== bench v5, HPCRUN_CUDA_PERSIST=$P" | tee -a $S
  HPCRUN_CUDA_PERSIST=$P timeout 60 $B/cudabench -ops kernel-topk,kernel-centroid,topk -nq 50000 -nb 10000000 -dim 512 -k 1000 -centroids 4096 -version 5 -json $OUT/bench-persist$P.json > $OUT/bench-persist$P.txt 2>&1
  echo "rc=$?" | tee -a $S
  cat $OUT/bench-persist$P.txt | tee -a $S
done
