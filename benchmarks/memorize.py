"""Memorization check: can the pipeline regenerate chains it has memorized?

    python benchmarks/memorize.py --out benchmarks/results/memorize_after.json
    python benchmarks/memorize.py --steps 300 --n-chains 4          # a quicker look

Trains a preset (default `small`, crops off: chains of <= `--max-len` residues) on `--n-chains` real training
chains of the shared pack (the bundled sample if the pack is absent) through the real `Trainer` (same
micro-batch code, losses, EMA and LR schedule as a training run) until the loss is low, then prints, with the
EMA weights and with the raw weights:

1. per-t x0-prediction TM-score: the truth noised to t by the training forward process and denoised once,
   for t across the whole schedule (what the loss trains);
2. TM-score of DDIM (η = 0, 50 steps, with and without self-conditioning; with `--t-stop`, also truncated at that
   t, returning its x̂0) and ancestral DDPM (all T steps) samples drawn from pure noise (what a user gets).

On memorized chains a correct sampler must reach the x0-prediction quality of the high-t end of (1); a large gap
between (1) and (2) is a train/sample mismatch, not a capacity problem. The goal of issue 12 is DDIM TM >= 0.8.
Everything is seeded; `--out` keeps every number as JSON.
"""
import argparse
import json
import math
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from minifold.config import get_preset, to_angstrom          # noqa: E402
from minifold.data import load_chain_splits, default_data_paths, collate, featurize   # noqa: E402
from minifold.metrics import tm_score                         # noqa: E402
from minifold.model import build_model                        # noqa: E402
from minifold.sampling import ddim_sample, ddpm_sample, predict_x0   # noqa: E402
from minifold.trainer import Trainer, ChainBatches, default_encoder_weights   # noqa: E402

T_GRID = (0, 10, 50, 100, 200, 300, 400, 500, 600, 700, 800, 900, 950, 999)


def pick_chains(n, max_len, min_len, seed=0, data=None, splits=None):
    "n training chains with min_len <= L <= max_len, all Cα observed (seeded choice), from the shared pack if present."
    if data is None:
        try: data, splits = default_data_paths("shared")
        except FileNotFoundError: data, splits = default_data_paths("sample")
    tr = load_chain_splits(data, splits, splits=("train",))["train"]
    ok = [c for c in tr if min_len <= len(c) <= max_len and np.isfinite(np.asarray(c.coords)[:, 1]).all()]
    idx = np.sort(np.random.default_rng(seed).choice(len(ok), n, replace=False))
    return [ok[i] for i in idx], str(data)


def evaluate(model, batch, args, label):
    "Per-t x0 TM (mean over chains and `--noise-seeds`) and DDIM/DDPM-from-noise TM, on the memorized chains."
    true, m = batch["ca"].float(), batch["ca_mask"].bool()
    res = {"per_t_x0_tm": {}}
    for t in T_GRID:
        tms = []
        for s in range(args.noise_seeds):
            out = predict_x0(model, batch, t=t, generator=torch.Generator().manual_seed(1000 + s))
            tms.append(tm_score(out["ca"], true, m))
        res["per_t_x0_tm"][t] = float(torch.stack(tms).mean())
    samplers = {"ddim50_sc": dict(fn=ddim_sample, steps=50, self_cond=True),
                "ddim50_nosc": dict(fn=ddim_sample, steps=50, self_cond=False),
                "ddim50_sc_align": dict(fn=ddim_sample, steps=50, self_cond=True, align_x0=True)}
    if args.t_stop:   # truncated DDIM: the x̂0 of the last step with t >= --t-stop is the answer
        samplers[f"ddim50_nosc_stop{args.t_stop}"] = dict(fn=ddim_sample, steps=50, self_cond=False, t_stop=args.t_stop)
        samplers[f"ddim50_sc_stop{args.t_stop}"] = dict(fn=ddim_sample, steps=50, self_cond=True, t_stop=args.t_stop)
    if args.ddpm: samplers["ddpm_all_T_sc"] = dict(fn=ddpm_sample, steps=None, self_cond=True)
    for name, kw in samplers.items():
        fn = kw.pop("fn")
        tms = []
        t0 = time.time()
        traj_tm = None
        for s in range(args.samples):
            out = fn(model, batch, generator=torch.Generator().manual_seed(2000 + s), progress=False,
                     return_traj=True, **kw)
            tms.append(tm_score(out["ca"], true, m))
            if s == 0:   # TM of the running x0 prediction along the trajectory (every 5th model evaluation)
                ks = list(range(0, len(out["traj"]), max(1, len(out["traj"]) // 10))) + [len(out["traj"]) - 1]
                traj_tm = {k: float(tm_score(to_angstrom(out["traj"][k]), true, m).mean()) for k in ks}
        tm = torch.stack(tms)                                   # [samples, B]
        res[name] = {"tm_mean": float(tm.mean()), "tm_per_chain": tm.mean(0).tolist(), "seconds": time.time() - t0,
                     "x0_tm_along_trajectory": traj_tm}
    print(f"\n[{label}] x0-prediction TM by t: " + "  ".join(f"{t}:{v:.3f}" for t, v in res["per_t_x0_tm"].items()))
    for name in samplers:
        print(f"[{label}] {name:16s} TM {res[name]['tm_mean']:.3f}  per chain "
              + " ".join(f"{v:.2f}" for v in res[name]["tm_per_chain"]))
        print(f"[{label}] {'':16s} x0 TM along the trajectory (step: TM) "
              + "  ".join(f"{k}:{v:.2f}" for k, v in res[name]["x0_tm_along_trajectory"].items()))
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="small")
    ap.add_argument("--n-chains", type=int, default=8)
    ap.add_argument("--min-len", type=int, default=40)
    ap.add_argument("--max-len", type=int, default=64)
    ap.add_argument("--steps", type=int, default=600, help="optimizer steps (one batch of all chains per step)")
    ap.add_argument("--epochs", type=int, default=6, help="the steps are split into this many epochs (LR schedule)")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--ema-decay", type=float, default=0.98)
    ap.add_argument("--samples", type=int, default=2, help="samples per chain and sampler")
    ap.add_argument("--noise-seeds", type=int, default=2)
    ap.add_argument("--ddpm", action="store_true", help="also ancestral DDPM over all T steps (slow)")
    ap.add_argument("--t-stop", type=int, default=0, help="also DDIM-50 stopped at this t, returning its x̂0 (0: not run)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--data", default=None, help="chain_set.jsonl[.gz] (default: the shared pack, else data/sample)")
    ap.add_argument("--splits", default=None, help="its splits JSON (default: next to --data)")
    ap.add_argument("--device", default="cpu", help="train on this device (cpu | cuda); evaluation always runs on the CPU")
    ap.add_argument("--set", nargs="*", default=[], help="extra preset overrides field=value (python literals)")
    ap.add_argument("--out", default=None)
    ap.add_argument("--save-model", default=None, help="save the trained weights + EMA here (re-evaluate with --load-model)")
    ap.add_argument("--load-model", default=None, help="skip training: evaluate weights saved by --save-model")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    import ast
    extra = {}
    for kv in args.set:
        k, v = kv.split("=", 1)
        try: extra[k] = ast.literal_eval(v)
        except Exception: extra[k] = v
    steps_per_epoch = max(1, args.steps // args.epochs)
    preset = get_preset(args.preset, max_len=args.max_len, batch_size=args.n_chains, grad_accum=1, epochs=args.epochs,
                        warmup_epochs=0, constant_epochs=max(1, args.epochs // 2), lr=args.lr, ema_decay=args.ema_decay,
                        p_uncond=0.0, ddim_every=0, patience=10 ** 6, bond_anneal_epochs=1, bb_ramp_epochs=0, **extra)
    chains, data = pick_chains(args.n_chains, args.max_len, args.min_len, data=args.data,
                               splits=args.splits or (Path(args.data).parent / "chain_set_splits.json" if args.data else None))
    print(f"{len(chains)} chains from {data}: " + ", ".join(f"{c.name}({len(c)})" for c in chains))
    model = build_model(preset, encoder_weights=default_encoder_weights(preset)).to(args.device)
    src = ChainBatches(chains * steps_per_epoch, preset, train=True, seed=0)
    # one batch = all chains: the bucket sampler batches by length, so give it exactly the chains once per step
    src.epoch_batches = lambda epoch: [list(range(k * len(chains), (k + 1) * len(chains))) for k in range(steps_per_epoch)]
    val = ChainBatches(chains, preset, train=False, seed=0)
    t0 = time.time()
    with tempfile.TemporaryDirectory() as d:
        tr = Trainer(model, preset, src, val, d, epochs=args.epochs, ddim_every=0, progress=False, verbose=True, resume=False)
        if args.load_model:
            saved = torch.load(args.load_model, map_location="cpu", weights_only=False)
            model.load_state_dict(saved["model"]); tr.ema.load_state_dict(saved["ema"])
            rows, tr.global_step = saved["rows"], saved["steps"]
        else:
            rows = tr.fit()
            if args.save_model:
                torch.save({"model": model.state_dict(), "ema": tr.ema.state_dict(), "rows": rows,
                            "steps": tr.global_step}, args.save_model)
        train_s = time.time() - t0
        model.cpu()                                              # evaluation on the CPU (EMA shadow is copied in)
        batch = collate([featurize(c) for c in chains])
        results = {"raw": evaluate(model, batch, args, "raw weights")}
        with tr.ema.swapped(model):
            results["ema"] = evaluate(model, batch, args, "EMA weights")
    out = {"benchmark": "memorize", "preset": args.preset, "overrides": {k: v for k, v in preset.to_dict().items()
           if v != get_preset(args.preset).to_dict()[k]}, "chains": [c.name for c in chains],
           "lengths": [len(c) for c in chains], "steps": tr.global_step, "train_seconds": round(train_s, 1),
           "final_train_total": rows[-1]["train_total"], "final_train_fape_unclamped": rows[-1].get("train_fape_unclamped"),
           "epochs": [{k: r.get(k) for k in ("epoch", "train_total", "train_fape", "train_fape_unclamped", "train_rot",
                                              "val_total")} for r in rows],
           "results": results, "command": "python benchmarks/memorize.py " + " ".join(argv if argv is not None else sys.argv[1:]),
           "machine": {"cpu": platform.processor() or platform.machine(), "threads": args.threads, "torch": torch.__version__,
                       "train_device": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"}}
    print(f"\ntrained {tr.global_step} steps in {train_s:.0f} s; final train total {rows[-1]['train_total']:.3f}")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(out, indent=1))
        print("wrote", args.out)
    return out


if __name__ == "__main__":
    main()
