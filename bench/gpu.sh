#!/usr/bin/env bash
# On a machine with an NVIDIA GPU, its driver and PyTorch (+ diffusers) installed, and no
# package registry: times the bench/unet_default.json UNet's training step and its sampling
# forward (batch 64) in the prebuilt diffuse binary (`diffuse bench train-unet --device cuda`)
# and in PyTorch eager on the same GPU (bench/train_unet.py --device cuda), alternating ROUNDS
# times and keeping each side's best, and prints both with the ratio PyTorch / diffuse, the
# GFLOP/s and the sampling throughput (images per second of a 50-step sampler). Nothing is
# built here: DIFFUSE_BIN is a binary built elsewhere with `cargo build --release --features
# cuda` (see README, "Devices"), PYTHON a Python with torch and diffusers.
# Usage: DIFFUSE_BIN=path/to/diffuse bash bench/gpu.sh [seconds per measurement] [cuda:N]
#        (ROUNDS=3, BATCH=64 by default)
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER=${1:-5}
DEVICE=${2:-cuda:0}
ROUNDS=${ROUNDS:-3}
BATCH=${BATCH:-64}
BIN=${DIFFUSE_BIN:-target/release/diffuse}
PYTHON=${PYTHON:-python3}
CONFIG=bench/unet_default.json
[ -x "$BIN" ] || { echo "no diffuse binary at $BIN (set DIFFUSE_BIN)" >&2; exit 1; }
"$PYTHON" -c "import torch, diffusers; assert torch.cuda.is_available(), 'torch sees no GPU'" \
  || { echo "$PYTHON needs torch (CUDA build) and diffusers, and a visible GPU" >&2; exit 1; }
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total \
  --format=csv,noheader >&2
out=""
for round in $(seq "$ROUNDS"); do
  echo "round $round/$ROUNDS" >&2
  out+=$("$BIN" bench train-unet --device "$DEVICE" --batch "$BATCH" --seconds "$SECONDS_PER" \
    --config "$CONFIG" | grep '^{')$'\n'
  out+=$("$PYTHON" -W ignore bench/train_unet.py "$SECONDS_PER" --batch "$BATCH" \
    --config "$CONFIG" --device "$DEVICE" | grep '^{')$'\n'
done
echo "$out"
python3 bench/summarise_unet.py "$out" "device = $DEVICE"
python3 - "$out" <<'PY'
import json, sys
rows = [json.loads(l) for l in sys.argv[1].splitlines() if l.strip()]
for impl in ["diffuse", "pytorch"]:
    fwd = [r for r in rows if r["impl"] == impl and r["what"] == "sample"]
    if fwd:
        r = min(fwd, key=lambda r: r["ms_per_forward"])
        print(f"{impl}: {r['batch'] / (50 * r['ms_per_forward'] / 1e3):.1f} images/s "
              f"with a 50-step sampler at batch {r['batch']} (network calls only)")
PY
