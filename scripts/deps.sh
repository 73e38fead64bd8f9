#!/usr/bin/env bash
# deps.sh - install what hpcrun's build, tests and benchmarks need, only what
# is missing: Debian packages, Go modules, the ONNX Runtime library from
# the npm package onnxruntime-node (version and sha256 pinned), and NVIDIA's
# ptxas from Debian's nvidia-cuda-toolkit .deb (trixie non-free; pinned; only
# the one binary is unpacked, nothing is installed) so the tests assemble the
# embedded PTX without a GPU. Idempotent and quick once done. Runs as root
# (CI) or with sudo.
set -euo pipefail
cd "$(dirname "$0")/.."

ORT_VERSION=1.24.3
ORT_LIB_SHA256=92ba8e44d31b80a34f5e805076a044122c3be1fffe0d88ed790de7267b0b2682
ORT_DIR=third_party/onnxruntime

PTXAS_DEB_URL=http://deb.debian.org/debian/pool/non-free/n/nvidia-cuda-toolkit/nvidia-cuda-toolkit_12.4.131~12.4.1-2_amd64.deb
PTXAS_SHA256=1173444a1de6fd2d0f183409c91ef7d05f66a55839dad8d8ab642b2596b79b0b # usr/bin/ptxas, CUDA 12.4.131
PTXAS=third_party/ptxas/ptxas

APT_PKGS=(python3-numpy python3-faiss python3-pil libturbojpeg0 libopenblas0-pthread nats-server clang-19 chromium fonts-dejavu-core ca-certificates curl)

log() { printf '[deps] %s\n' "$*"; }
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO=sudo

missing=()
for p in "${APT_PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
command -v npm >/dev/null || missing+=(npm)   # the image may bring its own node/npm
if [ "${#missing[@]}" -gt 0 ]; then
  log "apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  if ! $SUDO apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends "${missing[@]}" >/tmp/hpcrun-apt.log 2>&1; then
    $SUDO apt-get -o DPkg::Lock::Timeout=600 update -q >>/tmp/hpcrun-apt.log 2>&1
    $SUDO apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends "${missing[@]}" >>/tmp/hpcrun-apt.log 2>&1 \
      || { tail -n 30 /tmp/hpcrun-apt.log >&2; echo "[deps] ERROR: apt-get install ${missing[*]} failed" >&2; exit 1; }
  fi
fi

if ! go mod download 2>/tmp/hpcrun-gomod.log; then
  cat /tmp/hpcrun-gomod.log >&2; echo "[deps] ERROR: go mod download failed" >&2; exit 1
fi

lib="$ORT_DIR/libonnxruntime.so.1"
if [ ! -f "$lib" ] || ! echo "$ORT_LIB_SHA256  $lib" | sha256sum -c --status; then
  log "fetching libonnxruntime $ORT_VERSION (npm package onnxruntime-node)"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  (cd "$tmp" && npm pack --silent "onnxruntime-node@$ORT_VERSION" >/dev/null)
  tar -xzf "$tmp/onnxruntime-node-$ORT_VERSION.tgz" -C "$tmp" package/bin/napi-v6/linux/x64/libonnxruntime.so.1
  echo "$ORT_LIB_SHA256  $tmp/package/bin/napi-v6/linux/x64/libonnxruntime.so.1" | sha256sum -c --status \
    || { echo "[deps] ERROR: libonnxruntime.so.1 sha256 mismatch (want $ORT_LIB_SHA256)" >&2; exit 1; }
  mkdir -p "$ORT_DIR"
  install -m 0644 "$tmp/package/bin/napi-v6/linux/x64/libonnxruntime.so.1" "$lib.tmp" && mv "$lib.tmp" "$lib"
fi
if [ ! -x "$PTXAS" ] || ! echo "$PTXAS_SHA256  $PTXAS" | sha256sum -c --status; then
  log "fetching ptxas (CUDA 12.4, from Debian's nvidia-cuda-toolkit .deb; assembles the PTX in the tests)"
  ptmp=$(mktemp -d)
  if curl -fsSL -m 900 -o "$ptmp/tk.deb" "$PTXAS_DEB_URL" \
     && dpkg-deb --fsys-tarfile "$ptmp/tk.deb" | tar -x -C "$ptmp" ./usr/bin/ptxas \
     && echo "$PTXAS_SHA256  $ptmp/usr/bin/ptxas" | sha256sum -c --status; then
    mkdir -p "$(dirname "$PTXAS")"
    install -m 0755 "$ptmp/usr/bin/ptxas" "$PTXAS.tmp" && mv "$PTXAS.tmp" "$PTXAS"
  else
    # not fatal: TestPTXAssemble then skips (the PTX structure tests still run)
    log "WARNING: could not fetch ptxas from $PTXAS_DEB_URL; TestPTXAssemble will skip"
  fi
  rm -rf "$ptmp"
fi
log "ready: $(go version | cut -d' ' -f3), numpy $(/usr/bin/python3 -c 'import numpy; print(numpy.__version__)'), faiss $(/usr/bin/python3 -c 'import faiss; print(faiss.__version__)'), $lib$([ -x "$PTXAS" ] && echo ", $PTXAS")"
