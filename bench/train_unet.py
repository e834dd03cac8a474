"""PyTorch side of `diffuse bench train-unet`: the same diffusers UNet2DModel and training step.

The architecture is bench/unet_default.json (diffusers' config format, the single source shared
with the Rust side), built by `diffusers.UNet2DModel.from_config` with seed 0.

- train: one step on a batch of 1x28x28 images in [-1, 1] (random, seeded): class labels 0..9
  with 10% replaced by the null class 10 (classifier-free-guidance dropout), t ~ U{0..T-1},
  eps ~ N(0, I), x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps on the linear schedule
  (beta 1e-4..0.02, T = 1000), eps-prediction MSE, backward, NaN guard, clip_grad_norm_(1.0),
  AdamW(lr 2e-4, wd 0.01, eps 1e-8), EMA (decay 0.999 with warmup) of a copy of the parameters
  -- the same work diffuse's Trainer does. Median ms per step.
- sample: one forward in torch.no_grad() at the batch size (what one sampler step costs).
  Median ms per forward.

Each part warms up 2 iterations, then runs until `seconds` have elapsed (at least 3 iterations).
FLOPs (torch.utils.flop_counter: forward + backward for train, forward for sample) are counted
on one extra, untimed iteration. peak_rss_mb is the process's peak RSS (ru_maxrss) after the
part; it only grows, so with --what both the sample part runs first and each part's figure is
its own peak (training needs more memory than inference). base_rss_mb is the peak after
importing torch and building the model, before either part.

Prints one JSON line per part, like the Rust side:
  {"impl": "pytorch", "what": "train", "batch": 64, "threads": 2, "ms_per_step": ..., ...}
  {"impl": "pytorch", "what": "sample", "batch": 64, "threads": 2, "ms_per_forward": ..., ...}

With --device cuda (bench/gpu.sh) the model and every tensor live on the GPU (the random
batches are drawn on the CPU from the same seeded generator, then moved), each timed call ends
with torch.cuda.synchronize(), and gpu_peak_mb is torch.cuda.max_memory_allocated().

Usage: train_unet.py [seconds] [--batch 64] [--what train|sample|both] [--config PATH]
                     [--device cpu|cuda|cuda:N]
Threads: BENCH_THREADS (default: all cores).
"""
import argparse
import json
import os
import resource
import statistics
import sys
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

import diffusers

THREADS = int(os.environ.get("BENCH_THREADS", os.cpu_count()))
DEVICE = torch.device("cpu")  # set from --device in main()
torch.set_num_threads(THREADS)

NUM_TRAIN_TIMESTEPS = 1000
NUM_CLASSES = 10  # labels 0..9; label NUM_CLASSES is the null (unconditional) class
NULL_LABEL_PROB = 0.1
WARMUP = 2
MIN_ITERS = 3


def peak_rss_mb():
    # ru_maxrss is in KiB on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def timed(fn, seconds):
    """Runs fn WARMUP times, then until `seconds` elapsed (at least MIN_ITERS); ms per call."""
    for _ in range(WARMUP):
        fn()
    sync()
    times = []
    start = time.perf_counter()
    while len(times) < MIN_ITERS or time.perf_counter() - start < seconds:
        t0 = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - t0) * 1e3)
    return times


def sync():
    if DEVICE.type == "cuda":
        torch.cuda.synchronize(DEVICE)


def gpu_peak_mb():
    return torch.cuda.max_memory_allocated(DEVICE) / 2**20 if DEVICE.type == "cuda" else None


def count_gflop(fn):
    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return counter.get_total_flops() / 1e9


def build_model(config_path):
    with open(config_path) as f:
        config = json.load(f)
    torch.manual_seed(0)
    model = diffusers.UNet2DModel.from_config(config)
    return model, config


def random_batch(gen, batch, config):
    """x_0 in [-1, 1], labels with NULL_LABEL_PROB of them replaced by the null class."""
    size = config["sample_size"]
    x0 = torch.rand(batch, config["in_channels"], size, size, generator=gen) * 2 - 1
    labels = torch.randint(0, NUM_CLASSES, (batch,), generator=gen)
    drop = torch.rand(batch, generator=gen) < NULL_LABEL_PROB
    labels = torch.where(drop, torch.full_like(labels, NUM_CLASSES), labels)
    return x0.to(DEVICE), labels.to(DEVICE)


def train_part(model, config, batch, seconds):
    gen = torch.Generator().manual_seed(1)
    params = list(model.parameters())
    ema = [p.detach().clone() for p in params]
    opt = torch.optim.AdamW(params, lr=2e-4, weight_decay=0.01, eps=1e-8)
    betas = torch.linspace(1e-4, 0.02, NUM_TRAIN_TIMESTEPS, dtype=torch.float64)
    alpha_bar = torch.cumprod(1 - betas, 0).float().to(DEVICE)
    step_count = [0]

    def forward_backward():
        x0, labels = random_batch(gen, batch, config)
        t = torch.randint(0, NUM_TRAIN_TIMESTEPS, (batch,), generator=gen).to(DEVICE)
        eps = torch.randn(x0.shape, generator=gen).to(DEVICE)
        a = alpha_bar[t].sqrt().view(-1, 1, 1, 1)
        s = (1 - alpha_bar[t]).sqrt().view(-1, 1, 1, 1)
        x_t = a * x0 + s * eps
        eps_hat = model(x_t, t, class_labels=labels).sample
        loss = torch.nn.functional.mse_loss(eps_hat, eps)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        return loss

    def step():
        loss = forward_backward()
        if not torch.isfinite(loss):
            raise SystemExit(f"non-finite loss {loss.item()} at step {step_count[0]}")
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        k = step_count[0]
        decay = min(0.999, (1 + k) / (10 + k))
        with torch.no_grad():
            torch._foreach_lerp_(ema, params, 1 - decay)
        step_count[0] += 1

    model.train()
    times = timed(step, seconds)
    rss = peak_rss_mb()
    gflop = count_gflop(forward_backward)
    return times, rss, gflop


def sample_part(model, config, batch, seconds):
    gen = torch.Generator().manual_seed(2)
    size = config["sample_size"]
    x = torch.randn(batch, config["in_channels"], size, size, generator=gen).to(DEVICE)
    labels = torch.randint(0, NUM_CLASSES + 1, (batch,), generator=gen).to(DEVICE)
    t = torch.full((batch,), 500, dtype=torch.long, device=DEVICE)  # one sampler step: same t for the batch

    def forward():
        with torch.no_grad():
            return model(x, t, class_labels=labels).sample

    model.eval()
    times = timed(forward, seconds)
    rss = peak_rss_mb()
    gflop = count_gflop(forward)
    return times, rss, gflop


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("seconds", nargs="?", type=float, default=3.0,
                        help="timed seconds per part (default 3)")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--what", choices=["train", "sample", "both"], default="both")
    parser.add_argument("--config", default=os.path.join(here, "unet_default.json"))
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    global DEVICE
    DEVICE = torch.device(args.device)

    model, config = build_model(args.config)
    model.to(DEVICE)
    n_params = sum(p.numel() for p in model.parameters())
    base_rss = peak_rss_mb()
    parts = ["sample", "train"] if args.what == "both" else [args.what]
    for what in parts:
        run = train_part if what == "train" else sample_part
        times, rss, gflop = run(model, config, args.batch, args.seconds)
        key = "ms_per_step" if what == "train" else "ms_per_forward"
        print(json.dumps({
            "impl": "pytorch", "what": what, "batch": args.batch, "threads": THREADS,
            key: round(statistics.median(times), 3),
            "ms_min": round(min(times), 3), "ms_max": round(max(times), 3), "iters": len(times),
            "peak_rss_mb": round(rss, 1), "base_rss_mb": round(base_rss, 1),
            "gflop": round(gflop, 3), "params": n_params,
            "device": args.device, "gpu_peak_mb": gpu_peak_mb(),
            "torch": torch.__version__, "diffusers": diffusers.__version__,
        }), flush=True)


if __name__ == "__main__":
    sys.exit(main())
