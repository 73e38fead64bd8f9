#!/usr/bin/env bash
# Benchmarks of the sims and prune stages (make bench): exact top-k through the
# sims stage's scan beside FAISS IndexFlatIP on the same float16 data in the same
# run, then the seconds of the whole sims and prune stages on the same shapes.
#
#   scripts/bench-sims.sh [NQ] [NB]      defaults: 10000 eval rows, 100000 base rows
#
# The issue's shape is NQ=10000 NB=1000000 (10 TFLOP per pass): minutes on a
# 2-core machine for each implementation, so the default is 10x smaller.
set -euo pipefail
cd "$(dirname "$0")/.."
NQ=${1:-10000}
NB=${2:-100000}
bin/hpcrun bench --ops sims,sims-stage --ranks 1 --nq "$NQ" --nb "$NB" --dim 512 --k 100 \
  --dtype float16 --json bench-sims.json
/usr/bin/python3 - bench-sims.json <<'PY'
import json, sys
ms = json.load(open(sys.argv[1]))
t = {m["impl"]: m for m in ms if m["op"] == "sims"}
h = t["hpcrun"]
if "faiss" in t:
    f = t["faiss"]
    print(f"sims top-k {h['nq']}x{h['nb']}x{h['dim']} k={h['k']}: hpcrun {h['seconds']:.2f} s, "
          f"faiss {f['seconds']:.2f} s: hpcrun is {f['seconds'] / h['seconds']:.2f}x faiss")
else:
    print("faiss did not run:", h.get("note", ""))
for m in ms:
    if m["op"].endswith("-stage"):
        print(f"{m['op']}: {m['seconds']:.2f} s")
PY
