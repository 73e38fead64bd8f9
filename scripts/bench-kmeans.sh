#!/usr/bin/env bash
# bench-kmeans.sh [BENCH FLAGS...]: times one k-means iteration beside
# faiss.Kmeans(niter=1) and the dedup of one cluster beside SemDeDup's
# full-matrix numpy code, in the same run (hpcrun bench --ops
# kmeans-iter,dedup), writes bench-kmeans.json and prints the ratios.
# Defaults: kmeans n=200000 d=512 k=1000; dedup m=20000 d=512.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-bin/hpcrun}
OUT=${OUT:-bench-kmeans.json}
"$BIN" bench --ops kmeans-iter,dedup --json "$OUT" "$@"
"${HPCRUN_PYTHON:-/usr/bin/python3}" - "$OUT" <<'PY'
import json, sys
by = {}
for m in json.load(open(sys.argv[1])):
    by.setdefault(m["op"], {})[m["impl"]] = m
for op, ref, goal in (("kmeans-iter", "faiss", 2.0), ("dedup", "numpy", 3.0)):
    ms = by.get(op, {})
    if "hpcrun" in ms and ref in ms:
        h, r = ms["hpcrun"]["seconds"], ms[ref]["seconds"]
        print(f"{op}: hpcrun {h:.3f} s, {ref} {r:.3f} s: {r / h:.2f}x (goal >= {goal}x)")
    elif "hpcrun" in ms:
        print(f"{op}: hpcrun {ms['hpcrun']['seconds']:.3f} s, no {ref} reference")
PY
