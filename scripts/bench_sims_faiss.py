#!/usr/bin/python3
"""FAISS reference for `hpcrun bench --ops sims`: exact inner-product top-k with IndexFlatIP.

Usage: bench_sims_faiss.py BASE.npy QUERIES.npy K OUT_IDS.npy [REPS]

BASE and QUERIES are float16 or float32 .npy arrays of L2-normalised rows. Searches REPS times (default 1)
and prints one JSON line: {"seconds": best search wall time, "cpu_seconds": that search's process CPU time
(all threads), "load_seconds": load + float32 conversion + index add, "threads": OpenMP threads}.
The ids of the top-k (int64 [nq, k]) go to OUT_IDS so the caller can check agreement.
"""
import json
import sys
import time

import faiss
import numpy as np


def main():
    base, queries, k, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    reps = int(sys.argv[5]) if len(sys.argv) > 5 else 1
    t0 = time.perf_counter()
    xb = np.ascontiguousarray(np.load(base, mmap_mode="r"), dtype=np.float32)
    xq = np.ascontiguousarray(np.load(queries), dtype=np.float32)
    index = faiss.IndexFlatIP(xb.shape[1])
    index.add(xb)
    t1 = time.perf_counter()
    best = None
    for _ in range(reps):
        c0, w0 = time.process_time(), time.perf_counter()
        _, ids = index.search(xq, k)
        w, c = time.perf_counter() - w0, time.process_time() - c0
        if best is None or w < best[0]:
            best = (w, c)
    np.save(out, ids.astype(np.int64))
    print(json.dumps({"seconds": best[0], "cpu_seconds": best[1], "load_seconds": t1 - t0,
                      "threads": faiss.omp_get_max_threads()}))


if __name__ == "__main__":
    main()
