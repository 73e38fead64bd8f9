#!/usr/bin/env bash
# bench-embed.sh - the embed stage's images/s beside pure ONNX Runtime
# inference on the same model, batch and threads, in the same run
# (`hpcrun bench --ops embed`, which reports both ops: embed and ort).
# The goal is embed >= 90% of ort: decoding must not be the bottleneck.
#   NQ       images (default 256)
#   BATCH    batch size (default 32)
#   MODEL    an ONNX image encoder, e.g. an export of open_clip's ViT-B/32
#            visual tower (default: a ViT-B/32-shaped encoder with seeded
#            weights that hpcrun writes itself)
#   BACKEND  runtime.backend: auto | cpu | cuda (default auto)
# Extra arguments go to `hpcrun bench` (e.g. --threads 8).
set -euo pipefail
cd "$(dirname "$0")/.."
export HPCRUN_BENCH_EMBED_BATCH="${BATCH:-32}"
export HPCRUN_BENCH_EMBED_BACKEND="${BACKEND:-auto}"
if [ -n "${MODEL:-}" ]; then export HPCRUN_BENCH_EMBED_MODEL="$MODEL"; fi
exec bin/hpcrun bench --ops embed --nq "${NQ:-256}" --dim 512 --json bench-embed.json "$@"
