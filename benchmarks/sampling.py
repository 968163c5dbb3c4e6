"""DDIM sampling throughput.

    python benchmarks/sampling.py                      # tiny preset on 2 CPU threads (+ v14 on a GPU if present)
    python benchmarks/sampling.py --n-chains 100 --length 125 --steps 50 --batch-size 50 \
        --out benchmarks/results/sampling_cpu.json     # also write the results as JSON
    python benchmarks/sampling.py --n-chains 4 --steps 3 --naive-n 0 --skip-gpu   # a quick smoke run

1. `tiny` preset, DDIM-50, 100 chains of L=125 on 2 CPU threads (goal: < 60 s). Printed: wall seconds,
   proteins/s and the ratio wall / 60 s (< 1 = goal met). With smaller --n-chains/--steps the ratio is for that
   configuration, and a rough estimate for 100 chains × 50 steps (same L; conditioning ∝ chains, denoising ∝
   chains × steps) is printed next to it.
   Peer: a naive sampler that re-runs `model.condition` (encoder + pair stack) at every step instead of once
   per call; printed as the speed-up ratio of our cached sampler over it (measured on a subset, same steps).
2. `v14` preset (untrained weights: speed only), DDIM-50, 100 chains of L=125 on a CUDA GPU in fp32 and under
   bf16 autocast. Printed as skipped when no GPU is present.
"""
import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from minifold.config import get_preset                      # noqa: E402
from minifold.sampling import ddim_sample, _Conditioner     # noqa: E402
import minifold.sampling as S                               # noqa: E402


def make_batch(n, L, seed=0):
    "n random sequences of length L (uniform amino acids) as a sequence-only batch."
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(4, 24, (n, L), generator=g)
    return {"tokens": tokens, "mask": torch.ones(n, L, dtype=torch.bool),
            "residue_index": torch.arange(L).expand(n, L).clone(), "length": torch.full((n,), L),
            "names": [f"r{i}" for i in range(n)]}


def build(preset_name, device):
    from minifold.model import build_model
    torch.manual_seed(0)
    return build_model(get_preset(preset_name)).to(device).eval()


def run(model, batch, steps, batch_size, amp=None, naive=False, self_cond=True, cpu_time=False):
    "Seconds (wall; with `cpu_time` also process CPU seconds) to DDIM-sample every chain of `batch` in chunks."
    dev = next(model.parameters()).device
    n = batch["tokens"].shape[0]
    orig_init = _Conditioner.__init__
    if naive:   # peer: recompute condition(batch) at every step (what a sampler without the cache does)
        def naive_call(self, x_t, t, sc=None):
            self.cond = self.model.condition(self._batch)
            return _orig_call(self, x_t, t, sc)
        def naive_init(self, model, b, guidance, *args):
            orig_init(self, model, b, guidance, *args); self._batch = b
        _orig_call = _Conditioner.__call__
        _Conditioner.__init__, _Conditioner.__call__ = naive_init, naive_call
    try:
        if dev.type == "cuda": torch.cuda.synchronize()
        t0, c0 = time.perf_counter(), time.process_time()
        for s in range(0, n, batch_size):
            b = {k: (v[s:s + batch_size] if torch.is_tensor(v) else v[s:s + batch_size]) for k, v in batch.items()}
            with torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=amp == "bf16"):
                out = ddim_sample(model, b, steps=steps, generator=torch.Generator().manual_seed(s), progress=False,
                                  self_cond=self_cond)
            assert torch.isfinite(out["ca"]).all()
        if dev.type == "cuda": torch.cuda.synchronize()
        wall = time.perf_counter() - t0
        return (wall, time.process_time() - c0) if cpu_time else wall
    finally:
        if naive: _Conditioner.__init__, _Conditioner.__call__ = orig_init, _orig_call


GOAL_S = 60.0                                                   # seconds for the goal configuration below
GOAL_CONFIG = {"preset": "tiny", "device": "cpu", "threads": 2, "n_chains": 100, "length": 125, "steps": 50}


def _git_commit():
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parents[1], capture_output=True,
                              text=True, timeout=10).stdout.strip() or None
    except Exception:
        return None


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-chains", "--n", dest="n", type=int, default=100, help="chains to sample (default 100)")
    ap.add_argument("--length", type=int, default=125, help="residues per chain (default 125)")
    ap.add_argument("--steps", type=int, default=50, help="DDIM steps (default 50)")
    ap.add_argument("--batch-size", type=int, default=50)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--naive-n", type=int, default=10, help="chains for the naive-sampler comparison (0: skip)")
    ap.add_argument("--gpu-preset", default="v14")
    ap.add_argument("--gpu-batch-size", type=int, default=25)
    ap.add_argument("--skip-cpu", action="store_true")
    ap.add_argument("--skip-gpu", action="store_true")
    ap.add_argument("--out", help="write the results as JSON to this path (e.g. benchmarks/results/sampling_cpu.json)")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    batch = make_batch(a.n, a.length)
    results = {"benchmark": "sampling (DDIM throughput)", "command": " ".join(["python", "benchmarks/sampling.py", *(argv or sys.argv[1:])]),
               "git_commit": _git_commit(), "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               "torch": torch.__version__, "python": platform.python_version(), "cpu_threads": a.threads,
               "cpu_count": os.cpu_count(), "load_average_before": round(os.getloadavg()[0], 2),
               "goal": {"seconds": GOAL_S, **GOAL_CONFIG}}
    print(f"torch {torch.__version__}, {a.threads} CPU threads, os.cpu_count()={os.cpu_count()}, "
          f"load average {os.getloadavg()[0]:.1f}")

    if not a.skip_cpu:
        model = build("tiny", "cpu")
        run(model, make_batch(2, 20), 2, 2)                         # warm-up
        t0 = time.perf_counter()
        with torch.no_grad():
            for s in range(0, a.n, a.batch_size):
                model.condition({k: v[s:s + a.batch_size] for k, v in batch.items() if torch.is_tensor(v)})
        t_cond = time.perf_counter() - t0
        sec, cpu = run(model, batch, a.steps, a.batch_size, cpu_time=True)
        ratio = sec / GOAL_S
        is_goal = (a.n, a.length, a.steps, a.threads) == (100, 125, 50, 2)
        # rough estimate for the goal configuration (same L): conditioning scales with chains, denoising with chains × steps
        est = (t_cond + max(sec - t_cond, 0.0) * 50 / a.steps) * 100 / a.n if a.length == 125 else None
        print(f"[cpu tiny] load average after: {os.getloadavg()[0]:.1f} (the machine is shared); process CPU time "
              f"{cpu:.1f} s = {cpu / a.threads:.1f} s of {a.threads} fully used threads")
        print(f"[cpu tiny] of which model.condition (once per chain): {t_cond:.1f} s; "
              f"{a.steps} denoising steps: {sec - t_cond:.1f} s")
        print(f"[cpu tiny] DDIM-{a.steps}, {a.n} chains × L={a.length}, batch {a.batch_size}: "
              f"{sec:.1f} s wall, {a.n / sec:.2f} proteins/s")
        if is_goal:
            print(f"[cpu tiny] vs the {GOAL_S:.0f} s goal (100 chains × L=125, DDIM-50, 2 threads): ratio {ratio:.2f} "
                  f"({'met' if sec < GOAL_S else 'NOT met'})")
        else:
            print(f"[cpu tiny] not the goal configuration; ratio of this run to {GOAL_S:.0f} s: {ratio:.3f}"
                  + (f"; rough estimate for 100 chains × DDIM-50: {est:.1f} s = {est / GOAL_S:.2f} × the goal" if est else ""))
        results["cpu_tiny"] = {"preset": "tiny", "n_chains": a.n, "length": a.length, "steps": a.steps,
                               "batch_size": a.batch_size, "threads": a.threads, "wall_s": round(sec, 3),
                               "process_cpu_s": round(cpu, 3), "condition_s": round(t_cond, 3),
                               "proteins_per_s": round(a.n / sec, 4), "is_goal_config": is_goal,
                               "ratio_to_goal": round(ratio, 4), "goal_met": bool(sec < GOAL_S) if is_goal else None,
                               "estimated_goal_config_wall_s": round(est, 2) if est else None,
                               "load_average_after": round(os.getloadavg()[0], 2)}
        if a.naive_n:
            sub = make_batch(a.naive_n, a.length)
            ours = run(model, sub, a.steps, a.batch_size)
            naive = run(model, sub, a.steps, a.batch_size, naive=True)
            print(f"[cpu tiny] {a.naive_n} chains: cached conditioning {ours:.2f} s vs condition-every-step "
                  f"{naive:.2f} s → ratio {naive / ours:.2f}× faster")
            results["cpu_tiny_cached_vs_naive"] = {"n_chains": a.naive_n, "cached_s": round(ours, 3),
                                                   "condition_every_step_s": round(naive, 3), "ratio": round(naive / ours, 3)}

    if torch.cuda.is_available() and not a.skip_gpu:
        dev = torch.device("cuda")
        model = build(a.gpu_preset, dev)
        n_par = sum(p.numel() for p in model.parameters())
        run(model, make_batch(2, 32), 2, 2)                         # warm-up / cudnn autotune
        results["gpu"] = []
        for amp in (None, "bf16"):
            sec = run(model, batch, a.steps, a.gpu_batch_size, amp=amp)
            print(f"[gpu {a.gpu_preset} {n_par / 1e6:.1f}M params, {torch.cuda.get_device_name()}] DDIM-{a.steps}, "
                  f"{a.n} chains × L={a.length}, batch {a.gpu_batch_size}, {amp or 'fp32'}: {sec:.1f} s, {a.n / sec:.2f} proteins/s, "
                  f"peak mem {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")
            results["gpu"].append({"preset": a.gpu_preset, "params_M": round(n_par / 1e6, 2), "device": torch.cuda.get_device_name(),
                                   "precision": amp or "fp32", "n_chains": a.n, "length": a.length, "steps": a.steps,
                                   "batch_size": a.gpu_batch_size, "wall_s": round(sec, 3), "proteins_per_s": round(a.n / sec, 4),
                                   "peak_mem_GiB": round(torch.cuda.max_memory_allocated() / 2**30, 2)})
    else:
        why = "--skip-gpu" if a.skip_gpu else "no CUDA device"
        print(f"[gpu {a.gpu_preset}] skipped: {why}")
        results["gpu"] = {"skipped": why}

    if a.out:
        out = Path(a.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {out}")
    return results


if __name__ == "__main__":
    main()
