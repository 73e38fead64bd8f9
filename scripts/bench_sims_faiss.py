#!/usr/bin/python3
"""FAISS reference for `hpcrun bench --ops sims`: exact inner-product top-k with IndexFlatIP.

Usage: bench_sims_faiss.py BASE.npy QUERIES.npy K OUT_IDS.npy

BASE and QUERIES are float16 or float32 .npy arrays of L2-normalised rows. After loading (float32, index
add) it prints {"ready": true, "load_seconds": ..., "threads": OpenMP threads} and then, for every line
read from stdin, searches once and prints {"seconds": wall time, "cpu_seconds": process CPU time of the
search (all threads)}; so the caller can interleave its own runs with these on a shared machine. At end
of input the last search's ids (int64 [nq, k]) go to OUT_IDS.
"""
import json
import sys
import time

import faiss
import numpy as np


def main():
    base, queries, k, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    t0 = time.perf_counter()
    xb = np.ascontiguousarray(np.load(base, mmap_mode="r"), dtype=np.float32)
    xq = np.ascontiguousarray(np.load(queries), dtype=np.float32)
    index = faiss.IndexFlatIP(xb.shape[1])
    index.add(xb)
    print(json.dumps({"ready": True, "load_seconds": time.perf_counter() - t0,
                      "threads": faiss.omp_get_max_threads()}), flush=True)
    ids = None
    for _ in sys.stdin:
        c0, w0 = time.process_time(), time.perf_counter()
        _, ids = index.search(xq, k)
        print(json.dumps({"seconds": time.perf_counter() - w0, "cpu_seconds": time.process_time() - c0}), flush=True)
    if ids is not None:
        np.save(out, ids.astype(np.int64))


if __name__ == "__main__":
    main()
