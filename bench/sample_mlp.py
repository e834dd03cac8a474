"""PyTorch side of `diffuse bench sample-mlp`: the same MLP (bench/train_mlp.py's Mlp, seeded
initialisation) sampled from x_T ~ N(0, I) for N 2-D points with DDIM-50 (eta = 0, trailing
timesteps, as diffuse's default grid) and ancestral DDPM-1000 (fixed_small variance), eps
prediction, linear schedule T = 1000, under torch.inference_mode(): the loop a user writes.
Prints one JSON line per sampler, like the Rust side.
"""
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(__file__))
from train_mlp import Mlp, THREADS  # noqa: E402  (sets the thread count)

N = int(sys.argv[1]) if len(sys.argv) > 1 else 4000
T = 1000
betas = torch.linspace(1e-4, 0.02, T, dtype=torch.float64)
alpha_bar = torch.cumprod(1 - betas, 0)


def ddim(model, steps):
    # Trailing grid: t_i = T - i T / steps (1-based math step), last one to alpha_bar = 1.
    ts = [T - i * T // steps for i in range(steps)]
    x = torch.randn(N, 2)
    for i, t in enumerate(ts):
        a_t = alpha_bar[t - 1].item()
        a_prev = alpha_bar[ts[i + 1] - 1].item() if i + 1 < steps else 1.0
        eps = model(x, torch.full((N,), t - 1))
        x0 = (x - (1 - a_t) ** 0.5 * eps) / a_t ** 0.5
        x = a_prev ** 0.5 * x0 + (1 - a_prev) ** 0.5 * eps
    return x


def ddpm(model):
    x = torch.randn(N, 2)
    for i in reversed(range(T)):
        a_t = alpha_bar[i].item()
        a_prev = alpha_bar[i - 1].item() if i > 0 else 1.0
        beta = betas[i].item()
        eps = model(x, torch.full((N,), i))
        mean = (x - beta / (1 - a_t) ** 0.5 * eps) / (1 - beta) ** 0.5
        if i > 0:
            var = beta * (1 - a_prev) / (1 - a_t)
            x = mean + var ** 0.5 * torch.randn(N, 2)
        else:
            x = mean
    return x


def main():
    model = Mlp().eval()
    with torch.inference_mode():
        for name, steps, f in [("ddim", 50, lambda: ddim(model, 50)), ("ddpm", 1000, lambda: ddpm(model))]:
            start = time.perf_counter()
            x = f()
            assert torch.isfinite(x).all()
            print(json.dumps({"impl": "pytorch", "what": "sample-mlp", "sampler": name, "steps": steps,
                              "n": N, "seconds": time.perf_counter() - start, "threads": THREADS,
                              "torch": torch.__version__}))


if __name__ == "__main__":
    main()
