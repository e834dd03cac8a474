#!/usr/bin/env bash
# Times sampling N 2-D points (default 4000) from the main job's MLP with DDIM-50 and DDPM-1000
# in diffuse (`diffuse bench sample-mlp`) and the same loop in PyTorch (bench/sample_mlp.py) on
# this machine, in the same run, alternating ROUNDS times and keeping each side's best round
# (the machine may be shared), and prints both with the ratio PyTorch / diffuse and each
# side's peak RSS. PyTorch is installed from PyPI into bench/.venv if absent.
# Usage: bash bench/sample_mlp.sh [N] [threads]   (ROUNDS=3 by default)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-4000}
THREADS=${2:-$(nproc)}
ROUNDS=${ROUNDS:-3}
if [ ! -x bench/.venv/bin/python ] || ! bench/.venv/bin/python -c "import torch" 2>/dev/null; then
  python3 -m venv bench/.venv
  bench/.venv/bin/pip install -q torch
fi
cargo build --release -q
BIN="${CARGO_TARGET_DIR:-target}/release/diffuse"
rss() { # runs "$@", appends "peak_rss_mb" (GNU time's maximum resident set) to its JSON lines
  local tmp; tmp=$(mktemp)
  /usr/bin/time -f '%M' -o "$tmp" "$@" | sed "s/}\$/, \"peak_rss_mb\": PEAK}/" > "$tmp.out"
  sed "s/PEAK/$(( $(tail -1 "$tmp") / 1024 ))/" "$tmp.out"; rm -f "$tmp" "$tmp.out"
}
out=""
for round in $(seq "$ROUNDS"); do
  echo "round $round/$ROUNDS" >&2
  out+=$(RAYON_NUM_THREADS=$THREADS rss "$BIN" bench sample-mlp --n "$N")$'\n'
  out+=$(BENCH_THREADS=$THREADS rss bench/.venv/bin/python -W ignore bench/sample_mlp.py "$N")$'\n'
done
echo "$out"
python3 - "$out" "$THREADS" <<'PY'
import json, sys
rows = [json.loads(l) for l in sys.argv[1].splitlines() if l.strip().startswith("{")]
best = {}
for r in rows:
    k = (r["impl"], r["sampler"])
    if k not in best or r["seconds"] < best[k]["seconds"]:
        best[k] = r
print(f"threads = {sys.argv[2]}, n = {rows[0]['n']}, best of rounds (seconds per full sampling run)")
print(f"{'sampler':>10} {'diffuse s':>10} {'pytorch s':>10} {'pt/diffuse':>10} {'diffuse MB':>10} {'pytorch MB':>10}")
for name, steps in [("ddim", 50), ("ddpm", 1000)]:
    d, p = best[("diffuse", name)], best[("pytorch", name)]
    print(f"{name + '-' + str(steps):>10} {d['seconds']:>10.3f} {p['seconds']:>10.3f} "
          f"{p['seconds'] / d['seconds']:>10.2f} {d['peak_rss_mb']:>10} {p['peak_rss_mb']:>10}")
PY
