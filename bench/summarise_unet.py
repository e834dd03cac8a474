"""Summarises the JSON lines of `diffuse bench train-unet` and bench/train_unet.py (argv[1]):
for each side the best round of each measurement, side by side with the ratio PyTorch / diffuse,
peak memory (RSS; on a GPU also the device's peak) and GFLOP/s. argv[2] is the heading.
Used by bench/train_unet.sh (CPU) and bench/gpu.sh (CUDA)."""
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
print(f"{sys.argv[2]}, best of rounds; ms per train step / per sampling forward")
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
gpu = [r for r in best.values() if r.get("gpu_peak_mb") is not None]
for r in gpu:
    print(f"{r['impl']} {r['what']}: GPU peak {r['gpu_peak_mb']:.0f} MiB")
