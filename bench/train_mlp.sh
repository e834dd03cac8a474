#!/usr/bin/env bash
# Times the MLP training step (forward + backward + clip + AdamW + EMA) in diffuse and in
# PyTorch on this machine, in the same run, and prints both with the ratio.
# PyTorch is installed from PyPI into bench/.venv if absent. Usage: bash bench/train_mlp.sh [seconds]
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER=${1:-5}
if [ ! -x bench/.venv/bin/python ] || ! bench/.venv/bin/python -c "import torch" 2>/dev/null; then
  python3 -m venv bench/.venv
  bench/.venv/bin/pip install -q torch
fi
cargo build --release -q
rust=$(./target/release/diffuse bench train-mlp --seconds "$SECONDS_PER" --burn)
torch=$(bench/.venv/bin/python bench/train_mlp.py "$SECONDS_PER")
echo "$rust"
echo "$torch"
python3 - "$rust" "$torch" <<'PY'
import json, sys
rows = [json.loads(l) for l in (sys.argv[1] + "\n" + sys.argv[2]).splitlines() if l.strip()]
ms = {(r["impl"], r["batch"]): r["ms_per_step"] for r in rows}
print(f"{'batch':>6} {'diffuse ms':>11} {'burn-autodiff ms':>17} {'pytorch ms':>11} {'pytorch/diffuse':>16}")
for b in sorted({r["batch"] for r in rows}, reverse=True):
    d, p, a = ms.get(("diffuse", b)), ms.get(("pytorch", b)), ms.get(("burn-autodiff", b))
    print(f"{b:>6} {d:>11.2f} {a if a is not None else float('nan'):>17.2f} {p:>11.2f} {p / d:>16.2f}")
PY
