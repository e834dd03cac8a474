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
python3 - "$out" "$THREADS" <<'PY'
import json, sys
rows = [json.loads(l) for l in sys.argv[1].splitlines() if l.strip()]
def side(r):
    return "diffuse-burn-ops" if r.get("kernels") == "burn" else r["impl"]
def ms(r):
    return r["ms_per_step"] if r["what"] == "train" else r["ms_per_forward"]
best = {}
for r in rows:
    k = (side(r), r["what"], r["batch"])
    if k not in best or ms(r) < ms(best[k]):
        best[k] = r
nan = float("nan")
print(f"threads = {sys.argv[2]}, best of rounds; ms per train step / per sampling forward")
print(f"{'what':>17} {'batch':>5} {'diffuse ms':>10} {'pytorch ms':>10} {'pt/diffuse':>10} "
      f"{'diffuse MB':>10} {'pytorch MB':>10} {'gflop':>7} {'diffuse GF/s':>12} {'pytorch GF/s':>12}")
for what, batch in sorted({(r["what"], r["batch"]) for r in rows}, key=lambda k: (k[0] != "train", -k[1])):
  for label in ["diffuse", "diffuse-burn-ops"]:
    d, p = best.get((label, what, batch)), best.get(("pytorch", what, batch))
    if d is None:
        continue
    d_ms, p_ms = (ms(d) if d else nan), (ms(p) if p else nan)
    # The same architecture does the same work: pytorch's FLOP count (FlopCounterMode) is used
    # for both sides, diffuse's own only when there is no pytorch row.
    gflop = (p or d or {}).get("gflop", nan)
    print(f"{what + (' (burn ops)' if label != 'diffuse' else ''):>17} {batch:>5} {d_ms:>10.1f} {p_ms:>10.1f} {p_ms / d_ms:>10.2f} "
          f"{(d or {}).get('peak_rss_mb', nan):>10.0f} {(p or {}).get('peak_rss_mb', nan):>10.0f} "
          f"{gflop:>7.2f} {gflop / d_ms * 1e3:>12.1f} {gflop / p_ms * 1e3:>12.1f}")
PY
