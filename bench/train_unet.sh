#!/usr/bin/env bash
# Times the UNet training step (forward + backward + clip + AdamW + EMA) and one sampling forward
# of the bench/unet_default.json UNet2DModel in diffuse and in PyTorch/diffusers on this machine,
# in the same run, alternating ROUNDS times and keeping each side's best round (the machine may
# be shared), and prints both with the ratio, the FLOPs of one step and each side's GFLOP/s.
# torch + diffusers are installed from PyPI into bench/.venv if absent.
# Usage: bash bench/train_unet.sh [seconds per measurement] [threads]   (ROUNDS=3 by default)
# DIFFUSE_CMD overrides the diffuse command (run by bash, with SECONDS_PER, THREADS and CONFIG
# set; it must print the JSON lines of `diffuse bench train-unet`); the cargo build is then
# skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER=${1:-4}
THREADS=${2:-$(nproc)}
ROUNDS=${ROUNDS:-3}
CONFIG=bench/unet_default.json
export SECONDS_PER THREADS CONFIG
if [ ! -x bench/.venv/bin/python ] \
  || ! bench/.venv/bin/python -c "import torch, diffusers, safetensors" 2>/dev/null; then
  python3 -m venv bench/.venv
  bench/.venv/bin/pip install -q torch diffusers safetensors
fi
if [ -z "${DIFFUSE_CMD:-}" ]; then
  cargo build --release -q
  DIFFUSE_CMD="\"${CARGO_TARGET_DIR:-target}/release/diffuse\" bench train-unet --batch 64 \
--seconds \"\$SECONDS_PER\" --config \"\$CONFIG\""
fi
out=""
for round in $(seq "$ROUNDS"); do
  echo "round $round/$ROUNDS" >&2
  out+=$(RAYON_NUM_THREADS=$THREADS bash -c "$DIFFUSE_CMD" | grep '^{')$'\n'
  # The same network on burn's own ops (the "before" of the CPU kernels), unless BEFORE=0.
  if [ "${BEFORE:-1}" = 1 ]; then
    out+=$(RAYON_NUM_THREADS=$THREADS bash -c "$DIFFUSE_CMD --burn-kernels" | grep '^{')$'\n'
  fi
  out+=$(BENCH_THREADS=$THREADS bench/.venv/bin/python -W ignore bench/train_unet.py \
    "$SECONDS_PER" --config "$CONFIG" | grep '^{')$'\n'
done
echo "$out"
python3 bench/summarise_unet.py "$out" "threads = $THREADS"
