#!/usr/bin/python3
"""Reference for hpcrun's dedup stage: SemDeDup's full-matrix rule in numpy.

Within a cluster whose points are in order x_0..x_{m-1}, point j is removed
when max_{i<j} x_i.x_j > 1 - eps (the max over the strict upper triangle of
the similarity matrix; an earlier point counts even if it was removed).

  dedup_ref.py check WORKDIR EMB_DIR EPS
      Runs the rule on every cluster of WORKDIR/kmeans (ids.npy,
      assignments.npy) over the embeddings EMB_DIR/img_emb_N.npy, points in
      global row order; prints JSON {"removed": sorted ids, "near": ids whose
      max similarity is within 1e-5 of the threshold}.

  dedup_ref.py bench NPY EPS
      Times the rule on one cluster (an [m, d] .npy); prints JSON
      {"seconds", "cpu_seconds", "removed", "peak_rss"}.
"""
import json
import os
import re
import resource
import sys
import time

import numpy as np


def semdedup(x, eps):
    """Boolean removed mask and the per-point max similarity to earlier points."""
    s = x @ x.T
    t = np.triu(s, 1)
    m = t.max(axis=0)
    return m > np.float32(1 - eps), m


def load_rows(emb_dir):
    files = [f for f in os.listdir(emb_dir) if re.fullmatch(r"img_emb_\d+\.npy", f)]
    files.sort(key=lambda f: int(f[len("img_emb_"):-4]))
    return np.concatenate([np.load(os.path.join(emb_dir, f)) for f in files]).astype(np.float32)


def check(workdir, emb_dir, eps):
    x = load_rows(emb_dir)
    ids = np.load(os.path.join(workdir, "kmeans", "ids.npy"))
    assign = np.load(os.path.join(workdir, "kmeans", "assignments.npy"))
    assert len(ids) == len(assign) == len(x), (len(ids), len(assign), len(x))
    removed, near = [], []
    thr = np.float32(1 - eps)
    for c in np.unique(assign):
        rows = np.flatnonzero(assign == c)  # increasing: global row order
        rem, m = semdedup(x[rows], eps)
        removed.extend(ids[rows[rem]].tolist())
        close = np.abs(m - thr) < 1e-5
        close[0] = False
        near.extend(ids[rows[close]].tolist())
    print(json.dumps({"removed": sorted(removed), "near": sorted(near)}))


def bench(path, eps):
    x = np.load(path).astype(np.float32)
    best, best_cpu = float("inf"), 0.0
    for _ in range(2):
        t0, c0 = time.perf_counter(), time.process_time()
        rem, _ = semdedup(x, eps)
        if time.perf_counter() - t0 < best:
            best, best_cpu = time.perf_counter() - t0, time.process_time() - c0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"seconds": best, "cpu_seconds": best_cpu, "removed": int(rem.sum()), "peak_rss": rss}))


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "check":
        check(sys.argv[2], sys.argv[3], float(sys.argv[4]))
    elif len(sys.argv) == 4 and sys.argv[1] == "bench":
        bench(sys.argv[2], float(sys.argv[3]))
    else:
        sys.exit(__doc__)
