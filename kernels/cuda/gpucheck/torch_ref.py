#!/usr/bin/env python3
"""PyTorch reference for the CUDA backend's benchmark, on the same GPU in
the same run (gpu-bundle/run.sh): the paper's own implementation of top-k
similarity, sims = x @ y.T in float16 then torch.topk, chunked to fit memory;
the k-means assignment step (x @ c.T - |c|^2/2, argmax, index_add_ sums);
and a dense float16 matmul as the achievable tensor-core peak.

Prints TFLOP/s (useful flops: 2*d per similarity, the same formula as
cudabench) and, given --ours (cudabench's JSON), the ratio hpcrun/torch for
each op. Writes its measurements as JSON (--json) in the same schema.

Timing: data resident on the GPU ("torch") and, for top-k, the base also
streamed from pinned host memory chunk by chunk ("torch-h2d"), which is what
hpcrun's numbers include (they start from host memory).
"""
import argparse
import json
import os
import socket
import time

import torch


# Advertised dense float16 tensor-core peaks (float32 accumulate), TFLOP/s,
# for the napkin math beside the measured matmul peak.
DATASHEET = {"H100 SXM": 989.4, "H100 80GB HBM3": 989.4, "H100 PCIe": 756.0, "H100 NVL": 835.0,
             "H200": 989.4, "A100": 312.0, "L40S": 362.0, "L4": 121.0}


def datasheet_peak(name):
    for key, v in DATASHEET.items():
        if all(part in name for part in key.split()):
            return key, v
    return None, None


def unit(n, d, seed, device):
    g = torch.Generator(device=device).manual_seed(seed)
    out = torch.empty(n, d, dtype=torch.float16, device=device)
    step = 1 << 20
    for i in range(0, n, step):
        x = torch.randn(min(step, n - i), d, generator=g, device=device, dtype=torch.float32)
        out[i:i + len(x)] = (x / x.norm(dim=1, keepdim=True)).half()
    return out


def timed(fn, reps):
    fn(warm=True)
    torch.cuda.synchronize()
    best = float("inf")
    for _ in range(reps):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn(warm=False)
        torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return best


def topk_chunked(q, base_chunks, k, qblock):
    """The paper's top-k: float16 sims = x @ y.T per (query block, base chunk),
    torch.topk, merged with the running best by another topk."""
    nq = q.shape[0]
    for q0 in range(0, nq, qblock):
        qb = q[q0:q0 + qblock]
        best_v = best_i = None
        for b0, chunk in base_chunks():
            s = qb @ chunk.T
            v, i = torch.topk(s, min(k, s.shape[1]), dim=1)
            i = i + b0
            if best_v is None:
                best_v, best_i = v, i
            else:
                v2, j = torch.topk(torch.cat([best_v, v], 1), k, dim=1)
                best_i = torch.gather(torch.cat([best_i, i], 1), 1, j)
                best_v = v2
    return best_v, best_i


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--nq", type=int, default=50000)
    ap.add_argument("--nb", type=int, default=10000000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--k", type=int, default=1000)
    ap.add_argument("--centroids", type=int, default=4096)
    ap.add_argument("--qblock", type=int, default=8192)
    ap.add_argument("--bchunk", type=int, default=1 << 20)
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--ops", default="peak,topk,topk-h2d,centroid")
    ap.add_argument("--json")
    ap.add_argument("--ours", help="cudabench JSON files to compare with, comma-separated (missing ones are skipped)")
    a = ap.parse_args()
    dev = "cuda"
    name = torch.cuda.get_device_name(0)
    host = socket.gethostname()
    print(f"torch {torch.__version__}, {name}")
    ops = a.ops.split(",")
    out = []

    def record(op, impl, secs, flops, **kw):
        m = dict(op=op, impl=impl, device=name, host=host, dtype="float16", seconds=secs, gflops=flops / secs / 1e9, **kw)
        out.append(m)
        print(f"{op:<10} {impl:<12} {secs:8.3f} s  {m['gflops'] / 1e3:8.1f} TFLOP/s  {kw}")

    if "peak" in ops:
        n = 8192
        x = torch.randn(n, n, device=dev, dtype=torch.float16)
        y = torch.randn(n, n, device=dev, dtype=torch.float16)
        secs = timed(lambda warm: [x @ y for _ in range(1 if warm else 10)], 3) / 10
        record("peak", "torch", secs, 2 * n ** 3, note="dense float16 matmul 8192^3 (achievable tensor-core peak)")
        del x, y

    flops_topk = 2 * a.nq * a.nb * a.dim
    if "topk" in ops or "topk-h2d" in ops:
        q = unit(a.nq, a.dim, 1, dev)
        if "topk" in ops:
            b = unit(a.nb, a.dim, 2, dev)
            chunks = lambda: ((b0, b[b0:b0 + a.bchunk]) for b0 in range(0, a.nb, a.bchunk))
            small = lambda: ((0, b[:4096]),)
            secs = timed(lambda warm: topk_chunked(q[:a.qblock] if warm else q, small if warm else chunks, a.k, a.qblock), a.reps)
            record("topk", "torch", secs, flops_topk, nq=a.nq, nb=a.nb, dim=a.dim, k=a.k,
                   note=f"x @ y.T float16 + torch.topk, query block {a.qblock}, base chunk {a.bchunk}, data on the GPU")
            del b
            torch.cuda.empty_cache()
        if "topk-h2d" in ops:
            hb = torch.empty(a.nb, a.dim, dtype=torch.float16, pin_memory=True)
            hb.copy_(unit(a.nb, a.dim, 2, dev))
            torch.cuda.empty_cache()

            def chunks():
                for b0 in range(0, a.nb, a.bchunk):
                    yield b0, hb[b0:b0 + a.bchunk].to(dev, non_blocking=True)
            small = lambda: ((0, hb[:4096].to(dev)),)
            # one query block at a time streams the whole base, as the paper's loop does
            secs = timed(lambda warm: topk_chunked(q[:a.qblock] if warm else q, small if warm else chunks, a.k, a.qblock), a.reps)
            record("topk", "torch-h2d", secs, flops_topk, nq=a.nq, nb=a.nb, dim=a.dim, k=a.k,
                   note="as torch, base streamed from pinned host memory per query block")
            del hb
        del q
        torch.cuda.empty_cache()

    if "centroid" in ops:
        x = unit(a.nb, a.dim, 3, dev)
        c = unit(a.centroids, a.dim, 4, dev)

        def step(warm):
            n = 4096 if warm else a.nb
            bias = -0.5 * (c.float() ** 2).sum(1)
            sums = torch.zeros(a.centroids, a.dim, device=dev, dtype=torch.float32)
            counts = torch.zeros(a.centroids, device=dev, dtype=torch.float32)
            step = max(1, a.bchunk // 4)
            for i0 in range(0, n, step):
                xb = x[i0:min(n, i0 + step)]
                assign = ((xb @ c.T).float() + bias).argmax(1)
                sums.index_add_(0, assign, xb.float())
                counts.index_add_(0, assign, torch.ones(len(xb), device=dev))
            return sums, counts
        secs = timed(step, a.reps)
        record("centroid", "torch", secs, 2 * a.nb * a.centroids * a.dim, nb=a.nb, dim=a.dim, k=a.centroids,
               note="x @ c.T float16 - |c|^2/2, argmax, index_add_ float32 sums")
        del x, c

    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=2)

    if a.ours:
        ours = []
        for fn in a.ours.split(","):
            if os.path.exists(fn):
                with open(fn) as f:
                    ours += json.load(f)
        peak = next((m["gflops"] for m in out if m["op"] == "peak"), None)
        sheet_name, sheet = datasheet_peak(name)
        print("\nratios (same GPU, same run; TFLOP/s from the same flop formula):")
        for m in ours:
            line = f"  {m['op']:<10} hpcrun-cuda v{m.get('version', 0)} {m['gflops'] / 1e3:8.1f} TFLOP/s"
            # centroid-kept (points on the device) is the like of torch's centroid (data on the GPU);
            # topk-stream (the base added in blocks, as the sims stage scans) the like of its topk
            op = {"centroid-kept": "centroid", "topk-stream": "topk"}.get(m["op"], m["op"])
            for r in out:
                if r["op"] == op:
                    line += f"   vs {r['impl']} {r['gflops'] / 1e3:.1f}: x{m['gflops'] / r['gflops']:.2f}"
            if peak:
                line += f"   = {100 * m['gflops'] / peak:.0f}% of torch's dense float16 matmul"
            if sheet:
                line += f", {100 * m['gflops'] / 1e3 / sheet:.0f}% of the {sheet_name} datasheet ({sheet:.0f})"
            note = m.get("note", "")
            if "gpu_precision" in note:
                line += "   [" + note[note.index("gpu_precision"):] + "]"
            print(line)


if __name__ == "__main__":
    main()
