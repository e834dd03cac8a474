#!/usr/bin/env python3
"""Generator of the expected values in src/sample/grid/sigma/tests.rs.

A float64 replica, in plain Python (no numpy), of diffusers 0.42.1's
EulerDiscreteScheduler.set_timesteps and DPMSolverMultistepScheduler.set_timesteps for the
linear schedule (betas 1e-4..0.02, T = 1000), following their code line by line: np.linspace,
np.interp, `_sigma_to_t`, `_convert_to_karras`, `_convert_to_exponential`. Run it and paste the
printed lists into the tests (each case prints `name: timesteps / sigmas`).
"""
import math

T = 1000
betas = [1e-4 + (0.02 - 1e-4) * i / (T - 1) for i in range(T)]
alphas_cumprod = []
p = 1.0
for b in betas:
    p *= 1.0 - b
    alphas_cumprod.append(p)
table = [math.sqrt((1 - a) / a) for a in alphas_cumprod]  # sigma(t), ascending in t
log_sigmas = [math.log(s) for s in table]


def linspace(a, b, n):
    # np.linspace: start + step * i, the last value exactly `b`.
    if n == 1:
        return [a]
    step = (b - a) / (n - 1)
    return [a + step * i for i in range(n - 1)] + [b]


def interp(x, xp, fp):
    i = min(int(math.floor(x)), len(xp) - 2)
    w = (x - xp[i]) / (xp[i + 1] - xp[i])
    return fp[i] + w * (fp[i + 1] - fp[i])


def sigma_to_t(sigma):
    log_sigma = math.log(max(sigma, 1e-10))
    dists = [log_sigma - l for l in log_sigmas]
    # cumsum(dists >= 0).argmax(): the last index with a non-negative distance.
    low = max((i for i, d in enumerate(dists) if d >= 0), default=0)
    low = min(low, len(log_sigmas) - 2)
    high = low + 1
    w = (log_sigmas[low] - log_sigma) / (log_sigmas[low] - log_sigmas[high])
    w = min(max(w, 0.0), 1.0)
    return (1 - w) * low + w * high


def karras(sigma_min, sigma_max, n, rho=7.0):
    ramp = linspace(0, 1, n)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return [(hi + r * (lo - hi)) ** rho for r in ramp]


def exponential(sigma_min, sigma_max, n):
    return [math.exp(v) for v in linspace(math.log(sigma_max), math.log(sigma_min), n)]


def euler(n, spacing="linspace", steps_offset=0, interpolation="linear", conversion=None,
          sigma_min=None, sigma_max=None, final="zero"):
    if spacing == "linspace":
        ts = linspace(0, T - 1, n)[::-1]
    elif spacing == "leading":
        ratio = T // n
        ts = [float(round(i * ratio) + steps_offset) for i in range(n)][::-1]
    else:
        step = T / n
        ts = [round(T - k * step) - 1.0 for k in range(n)]
    if interpolation == "linear":
        sig = [interp(t, list(range(T)), table) for t in ts]
    else:
        sig = [math.exp(v) for v in linspace(math.log(table[-1]), math.log(table[0]), n + 1)]
    if conversion:
        smin = sigma_min if sigma_min is not None else sig[-1]
        smax = sigma_max if sigma_max is not None else sig[0]
        sig = conversion(smin, smax, n)
        ts = [sigma_to_t(s) for s in sig]
    last = 0.0 if final == "zero" else table[0]
    if interpolation == "log_linear" and not conversion:
        return ts, sig  # the appended final sigma is never stepped to
    return ts, sig + [last]


def dpm(n, conversion, to_int, final="zero"):
    sig = conversion(table[0], table[-1], n)
    ts = [to_int(sigma_to_t(s)) for s in sig]
    last = 0.0 if final == "zero" else table[0]
    return ts, sig + [last]


def show(name, ts, sig):
    print(f"{name}:\n  t = {[float(t) for t in ts]!r}\n  sigma = {sig!r}")


show("euler log_linear n=5", *euler(5, interpolation="log_linear"))
show("euler karras 0.1..10 final sigma_min n=5",
     *euler(5, conversion=karras, sigma_min=0.1, sigma_max=10.0, final="sigma_min"))
show("euler exponential leading offset 1 n=5",
     *euler(5, spacing="leading", steps_offset=1, conversion=exponential))
show("euler trailing log_linear karras n=4",
     *euler(4, spacing="trailing", interpolation="log_linear", conversion=karras))
show("dpm karras n=6 (rounded)", *dpm(6, karras, lambda t: float(round(t))))
show("dpm exponential n=6 (truncated, final sigma_min)",
     *dpm(6, exponential, lambda t: float(math.trunc(t)), final="sigma_min"))
