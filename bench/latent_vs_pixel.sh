#!/usr/bin/env bash
# Latent vs pixel diffusion on Fashion-MNIST (SPEC §7), cost and quality side by side:
#   1. trains the VAE (28x28 -> 4x7x7) unless $OUT/vae exists;
#   2. calibrates: one-step runs of the pixel UNet and the latent UNet, timed by
#      `diffuse bench runs` in one process (alternating rounds), give each model's step time;
#   3. trains the pixel UNet for PIXEL_STEPS steps and the latent UNet for as many steps as take
#      the same training time at the calibrated step times (equal training time; the VAE's own
#      training time is reported beside it);
#   4. `diffuse bench runs` on the trained pair: sampling cost per image (network calls + VAE
#      decode) and training step time, in one run;
#   5. `diffuse eval` of both: Fréchet distance in the in-project classifier's features, and
#      the classifier's accuracy on class-conditional samples; sample grids.
# Same width: both UNets have WIDTH channels at every level and LAYERS resnets per level; the
# pixel UNet runs at 28, 14 and 7 pixels, the latent UNet at 7 (a 7x7 latent allows one level).
# Usage: bash bench/latent_vs_pixel.sh   (env: OUT, WIDTH, LAYERS, VAE_CHANNELS, VAE_STEPS,
#        PIXEL_STEPS, DIFFUSE_BIN,
#        SAMPLER, SAMPLER_STEPS, EVAL_N, EVAL_SEEDS, SEED, THREADS)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/latent_vs_pixel}
WIDTH=${WIDTH:-32}
LAYERS=${LAYERS:-1}
VAE_CHANNELS=${VAE_CHANNELS:-32,64,64}
VAE_STEPS=${VAE_STEPS:-2000}
PIXEL_STEPS=${PIXEL_STEPS:-300}
SAMPLER=${SAMPLER:-ddim}
SAMPLER_STEPS=${SAMPLER_STEPS:-50}
EVAL_N=${EVAL_N:-500}
EVAL_SEEDS=${EVAL_SEEDS:-2}
SEED=${SEED:-0}
export RAYON_NUM_THREADS=${THREADS:-$(nproc)}
# DIFFUSE_BIN: a prebuilt diffuse binary (the build is then skipped).
if [ -z "${DIFFUSE_BIN:-}" ]; then
  cargo build --release -q
  DIFFUSE_BIN="${CARGO_TARGET_DIR:-target}/release/diffuse"
fi
BIN=$DIFFUSE_BIN
mkdir -p "$OUT"
LOG="$OUT/log.txt"
: >"$LOG"

# Prints the seconds of a `diffuse train` run from its closing line.
train_seconds() { grep -o 'in [0-9.]* s' "$1" | tail -1 | tr -dc '0-9.'; }

pixel_flags=(--data fashion-mnist --block-out-channels "$WIDTH,$WIDTH,$WIDTH"
  --layers-per-block "$LAYERS" --seed "$SEED" --no-preview --quiet)
latent_flags=(--latent --vae "$OUT/vae" --data fashion-mnist --block-out-channels "$WIDTH"
  --attention-levels 0 --layers-per-block "$LAYERS" --seed "$SEED" --no-preview --quiet)

if [ ! -f "$OUT/vae/model.safetensors" ]; then
  "$BIN" train --model vae --data fashion-mnist --block-out-channels "$VAE_CHANNELS" \
    --steps "$VAE_STEPS" --seed "$SEED" \
    --no-preview --quiet --out "$OUT/vae" 2>"$OUT/vae.log"
fi
echo "vae ($VAE_CHANNELS): $VAE_STEPS steps in $(train_seconds "$OUT/vae.log") s" | tee -a "$LOG"

# Calibration: step times of the two models, side by side in one process.
rm -rf "$OUT/calib"
"$BIN" train "${pixel_flags[@]}" --steps 1 --out "$OUT/calib/pixel" 2>/dev/null
"$BIN" train "${latent_flags[@]}" --steps 1 --out "$OUT/calib/latent" 2>/dev/null
calib=$("$BIN" bench runs --run "$OUT/calib/pixel" --run "$OUT/calib/latent" --n 16 \
  --sampler ddim --steps 2 --rounds 2 --seconds 10 | grep best_of_rounds)
latent_steps=$(python3 - "$calib" "$PIXEL_STEPS" <<'PY'
import json, sys
pix, lat = [json.loads(l) for l in sys.argv[1].splitlines()]
print(round(int(sys.argv[2]) * pix["ms_per_train_step"] / lat["ms_per_train_step"]))
PY
)
echo "calibration: $calib" >>"$LOG"
echo "pixel: $PIXEL_STEPS steps; latent: $latent_steps steps (equal training time)" | tee -a "$LOG"

for kind in pixel latent; do
  if [ "$kind" = pixel ]; then steps=$PIXEL_STEPS; flags=("${pixel_flags[@]}");
  else steps=$latent_steps; flags=("${latent_flags[@]}"); fi
  if [ ! -f "$OUT/$kind/model.safetensors" ]; then
    "$BIN" train "${flags[@]}" --steps "$steps" --out "$OUT/$kind" 2>"$OUT/$kind.log"
  fi
  echo "$kind: trained in $(train_seconds "$OUT/$kind.log") s" | tee -a "$LOG"
done

"$BIN" bench runs --run "$OUT/pixel" --run "$OUT/latent" --n 64 --sampler "$SAMPLER" \
  --steps "$SAMPLER_STEPS" --rounds 3 | tee -a "$LOG"

for kind in pixel latent; do
  "$BIN" eval --run "$OUT/$kind" --sampler "$SAMPLER" --steps "$SAMPLER_STEPS" --n "$EVAL_N" \
    --seeds "$EVAL_SEEDS" --bpd-images 0 --out "$OUT/$kind/eval_bench.json" 2>&1 \
    | tee -a "$LOG"
  "$BIN" sample --run "$OUT/$kind" --sampler "$SAMPLER" --steps "$SAMPLER_STEPS" --n 60 \
    --out "$OUT/$kind.png" 2>&1 | tail -1
done
echo "log: $LOG"
