"""Extra reference vectors for diffuse's refs harness, from diffusers 0.42.1 (torch CPU).

Same format as shared/refs (see its README). Each case/run's f64_replay_max_mixed_dev is the
largest |diffusers - replay| / max(1, |replay|) where the replay is the same diffusers code run
with torch.float32 and np.float32 patched to float64 (a float64 replay of the recipe).
Usage: python gen.py OUTDIR   (runs itself a second time with DIFFUSE_F64=1 for the replay)
"""
import json, os, sys, subprocess, copy, math
import numpy as np
F64 = os.environ.get("DIFFUSE_F64") == "1"
import torch
if F64:
    torch.float32 = torch.float64
    np.float32 = np.float64
import diffusers
from diffusers import (DDPMScheduler, DDIMScheduler, DDIMInverseScheduler, EulerDiscreteScheduler,
                       HeunDiscreteScheduler, DPMSolverMultistepScheduler)
import diffusers.schedulers.scheduling_ddpm as ddpm_mod

SHAPE = [1, 3, 2, 2]
MODEL = {"a": 0.1, "b": 0.05, "c": 0.02}
rng = np.random.default_rng(2026)
def f32(x): return np.asarray(x, dtype=np.float64).astype(np.float32).astype(np.float64)
def draw(scale=1.0): return f32(rng.standard_normal(SHAPE) * scale)
X = draw(); OUT = draw(); NOISE = draw(); PV = f32(rng.uniform(0.05, 0.95, SHAPE))
NOISES = [draw() for _ in range(24)]
X0_DATA = f32(np.clip(rng.standard_normal(SHAPE) * 0.5, -1, 1))
def T(a): return torch.tensor(np.asarray(a), dtype=torch.float64)
def arr(t):
    a = np.asarray(t.detach().double() if torch.is_tensor(t) else t, dtype=np.float64)
    return {"shape": list(a.shape), "data": [float(v) for v in a.reshape(-1)]}
def jnum(v):
    v = float(v)
    return v if math.isfinite(v) else ("inf" if v > 0 else "-inf")
def clean_cfg(cfg):
    out = {}
    for k, v in dict(cfg).items():
        if k.startswith("_") and k != "_class_name": continue
        if isinstance(v, float) and not math.isfinite(v): v = jnum(v)
        if isinstance(v, (list, tuple)): v = list(v)
        out[k] = v
    return out
def model(x_in, t, n_train):
    return MODEL["a"] * x_in + MODEL["b"] + MODEL["c"] * float(t) / n_train
GEN = {"diffusers": diffusers.__version__, "torch": torch.__version__, "numpy": np.__version__}

# ---------------------------------------------------------------- schedule
def schedule_file(name, **kw):
    s = DDPMScheduler(**kw)
    return name, {"kind": "schedule", "generator": GEN, "description": f"DDPMScheduler({kw}) betas and alphas_cumprod",
                  "config": clean_cfg(s.config), "betas": [float(v) for v in s.betas.double()],
                  "alphas_cumprod": [float(v) for v in s.alphas_cumprod.double()]}

# ---------------------------------------------------------------- ddpm
class NoiseFeed:
    def __init__(self): self.queue = []
    def __call__(self, shape, **kw): return T(self.queue.pop(0)) if self.queue else torch.zeros(shape, dtype=torch.float64)
FEED = NoiseFeed()
ddpm_mod.randn_tensor = FEED

def ddpm_case(cfg, t, n=None, custom=None):
    s = DDPMScheduler(**cfg)
    if custom is not None: s.set_timesteps(timesteps=custom)
    elif n is not None: s.set_timesteps(n)
    learned = s.config.variance_type in ("learned", "learned_range")
    out = T(np.concatenate([OUT, PV], axis=1)) if learned else T(OUT)
    FEED.queue = []
    r0 = s.step(out, t, T(X))
    mean = r0.prev_sample
    FEED.queue = [NOISE]
    r = s.step(out, t, T(X))
    prev_t = int(s.previous_timestep(t))
    case = {"config": clean_cfg(s.config), "t": t, "prev_t": prev_t,
            "pred_original_sample": arr(r.pred_original_sample), "prev_sample_mean": arr(mean), "prev_sample": arr(r.prev_sample)}
    if n is not None: case["num_inference_steps"] = n
    if custom is not None: case["custom_timesteps"] = list(custom)
    vt = s.config.variance_type
    if vt in ("fixed_small", "fixed_large", "fixed_small_log"):
        v = s._get_variance(t)
        v = float(v) ** 2 if vt == "fixed_small_log" else float(v)
        case["variance"] = v if t > 0 else 0.0
    if vt == "learned_range":
        case["log_variance"] = arr(s._get_variance(t, predicted_variance=T(PV)))
    return case

def ddpm_run(cfg, n):
    s = DDPMScheduler(**cfg); s.set_timesteps(n)
    x = T(X); samples = [arr(x)]; x0s = []; noises = []
    for i, t in enumerate(s.timesteps):
        out = T(model(x.numpy(), int(t), s.config.num_train_timesteps))
        FEED.queue = [NOISES[i]]; noises.append(arr(NOISES[i]))
        r = s.step(out, t, x); x = r.prev_sample
        samples.append(arr(x)); x0s.append(arr(r.pred_original_sample))
    return {"kind": "ddpm_run", "generator": GEN, "description": "DDPMScheduler run; noises[i] is the noise of step i (diffusers adds it whenever t > 0)",
            "config": clean_cfg(s.config), "model": MODEL, "num_inference_steps": n,
            "timesteps": [int(t) for t in s.timesteps], "x_init": samples[0], "noises": noises,
            "pred_original_samples": x0s, "samples": samples}

# ---------------------------------------------------------------- ddim
def ddim_case(cfg, n, t, eta, clipped=False):
    s = DDIMScheduler(**cfg); s.set_timesteps(n)
    r = s.step(T(OUT), t, T(X), eta=eta, variance_noise=T(NOISE), use_clipped_model_output=clipped)
    prev_t = t - s.config.num_train_timesteps // n
    ap = s.alphas_cumprod[prev_t] if prev_t >= 0 else s.final_alpha_cumprod
    std = eta * float(s._get_variance(t, prev_t)) ** 0.5
    case = {"config": clean_cfg(s.config), "num_inference_steps": n, "t": t, "prev_t": prev_t, "eta": eta, "std_dev_t": std,
            "pred_original_sample": arr(r.pred_original_sample), "prev_sample": arr(r.prev_sample)}
    if clipped: case["use_clipped_model_output"] = True
    return case

def ddim_run(cfg, n, eta, clipped=False):
    s = DDIMScheduler(**cfg); s.set_timesteps(n)
    x = T(X); samples = [arr(x)]; x0s = []
    for i, t in enumerate(s.timesteps):
        out = T(model(x.numpy(), int(t), s.config.num_train_timesteps))
        r = s.step(out, t, x, eta=eta, variance_noise=T(NOISES[i]), use_clipped_model_output=clipped)
        x = r.prev_sample; samples.append(arr(x)); x0s.append(arr(r.pred_original_sample))
    run = {"config": clean_cfg(s.config), "eta": eta, "num_inference_steps": n, "timesteps": [int(t) for t in s.timesteps],
           "pred_original_samples": x0s, "samples": samples}
    if clipped: run["use_clipped_model_output"] = True
    return run

def ddim_inverse(cfg, cases, run_n):
    out_cases = []
    for n, t in cases:
        s = DDIMInverseScheduler(**cfg); s.set_timesteps(n)
        r = s.step(T(OUT), t, T(X))
        from_t = min(t - s.config.num_train_timesteps // n, s.config.num_train_timesteps - 1)
        out_cases.append({"config": clean_cfg(s.config), "num_inference_steps": n, "t": t, "from_t": from_t,
                          "pred_original_sample": arr(r.pred_original_sample), "next_sample": arr(r.prev_sample)})
    s = DDIMInverseScheduler(**cfg); s.set_timesteps(run_n)
    x = T(X0_DATA); samples = [arr(x)]
    for t in s.timesteps:
        out = T(model(x.numpy(), int(t), s.config.num_train_timesteps))
        x = s.step(out, t, x).prev_sample; samples.append(arr(x))
    run = {"config": clean_cfg(s.config), "num_inference_steps": run_n, "timesteps": [int(t) for t in s.timesteps],
           "model": MODEL, "x_init": samples[0], "samples": samples}
    return {"kind": "ddim_inverse", "generator": GEN, "description": "DDIMInverseScheduler steps and a run",
            "config": clean_cfg(DDIMInverseScheduler(**cfg).config), "inputs": {"sample": arr(X), "model_output": arr(OUT)},
            "cases": out_cases, "run": run}

# ---------------------------------------------------------------- euler / heun
def euler_table(cls, cfg, n):
    s = cls(**cfg); s.set_timesteps(n)
    return {"config": clean_cfg(s.config), "num_inference_steps": n, "sigmas": [float(v) for v in s.sigmas.double()],
            "timesteps": [float(v) for v in s.timesteps.double()], "init_noise_sigma": float(s.init_noise_sigma)}

def sigma_run(cls, cfg, n):
    s = cls(**cfg); s.set_timesteps(n)
    x = T(X) * float(s.init_noise_sigma)
    samples = [arr(x)]; inputs = []; c_in = []; x0s = []; orders = []
    for t in s.timesteps:
        sigma = float(s.sigmas[s.step_index if s.step_index is not None else s.index_for_timestep(t)])
        xin = s.scale_model_input(x, t)
        c_in.append(1.0 / math.sqrt(sigma ** 2 + 1.0))
        inputs.append(arr(xin))
        if cls is HeunDiscreteScheduler: orders.append(1 if s.state_in_first_order else 2)
        out = T(model(xin.numpy(), float(t), s.config.num_train_timesteps))
        r = s.step(out, t, x)
        x = r.prev_sample.double(); samples.append(arr(x))
        if cls is EulerDiscreteScheduler: x0s.append(arr(r.pred_original_sample))
    run = {"config": clean_cfg(s.config), "num_inference_steps": n, "sigmas": [float(v) for v in s.sigmas.double()],
           "timesteps": [float(v) for v in s.timesteps.double()], "init_noise_sigma": float(s.init_noise_sigma),
           "c_in": c_in, "x_init": samples[0], "model_inputs": inputs, "samples": samples}
    if x0s: run["pred_original_samples"] = x0s
    if orders: run["orders"] = orders
    return run

# ---------------------------------------------------------------- dpm-solver
def dpm_run(cfg, n):
    s = DPMSolverMultistepScheduler(**cfg); s.set_timesteps(n)
    s.set_begin_index(0)  # karras timesteps of cosine schedules repeat their first value
    used = []
    for name, o in (("dpm_solver_first_order_update", 1), ("multistep_dpm_solver_second_order_update", 2), ("multistep_dpm_solver_third_order_update", 3)):
        f = getattr(s, name)
        def wrap(*a, _f=f, _o=o, **k): used.append(_o); return _f(*a, **k)
        setattr(s, name, wrap)
    sde = s.config.algorithm_type.startswith("sde")
    x = T(X); samples = [arr(x)]; den = []; noises = []
    for i, t in enumerate(s.timesteps):
        out = T(model(x.numpy(), int(t), s.config.num_train_timesteps))
        idx = s.step_index if s.step_index is not None else (s.begin_index if s.begin_index is not None else s.index_for_timestep(t))
        sigma = s.sigmas[idx].double()
        a_t, s_t = 1 / (sigma ** 2 + 1) ** 0.5, sigma / (sigma ** 2 + 1) ** 0.5
        pt = s.config.prediction_type
        x0 = (x - s_t * out) / a_t if pt == "epsilon" else out if pt == "sample" else a_t * x - s_t * out
        if s.config.thresholding: x0 = s._threshold_sample(x0)
        den.append(arr(x0))
        kw = {}
        if sde: kw["variance_noise"] = T(NOISES[i]); noises.append(arr(NOISES[i]))
        x = s.step(out, t, x, **kw).prev_sample.double(); samples.append(arr(x))
    run = {"config": clean_cfg(s.config), "num_inference_steps": n, "sigmas": [float(v) for v in s.sigmas.double()],
           "timesteps": [int(t) for t in s.timesteps], "orders": used, "x_init": samples[0], "denoised": den, "samples": samples}
    if sde: run["noises"] = noises
    return run

def build():
    files = {}
    for name, kw in [("schedule_laplace_t200", dict(beta_schedule="laplace", num_train_timesteps=200)),
                     ("schedule_cosine_t250_zero_snr", dict(beta_schedule="squaredcos_cap_v2", num_train_timesteps=250, rescale_betas_zero_snr=True)),
                     ("schedule_trained_betas", dict(trained_betas=list(np.linspace(2e-4, 0.05, 64) ** 1.5 + 1e-3), num_train_timesteps=64)),
]:
        n, f = schedule_file(name, **kw); files[n] = f
    base = dict(num_train_timesteps=1000, beta_schedule="linear")
    cases = []
    for vt in ["fixed_small_log", "fixed_large", "learned", "learned_range"]:
        for t, n in [(900, 10), (500, None), (0, None)]:
            cases.append(ddpm_case(dict(base, variance_type=vt, clip_sample=False), t, n))
    cases.append(ddpm_case(dict(base, thresholding=True, sample_max_value=1.5, prediction_type="sample"), 700, 10))
    cases.append(ddpm_case(dict(base, clip_sample=True, clip_sample_range=0.5), 300))
    cases.append(ddpm_case(dict(base, timestep_spacing="trailing", prediction_type="v_prediction", variance_type="fixed_large"), 799, 5))
    cases.append(ddpm_case(dict(base, timestep_spacing="linspace", prediction_type="v_prediction", rescale_betas_zero_snr=True), 999, 4))
    cases.append(ddpm_case(dict(base, timestep_spacing="leading", steps_offset=1, num_train_timesteps=500), 401, 5))
    cases.append(ddpm_case(dict(base, beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012), 640, custom=[900, 640, 200, 3]))
    files["ddpm_step_variants"] = {"kind": "ddpm_step", "generator": GEN, "description": "DDPMScheduler.step variants",
        "config": cases[0]["config"], "inputs": {"sample": arr(X), "model_output": arr(OUT), "noise": arr(NOISE), "predicted_variance": arr(PV)},
        "cases": cases}
    files["ddpm_run_trailing_fixed_large"] = ddpm_run(dict(base, timestep_spacing="trailing", variance_type="fixed_large", prediction_type="v_prediction", thresholding=True), 6)
    files["ddpm_run_leading_offset"] = ddpm_run(dict(base, steps_offset=1, beta_schedule="squaredcos_cap_v2", clip_sample=True, clip_sample_range=2.0), 5)
    dcases = []
    for cfg, n, t, eta in [(dict(base, timestep_spacing="trailing", steps_offset=1), 10, 899, 0.5),
                           (dict(base, timestep_spacing="linspace", prediction_type="v_prediction", rescale_betas_zero_snr=True), 7, 999, 0.0),
                           (dict(base, thresholding=True, prediction_type="sample", set_alpha_to_one=False), 20, 0, 1.0),
                           (dict(base, clip_sample=True, clip_sample_range=0.3, steps_offset=1), 10, 501, 0.25)]:
        dcases.append(ddim_case(cfg, n, t, eta))
    dcases.append(ddim_case(dict(base, clip_sample=True, clip_sample_range=0.3), 10, 300, 0.5, clipped=True))
    files["ddim_step_variants"] = {"kind": "ddim_step", "generator": GEN, "description": "DDIMScheduler.step variants",
        "config": dcases[0]["config"], "inputs": {"sample": arr(X), "model_output": arr(OUT), "noise": arr(NOISE)}, "cases": dcases}
    runs = [ddim_run(dict(base, timestep_spacing="leading", steps_offset=1, set_alpha_to_one=False, clip_sample=False), 6, 0.0),
            ddim_run(dict(base, timestep_spacing="linspace", prediction_type="v_prediction", rescale_betas_zero_snr=True, thresholding=True), 5, 0.7),
            ddim_run(dict(base, timestep_spacing="trailing", num_train_timesteps=300, beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, prediction_type="sample"), 6, 1.0),
            ddim_run(dict(base, timestep_spacing="trailing", clip_sample=True, clip_sample_range=0.5), 4, 0.3, clipped=True)]
    files["ddim_run_variants"] = {"kind": "ddim_run", "generator": GEN, "description": "DDIMScheduler runs; noises[i] at step i",
        "config": runs[0]["config"], "model": MODEL, "x_init": arr(X), "noises": [arr(v) for v in NOISES[:8]], "runs": runs}
    tcases = []
    for sp, off, n, tt in [("leading", 1, 7, 500), ("trailing", 1, 6, 500), ("linspace", 1, 9, 500), ("trailing", 0, 3, 50)]:
        s = DDIMScheduler(num_train_timesteps=tt, timestep_spacing=sp, steps_offset=off); s.set_timesteps(n)
        tcases.append({"timestep_spacing": sp, "steps_offset": off, "num_inference_steps": n, "timesteps": [int(v) for v in s.timesteps]})
    # ddim_timesteps cases share the file's config: one file per num_train_timesteps
    files["ddim_timesteps_t500"] = {"kind": "ddim_timesteps", "generator": GEN, "description": "DDIM set_timesteps, T = 500",
        "config": clean_cfg(DDIMScheduler(num_train_timesteps=500).config), "cases": tcases[:3]}
    files["ddim_inverse_trailing_clip"] = ddim_inverse(dict(base, timestep_spacing="trailing", clip_sample=True, set_alpha_to_one=True, prediction_type="v_prediction"), [(5, 199), (10, 999)], 5)
    eb = dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    tables = [euler_table(EulerDiscreteScheduler, dict(eb, **kw), n) for kw, n in [
        (dict(interpolation_type="log_linear"), 6), (dict(interpolation_type="log_linear", use_karras_sigmas=True, timestep_spacing="trailing"), 5),
        (dict(use_exponential_sigmas=True, timestep_spacing="leading", steps_offset=1), 6), (dict(use_karras_sigmas=True, sigma_min=0.05, sigma_max=20.0, final_sigmas_type="sigma_min"), 5),
        (dict(timestep_type="continuous", prediction_type="v_prediction", use_karras_sigmas=True), 5), (dict(rescale_betas_zero_snr=True, timestep_spacing="trailing"), 4), (dict(use_beta_sigmas=True, sigma_max=12.0), 6)]]
    eruns = [sigma_run(EulerDiscreteScheduler, dict(eb, **kw), n) for kw, n in [
        (dict(timestep_type="continuous", prediction_type="v_prediction", use_karras_sigmas=True, timestep_spacing="trailing"), 5),
        (dict(rescale_betas_zero_snr=True, prediction_type="v_prediction", timestep_spacing="trailing", final_sigmas_type="sigma_min"), 4),
        (dict(interpolation_type="log_linear", timestep_spacing="leading", steps_offset=1, prediction_type="sample"), 5),
        (dict(use_exponential_sigmas=True, sigma_max=30.0), 4),
        (dict(use_beta_sigmas=True, timestep_spacing="trailing", prediction_type="v_prediction"), 4)]]
    files["euler_variants"] = {"kind": "euler", "generator": GEN, "description": "EulerDiscreteScheduler variants",
        "config": tables[0]["config"], "model": MODEL, "tables": tables, "runs": eruns}
    htables = [euler_table(HeunDiscreteScheduler, kw, n) for kw, n in [
        (dict(beta_schedule="exp"), 5), (dict(use_exponential_sigmas=True, timestep_spacing="trailing"), 4), (dict(use_beta_sigmas=True), 5)]]
    hruns = [sigma_run(HeunDiscreteScheduler, kw, n) for kw, n in [
        (dict(prediction_type="sample", clip_sample=True, clip_sample_range=0.8, timestep_spacing="leading", steps_offset=1), 4),
        (dict(prediction_type="v_prediction", use_exponential_sigmas=True, beta_schedule="squaredcos_cap_v2"), 4)]]
    files["heun_variants"] = {"kind": "heun", "generator": GEN, "description": "HeunDiscreteScheduler variants",
        "config": htables[0]["config"], "model": MODEL, "tables": htables, "runs": hruns}
    druns = [dpm_run(kw, n) for kw, n in [
        (dict(solver_order=3, solver_type="heun", timestep_spacing="trailing"), 8),
        (dict(algorithm_type="dpmsolver", final_sigmas_type="sigma_min", prediction_type="v_prediction", timestep_spacing="leading", steps_offset=1), 6),
        (dict(algorithm_type="sde-dpmsolver++", use_karras_sigmas=True), 6),
        (dict(beta_schedule="squaredcos_cap_v2", lambda_min_clipped=-5.1, solver_order=3, lower_order_final=False), 7),
        (dict(use_exponential_sigmas=True, euler_at_final=True, final_sigmas_type="sigma_min", solver_order=3), 16),
        (dict(rescale_betas_zero_snr=True, prediction_type="v_prediction", timestep_spacing="trailing", thresholding=True, sample_max_value=2.0), 5),
        (dict(prediction_type="sample", algorithm_type="sde-dpmsolver", solver_type="heun", final_sigmas_type="sigma_min"), 5),
        (dict(use_lu_lambdas=True, solver_order=3, timestep_spacing="trailing"), 5),
        (dict(use_beta_sigmas=True, prediction_type="v_prediction"), 5),
        (dict(use_karras_sigmas=True, beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, solver_order=1), 4)]]
    files["dpmsolver_variants"] = {"kind": "dpmsolver", "generator": GEN, "description": "DPMSolverMultistepScheduler variants; sde runs carry noises",
        "config": druns[0]["config"], "model": MODEL, "runs": druns}
    return files

def walk_dev(a, b):
    """Largest mixed deviation over all numbers of two parallel structures."""
    if isinstance(a, dict): return max([walk_dev(a[k], b[k]) for k in a if k in b and k not in ("config", "generator")] + [0.0])
    if isinstance(a, list): return max([walk_dev(x, y) for x, y in zip(a, b)] + [0.0])
    if isinstance(a, float) and isinstance(b, float):
        if not (math.isfinite(a) and math.isfinite(b)): return 0.0 if a == b or (math.isnan(a) and math.isnan(b)) else float("inf")
        return abs(a - b) / max(1.0, abs(b))
    return 0.0

if __name__ == "__main__":
    outdir = sys.argv[1]
    files = build()
    if F64:
        json.dump(files, open(outdir + "/_replay.json", "w")); sys.exit(0)
    subprocess.run([sys.executable, __file__, outdir], env=dict(os.environ, DIFFUSE_F64="1"), check=True)
    replay = json.load(open(outdir + "/_replay.json")); os.remove(outdir + "/_replay.json")
    for name, f in files.items():
        r = replay[name]
        if f["kind"] == "schedule":
            chk = {}
            for key in ("betas", "alphas_cumprod"):
                a, b = np.array(f[key]), np.array(r[key])
                chk[key + "_max_abs_dev"] = float(np.max(np.abs(a - b)))
                nz = b != 0
                chk[key + "_max_rel_dev"] = float(np.max(np.abs(a[nz] - b[nz]) / np.abs(b[nz])))
            f["f64_check"] = chk
        for t, rt in zip(f.get("tables", []), r.get("tables", [])):
            a, b = np.array(t["sigmas"]), np.array(rt["sigmas"])
            nz = b != 0
            t["f64_check"] = {"sigmas_max_rel_dev": float(np.max(np.abs(a[nz] - b[nz]) / np.abs(b[nz]))),
                              "timesteps_max_abs_dev": float(np.max(np.abs(np.array(t["timesteps"]) - np.array(rt["timesteps"]))))}
        for key in ("cases", "runs"):
            for c, rc in zip(f.get(key, []), r.get(key, [])):
                c["f64_replay_max_mixed_dev"] = walk_dev(c, rc)
        if "run" in f: f["run"]["f64_replay_max_mixed_dev"] = walk_dev(f["run"], r["run"])
        if f["kind"] == "ddpm_run": f["f64_replay_max_mixed_dev"] = walk_dev(f, r)
        with open(f"{outdir}/{name}.json", "w") as fh: json.dump(f, fh, separators=(",", ":"))
    print("wrote", len(files), "files")
