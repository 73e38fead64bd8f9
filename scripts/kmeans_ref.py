#!/usr/bin/python3
"""Reference for hpcrun's k-means: faiss.Kmeans on the same data.

  kmeans_ref.py bench NPY K REPS
      Loads an [n, d] .npy (float16 is widened to float32 before timing) and
      times faiss.Kmeans(d, K, niter=1).train(x) (one assignment pass and one
      centroid update over all n points: max_points_per_centroid is raised so
      faiss does not subsample); best of REPS. Prints JSON {"seconds",
      "cpu_seconds", "threads", "faiss", "peak_rss"}.
"""
import json
import resource
import sys
import time

import faiss
import numpy as np


def bench(path, k, reps):
    x = np.ascontiguousarray(np.load(path).astype(np.float32))
    n, d = x.shape
    best, best_cpu = float("inf"), 0.0
    for rep in range(reps):
        km = faiss.Kmeans(d, k, niter=1, seed=1234 + rep, max_points_per_centroid=n, verbose=False)
        t0, c0 = time.perf_counter(), time.process_time()
        km.train(x)
        if time.perf_counter() - t0 < best:
            best, best_cpu = time.perf_counter() - t0, time.process_time() - c0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"seconds": best, "cpu_seconds": best_cpu, "threads": faiss.omp_get_max_threads(), "faiss": faiss.__version__, "peak_rss": rss}))


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "bench":
        bench(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    else:
        sys.exit(__doc__)
