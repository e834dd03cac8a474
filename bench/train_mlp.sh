#!/usr/bin/env bash
# Times the MLP training step (forward + backward + clip + AdamW + EMA) in diffuse and in
# PyTorch on this machine, in the same run, alternating ROUNDS times and keeping each side's
# best round (the machine may be shared), and prints both with the ratio.
# PyTorch is installed from PyPI into bench/.venv if absent.
# Usage: bash bench/train_mlp.sh [seconds per measurement] [threads]   (ROUNDS=3 by default)
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER=${1:-4}
THREADS=${2:-$(nproc)}
ROUNDS=${ROUNDS:-3}
if [ ! -x bench/.venv/bin/python ] || ! bench/.venv/bin/python -c "import torch" 2>/dev/null; then
  python3 -m venv bench/.venv
  bench/.venv/bin/pip install -q torch
fi
cargo build --release -q
out=""
for _ in $(seq "$ROUNDS"); do
  out+=$(RAYON_NUM_THREADS=$THREADS ./target/release/diffuse bench train-mlp --seconds "$SECONDS_PER" --burn)$'\n'
  out+=$(BENCH_THREADS=$THREADS bench/.venv/bin/python -W ignore bench/train_mlp.py "$SECONDS_PER" 2>/dev/null)$'\n'
done
echo "$out"
python3 - "$out" "$THREADS" <<'PY'
import json, sys
rows = [json.loads(l) for l in sys.argv[1].splitlines() if l.strip()]
best = {}
for r in rows:
    k = (r["impl"], r["batch"])
    best[k] = min(best.get(k, float("inf")), r["ms_per_step"])
print(f"threads = {sys.argv[2]}, best of rounds (ms per step)")
print(f"{'batch':>6} {'diffuse':>9} {'burn-autodiff':>14} {'pytorch':>9} {'pytorch/diffuse':>16}")
for b in sorted({r["batch"] for r in rows}, reverse=True):
    d, p = best[("diffuse", b)], best[("pytorch", b)]
    a = best.get(("burn-autodiff", b), float("nan"))
    print(f"{b:>6} {d:>9.2f} {a:>14.2f} {p:>9.2f} {p / d:>16.2f}")
PY
