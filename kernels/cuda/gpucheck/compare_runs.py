#!/usr/bin/env python3
"""compare_runs.py CPU_WORKDIR GPU_WORKDIR - how two hpcrun runs of the same
experiment differ (gpu-bundle/run.sh: the quickstart on backend=cpu and on
backend=cuda). Prints the output files whose bytes differ (report/ and
timing aside) and every number of report.json that differs, timings and
rank counts aside. Exit 0 always: float16 tensor-core sums may move a
k-means point to another cluster, which is a difference, not a failure;
the conformance tests are the pass/fail check."""
import hashlib
import json
import os
import sys

SKIP = ("seconds", "throughput", "rank", "time", "stamp", "host", "backend", "elapsed")


def files(root):
    out = {}
    for d, _, names in os.walk(root):
        for n in names:
            p = os.path.join(d, n)
            rel = os.path.relpath(p, root)
            if rel.startswith("report" + os.sep):
                continue
            with open(p, "rb") as f:
                out[rel] = hashlib.sha256(f.read()).hexdigest()
    return out


def walk(x, y, path, diffs):
    if any(s in path.lower() for s in SKIP):
        return
    if isinstance(x, dict) and isinstance(y, dict):
        for k in sorted(set(x) | set(y)):
            if k in x and k in y:
                walk(x[k], y[k], f"{path}.{k}", diffs)
            elif not any(s in k.lower() for s in SKIP):
                diffs.append(f"{path}.{k}: only in {'cpu' if k in x else 'gpu'}")
    elif isinstance(x, list) and isinstance(y, list) and len(x) == len(y):
        for i, (u, v) in enumerate(zip(x, y)):
            walk(u, v, f"{path}[{i}]", diffs)
    elif x != y:
        diffs.append(f"{path}: cpu {str(x)[:60]} | gpu {str(y)[:60]}")


def main():
    a, b = sys.argv[1], sys.argv[2]
    fa, fb = files(a), files(b)
    same = [k for k in fa if fb.get(k) == fa[k]]
    differ = sorted(k for k in fa if k in fb and fb[k] != fa[k] and not k.endswith("done.json"))
    missing = sorted(set(fa) ^ set(fb))
    print(f"outputs: {len(fa)} cpu, {len(fb)} gpu; {len(same)} byte-identical; "
          f"{len(differ)} differ (done.json stamps aside); {len(missing)} in one run only")
    for k in differ:
        print(f"  differs: {k}")
    for k in missing:
        print(f"  only in {'cpu' if k in fa else 'gpu'}: {k}")
    diffs = []
    try:
        with open(os.path.join(a, "report.json")) as f:
            ra = json.load(f)
        with open(os.path.join(b, "report.json")) as f:
            rb = json.load(f)
        walk(ra, rb, "report", diffs)
    except OSError as e:
        diffs.append(f"report.json: {e}")
    print(f"report.json: {len(diffs)} numbers differ (timings aside)")
    for d in diffs[:40]:
        print(f"  {d}")


if __name__ == "__main__":
    main()
