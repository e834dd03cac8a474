"""PyTorch side of `diffuse bench train-mlp`: the same MLP denoiser and training step.

Model (mirrors src/nn/mlp.rs): sinusoidal embedding (dim 64) -> Linear(64, 256) -> SiLU ->
Linear(256, 256) = temb; h = x (2-D); 3 x [h = SiLU(Linear(h) + temb)]; out = Linear(256, 2).
Step: eps-prediction MSE on q_sample'd moons-like points, backward, clip_grad_norm_(1.0),
AdamW(lr 1e-3, wd 0.01, eps 1e-8), EMA update -- the same work diffuse's Trainer does.
Prints one JSON line per batch size, like the Rust side.
"""
import json
import math
import os
import sys
import time

import torch
from torch import nn

torch.manual_seed(0)
THREADS = int(os.environ.get("BENCH_THREADS", os.cpu_count()))
torch.set_num_threads(THREADS)


def embedding(t, dim=64):
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32) / half)
    a = t[:, None].float() * freqs[None]
    return torch.cat([a.sin(), a.cos()], dim=1)


class Mlp(nn.Module):
    def __init__(self, d=2, h=256, depth=3, e=64):
        super().__init__()
        self.e = e
        self.time_linear_1 = nn.Linear(e, h)
        self.time_linear_2 = nn.Linear(h, h)
        self.layers = nn.ModuleList([nn.Linear(d if i == 0 else h, h) for i in range(depth)])
        self.output = nn.Linear(h, d)

    def forward(self, x, t):
        temb = self.time_linear_2(nn.functional.silu(self.time_linear_1(embedding(t, self.e))))
        h = x
        for layer in self.layers:
            h = nn.functional.silu(layer(h) + temb)
        return self.output(h)


def bench(batch, seconds):
    model = Mlp()
    ema = [p.detach().clone() for p in model.parameters()]
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01, eps=1e-8)
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    alpha_bar = torch.cumprod(1 - betas, 0).float()

    def step(k):
        x0 = torch.randn(batch, 2)
        t = torch.randint(0, 1000, (batch,))
        eps = torch.randn(batch, 2)
        a = alpha_bar[t].sqrt()[:, None]
        s = (1 - alpha_bar[t]).sqrt()[:, None]
        x_t = a * x0 + s * eps
        loss = ((model(x_t, t) - eps) ** 2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        d = min(0.999, (1 + k) / (10 + k))
        with torch.no_grad():
            torch._foreach_lerp_(ema, list(model.parameters()), 1 - d)

    for k in range(20):
        step(k)
    start = time.perf_counter()
    n = 0
    while time.perf_counter() - start < seconds:
        step(n)
        n += 1
    ms = (time.perf_counter() - start) * 1e3 / n
    print(json.dumps({"impl": "pytorch", "batch": batch, "ms_per_step": ms, "steps": n,
                      "threads": THREADS, "torch": torch.__version__}))


if __name__ == "__main__":
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 3.0
    for b in [512, 64]:
        bench(b, seconds)
