#!/usr/bin/python3
"""hpcrun kernels vs FAISS on the same data, in one run.

Times, on identical seeded data (written as .npy and read by the Go side):
  1. exact top-k search: FAISS IndexFlatIP.search vs kernels TopK
     (default nq=10,000, nb=200,000, d=512, k=100), and
  2. one k-means iteration (assignment + centroid update): faiss.Kmeans
     with niter=1 from given initial centroids vs kernels NearestCentroid
     (L2, fixed-point sums) + Accum.Means (default n=200,000, d=512, k=1,000),
then prints seconds, effective GFLOP/s (2*n*m*d / time), the ratio
hpcrun/FAISS, and agreement checks (top-k recall vs FAISS, centroid diff).

hpcrun runs its default engine (engine 2 where the CPU has AMX-BF16: a
bf16 filter plus exact float32 rescoring, results bit-identical to the
float32 micro-kernels). --fp32 also times engine 1 (HPCRUN_NO_AMX=1: the
float32 micro-kernels on every entry) in the same alternation and checks
that both engines wrote the same bytes.

Usage (from the repository root; uses Debian's python3 with numpy + faiss):
  /usr/bin/python3 scripts/bench_faiss.py            # full size, ~2 min
  /usr/bin/python3 scripts/bench_faiss.py --small    # quick smoke run
  /usr/bin/python3 scripts/bench_faiss.py --fp32     # engine 1 beside engine 2 and FAISS
OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE are removed from this process's
environment before numpy/faiss load, so FAISS runs with its own defaults.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

for v in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
    os.environ.pop(v, None)

import numpy as np  # noqa: E402
import faiss  # noqa: E402


def blas_libs():
    """Shared BLAS libraries mapped into this process (after numpy/faiss load)."""
    libs = set()
    with open("/proc/self/maps") as f:
        for line in f:
            p = line.split()[-1]
            if "blas" in os.path.basename(p) or "mkl" in os.path.basename(p):
                libs.add(os.path.realpath(p))
    return sorted(libs)


def unit(rng, n, d):
    x = rng.standard_normal((n, d), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def timed(f):
    """Wall seconds, CPU seconds (all threads of this process) and result."""
    t0, c0 = time.perf_counter(), time.process_time()
    out = f()
    return time.perf_counter() - t0, time.process_time() - c0, out


def kbench(exe, args, engine1=False):
    env = dict(os.environ)
    env.pop("HPCRUN_NO_AMX", None)
    if engine1:
        env["HPCRUN_NO_AMX"] = "1"
    r = subprocess.run([exe] + args, check=True, capture_output=True, text=True, env=env)
    return json.loads(r.stdout)


def alternate(reps, hpc, fai, hpc1=None):
    """Runs hpcrun (and engine 1 when hpc1 is given) and FAISS alternately
    reps times (so load from other processes hits all alike) and keeps the
    fastest run of each."""
    hb = fb = h1b = None
    for _ in range(reps):
        h = hpc()
        if hb is None or h["Seconds"] < hb["Seconds"]:
            hb = h
        if hpc1 is not None:
            h1 = hpc1()
            if h1b is None or h1["Seconds"] < h1b["Seconds"]:
                h1b = h1
        f = timed(fai)
        if fb is None or f[0] < fb[0]:
            fb = f
    return hb, fb, h1b


def same_bytes(work, a, b, suffixes):
    """Whether hpcrun's result files a_* and b_* are identical."""
    for suf in suffixes:
        with open(os.path.join(work, a + suf), "rb") as x, open(os.path.join(work, b + suf), "rb") as y:
            if x.read() != y.read():
                return False
    return True


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--nq", type=int, default=10000)
    ap.add_argument("--nb", type=int, default=200000)
    ap.add_argument("--d", type=int, default=512)
    ap.add_argument("--k", type=int, default=100)
    ap.add_argument("--kmeans-n", type=int, default=200000)
    ap.add_argument("--kmeans-k", type=int, default=1000)
    ap.add_argument("--dtype", choices=["f32", "f16"], default="f32",
                    help="storage type handed to hpcrun (FAISS always gets the same values as float32)")
    ap.add_argument("--reps", type=int, default=2, help="timed repetitions, best kept")
    ap.add_argument("--threads", type=int, default=0, help="0 = all cores (both sides)")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--kbench", default=None, help="prebuilt kbench binary (default: go build)")
    ap.add_argument("--small", action="store_true", help="quick run: nq=1000 nb=20000 kmeans n=20000 k=200")
    ap.add_argument("--json", default=None, help="also write the results here")
    ap.add_argument("--fp32", action="store_true",
                    help="also time hpcrun's engine 1 (HPCRUN_NO_AMX=1: float32 micro-kernels on every entry)")
    a = ap.parse_args()
    if a.small:
        a.nq, a.nb, a.kmeans_n, a.kmeans_k = 1000, 20000, 20000, 200

    threads = a.threads or os.cpu_count()
    faiss.omp_set_num_threads(threads)
    work = a.workdir or tempfile.mkdtemp(prefix="hpcrun-bench-")
    os.makedirs(work, exist_ok=True)
    exe = a.kbench
    if exe is None:
        exe = os.path.join(work, "kbench")
        go = "/usr/local/go/bin/go" if os.path.exists("/usr/local/go/bin/go") else "go"
        subprocess.run([go, "build", "-o", exe, "./kernels/cmd/kbench"], check=True)

    rng = np.random.default_rng(a.seed)
    xq = unit(rng, a.nq, a.d)
    xb = unit(rng, max(a.nb, a.kmeans_n), a.d)
    xk = xb[: a.kmeans_n]
    c0 = xk[rng.choice(a.kmeans_n, a.kmeans_k, replace=False)].copy()
    if a.dtype == "f16":  # both sides see the same (rounded) values
        xq, xb, c0 = (t.astype(np.float16) for t in (xq, xb, c0))
        xk = xb[: a.kmeans_n]
    paths = {}
    for name, arr in (("xq", xq), ("xb", xb[: a.nb]), ("xk", xk), ("c0", c0)):
        paths[name] = os.path.join(work, name + ".npy")
        np.save(paths[name], np.ascontiguousarray(arr))
    xq, xb, xk, c0 = (np.ascontiguousarray(t, dtype=np.float32) for t in (xq, xb[: a.nb], xk, c0))

    th = ["-threads", str(a.threads)]
    rows = []

    # --- 1. top-k search -------------------------------------------------
    flops = 2.0 * a.nq * a.nb * a.d
    index = faiss.IndexFlatIP(a.d)
    index.add(xb)
    topk_args = ["-op", "topk", "-q", paths["xq"], "-b", paths["xb"], "-k", str(a.k)] + th
    h, (tf, cf, (D, I)), h1 = alternate(
        a.reps,
        lambda: kbench(exe, topk_args + ["-out", os.path.join(work, "topk")]),
        lambda: index.search(xq, a.k),
        (lambda: kbench(exe, topk_args + ["-out", os.path.join(work, "topk1")], engine1=True)) if a.fp32 else None)
    hI = np.load(os.path.join(work, "topk_I.npy"))
    hD = np.load(os.path.join(work, "topk_D.npy"))
    recall = np.mean([len(np.intersect1d(hI[i], I[i])) for i in range(a.nq)]) / a.k
    dmax = float(np.max(np.abs(hD - D)))
    rows.append(("topk  nq=%d nb=%d d=%d k=%d" % (a.nq, a.nb, a.d, a.k), h["Seconds"], flops / h["Seconds"] / 1e9,
                 tf, flops / tf / 1e9, h["CPUSeconds"] / h["Seconds"], cf / tf,
                 "recall vs FAISS %.5f, max |dD| %.2e" % (recall, dmax)))
    if h1 is not None:
        same = same_bytes(work, "topk", "topk1", ("_I.npy", "_D.npy"))
        rows.append(("  engine 1 (float32 only)", h1["Seconds"], flops / h1["Seconds"] / 1e9,
                     tf, flops / tf / 1e9, h1["CPUSeconds"] / h1["Seconds"], cf / tf,
                     "same bytes as engine 2: %s" % ("yes" if same else "NO")))
    del index

    # --- 2. one k-means iteration -----------------------------------------
    flops = 2.0 * a.kmeans_n * a.kmeans_k * a.d

    def faiss_iter():
        km = faiss.Kmeans(a.d, a.kmeans_k, niter=1, verbose=False, seed=a.seed,
                          max_points_per_centroid=1 << 30, min_points_per_centroid=1)
        km.train(xk, init_centroids=c0)
        return km

    km_args = ["-op", "kmeans", "-b", paths["xk"], "-c", paths["c0"], "-reps", "2"] + th
    h2, (tk, ck, km), h21 = alternate(
        a.reps,
        lambda: kbench(exe, km_args + ["-out", os.path.join(work, "km")]),
        faiss_iter,
        (lambda: kbench(exe, km_args + ["-out", os.path.join(work, "km1")], engine1=True)) if a.fp32 else None)
    hC = np.load(os.path.join(work, "km_centroids.npy"))
    hA = np.load(os.path.join(work, "km_assign.npy"))[:, 0]
    _, fA = faiss.knn(xk, c0, 1) if hasattr(faiss, "knn") else (None, None)
    agree = float(np.mean(hA == fA[:, 0])) if fA is not None else float("nan")
    cdiff = float(np.max(np.abs(hC - km.centroids)))
    rows.append(("kmeans-iter n=%d d=%d k=%d" % (a.kmeans_n, a.d, a.kmeans_k), h2["Seconds"],
                 flops / h2["Seconds"] / 1e9, tk, flops / tk / 1e9, h2["CPUSeconds"] / h2["Seconds"], ck / tk,
                 "assignment agreement %.5f, max |dC| %.2e" % (agree, cdiff)))
    if h21 is not None:
        same = same_bytes(work, "km", "km1", ("_assign.npy", "_centroids.npy"))
        rows.append(("  engine 1 (float32 only)", h21["Seconds"], flops / h21["Seconds"] / 1e9,
                     tk, flops / tk / 1e9, h21["CPUSeconds"] / h21["Seconds"], ck / tk,
                     "same bytes as engine 2: %s" % ("yes" if same else "NO")))

    peak = h.get("PeakGFLOPS", 0)
    libs = blas_libs()
    print("BLAS used by numpy/faiss: %s" % (", ".join(libs) or "?"))
    if not any("openblas" in l or "mkl" in l or "blis" in l for l in libs):
        print("WARNING: FAISS is running on the reference BLAS; install an optimised one "
              "(Debian: apt-get install libopenblas0-pthread) for a meaningful comparison")
    print("machine: %d threads, FMA peak %.0f GFLOP/s (hpcrun %s); faiss %s, dtype %s" %
          (threads, peak, h.get("Backend"), faiss.__version__, a.dtype))
    print("(cores = CPU seconds / wall seconds of the kept run: below %d means other processes took CPU)" % threads)
    print("%-36s %9s %8s %6s %9s %8s %6s %7s" % ("benchmark", "hpcrun s", "GFLOP/s", "cores",
                                                "faiss s", "GFLOP/s", "cores", "ratio"))
    out = []
    for name, hs, hg, fs, fg, hc, fc, note in rows:
        print("%-36s %9.3f %8.1f %6.2f %9.3f %8.1f %6.2f %6.2fx   %s" % (name, hs, hg, hc, fs, fg, fc, fs / hs, note))
        out.append(dict(bench=name, hpcrun_s=hs, hpcrun_gflops=hg, hpcrun_cores=hc, faiss_s=fs, faiss_gflops=fg,
                        faiss_cores=fc, ratio=fs / hs, check=note))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(dict(peak_gflops=peak, results=out), f, indent=2)


if __name__ == "__main__":
    sys.exit(main())
