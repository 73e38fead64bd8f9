#!/usr/bin/python3
"""Naive numpy reference for the sims and prune stages (stages/sims.go, stages/prune.go).

Usage: sims_ref.py SPEC.json

SPEC.json:
  {"out": DIR,
   "base": {"name": "laion", "emb": [shard .npy, ...], "ids": ids.npy (int64, base row order)},
   "keep": dedup keep_ids.npy or null,
   "reference": {"name": ..., "emb": [...]},
   "evals": [{"name": ..., "emb": [...]}, ...],        # embeddings layout: ids = row numbers
   "k": 10, "worst": true, "candidates": 20000, "near_far_sizes": [5]}

Everything in float64 from the stored float16/float32 values, the obvious way: the full similarity
matrix, a full sort per row (ties by base row), max over axes. Writes, under DIR, the same layout as
the stages (sims/<base>/<eval>/topk_*.npy, bottomk_*.npy, maxsim/<base>/<eval>/*.npy,
prune/<eval>/{prune,keep}_ids.npy, prune/combined/..., prune/subsets/{near,far}_<eval>_<n>.npy,
prune/<eval>/thresholds.npy, prune/<eval>/approx_prune_ids.npy) plus S/<eval>.npy (float64 [q, n]:
similarity to every kept base row), S/<eval>_ids.npy (the base ids of its columns),
S/<eval>_thr.npy and summary.json (counts, approx misses).
"""
import json
import os
import sys

import numpy as np


def load(files):
    return np.concatenate([np.load(f).astype(np.float64) for f in files], axis=0)


def save(path, a):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    np.save(path, a)


def order(S, smallest):
    """Per row: column order by value (desc, or asc), ties by column (= base row)."""
    cols = np.arange(S.shape[1])
    key = S if smallest else -S
    return np.array([np.lexsort((cols, key[i])) for i in range(S.shape[0])], dtype=np.int64).reshape(S.shape[0], -1)


def main():
    spec = json.load(open(sys.argv[1]))
    out = spec["out"]
    B = load(spec["base"]["emb"])
    ids = np.load(spec["base"]["ids"]).astype(np.int64)
    if spec.get("keep"):
        keep = np.isin(ids, np.load(spec["keep"]))
        B, ids = B[keep], ids[keep]
    R = load(spec["reference"]["emb"])
    k = spec["k"]
    bname = spec["base"]["name"]
    summary = {"base_rows": int(len(ids))}
    pruned_any = np.zeros(len(ids), bool)
    approx_all = set()
    per_eval = {}
    for ev in spec["evals"]:
        name = ev["name"]
        E = load(ev["emb"])
        S = E @ B.T
        save(f"{out}/S/{name}.npy", S)
        save(f"{out}/S/{name}_ids.npy", ids)
        # sims: top-k / bottom-k, padded with -1 / ∓inf
        for stem, smallest in (("topk", False), ("bottomk", True)):
            if stem == "bottomk" and not spec["worst"]:
                continue
            o = order(S, smallest)[:, :k]
            v = np.take_along_axis(S, o, axis=1)
            sims = np.full((len(E), k), np.inf if smallest else -np.inf, np.float32)
            oid = np.full((len(E), k), -1, np.int64)
            sims[:, : o.shape[1]] = v
            oid[:, : o.shape[1]] = ids[o]
            save(f"{out}/sims/{bname}/{name}/{stem}_sims.npy", sims)
            save(f"{out}/sims/{bname}/{name}/{stem}_ids.npy", oid)
        # maxsim: per base row, first argmax over eval rows
        save(f"{out}/maxsim/{bname}/{name}/ids.npy", ids)
        save(f"{out}/maxsim/{bname}/{name}/sims.npy", S.max(axis=0).astype(np.float32))
        save(f"{out}/maxsim/{bname}/{name}/argmax.npy", S.argmax(axis=0).astype(np.int64))
        # prune: exact rule over all base rows
        thr = (E @ R.T).max(axis=1)
        save(f"{out}/S/{name}_thr.npy", thr)
        save(f"{out}/prune/{name}/thresholds.npy", thr.astype(np.float32))
        pr = (S > thr[:, None]).any(axis=0)
        pruned_any |= pr
        save(f"{out}/prune/{name}/prune_ids.npy", np.sort(ids[pr]))
        save(f"{out}/prune/{name}/keep_ids.npy", np.sort(ids[~pr]))
        # the paper's approximate rule: top-candidates, then threshold
        o = order(S, False)[:, : spec["candidates"]]
        approx = set()
        for i in range(len(E)):
            hit = o[i][S[i, o[i]] > thr[i]]
            approx.update(ids[hit].tolist())
        approx_all |= approx
        save(f"{out}/prune/{name}/approx_prune_ids.npy", np.array(sorted(approx), np.int64))
        per_eval[name] = {"pruned": int(pr.sum()), "kept": int((~pr).sum()), "approx_pruned": len(approx),
                          "approx_missed": len(set(ids[pr].tolist()) - approx)}
        per_eval[name]["maxsim"] = S.max(axis=0)
    summary["combined"] = {"pruned": int(pruned_any.sum()), "kept": int((~pruned_any).sum()),
                           "approx_pruned": len(approx_all),
                           "approx_missed": len(set(ids[pruned_any].tolist()) - approx_all)}
    save(f"{out}/prune/combined/prune_ids.npy", np.sort(ids[pruned_any]))
    save(f"{out}/prune/combined/keep_ids.npy", np.sort(ids[~pruned_any]))
    # near/far among the combined kept rows, ties by base row
    kept_rows = np.nonzero(~pruned_any)[0]
    for ev in spec["evals"]:
        name = ev["name"]
        m = per_eval[name].pop("maxsim")[kept_rows]
        for side, key in (("near", -m), ("far", m)):
            o = np.lexsort((kept_rows, key))
            for n in spec["near_far_sizes"]:
                save(f"{out}/prune/subsets/{side}_{name}_{n}.npy", np.sort(ids[kept_rows[o[:n]]]))
    summary["evals"] = per_eval
    json.dump(summary, open(f"{out}/summary.json", "w"), indent=1)


if __name__ == "__main__":
    main()
