"""Train the shipped `fold` preset on one GPU inside a wall-clock budget: Stage-1 encoder, then the fold model.

    python scripts/train_fold_gpu.py --pack .gpu/promod3/chain_set.npz --out OUT --budget-s 520 [--memorize]

Needs only torch + numpy (the GPU image has nothing else): the repository root is put on sys.path.
1. Stage-1 encoder (`fold` encoder preset) on the pack's train split; its epoch count is sized from a timed probe
   so the cosine schedule finishes inside `--encoder-s`.
2. The `fold` preset with that frozen encoder; steps per epoch sized from a timed probe (train + validation) so
   all `epochs` of its warmup-constant-cosine schedule end inside what is left of the budget.
3. Optionally (`--memorize`) the memorization benchmark (before / after the numerics fixes) runs alongside.
Writes OUT/encoder_fold/ and OUT/fold/ (run folders: config.json, epochs.csv, ckpt/), OUT/fold_weights.pt (the
best checkpoint's EMA weights, `minifold.structure_io.export_weights`) and OUT/driver.json (probes and timings).
"""
import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("PYTHONUNBUFFERED", "1")

import torch  # noqa: E402

T0 = time.time()


def log(*a):
    print(f"[{time.time() - T0:6.1f}s]", *a, flush=True)


def _sync(dev):
    if dev.type == "cuda": torch.cuda.synchronize()


def probe_encoder(pack, splits, preset, dev, n=30):
    "Seconds per optimizer step of the Stage-1 encoder on real batches (after 5 warm-up steps)."
    from minifold.data import load_chain_set, make_loader, ARCH_VOCAB
    from minifold.encoder import ContactClassifier, encoder_losses
    from minifold.config import get_encoder_preset
    p = get_encoder_preset(preset)
    tr = load_chain_set(pack, splits, split="train")
    model = ContactClassifier(p, n_arch=len(ARCH_VOCAB)).to(dev).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    loader = make_loader(tr[:2000], p.max_len, batch_size=p.batch_size, train=True)
    it, times = iter(loader), []
    for k in range(n + 5):
        b = {kk: (v.to(dev, non_blocking=True) if torch.is_tensor(v) else v) for kk, v in next(it).items()}
        _sync(dev); t = time.time()
        loss = encoder_losses(model(b["tokens"], b["mask"]), b, p)[0]
        opt.zero_grad(); loss.backward(); opt.step(); _sync(dev)
        if k >= 5: times.append(time.time() - t)
    return sum(times) / len(times), len(tr)


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--pack", required=True)
    ap.add_argument("--splits", default=None)
    ap.add_argument("--out", required=True)
    ap.add_argument("--budget-s", type=float, default=520.0, help="wall-clock for everything, from the start")
    ap.add_argument("--encoder-s", type=float, default=140.0, help="encoder training budget")
    ap.add_argument("--num-workers", type=int, default=6)
    ap.add_argument("--memorize", action="store_true")
    ap.add_argument("--device", default="cuda", help="cuda (the real run) | cpu (a smoke test of this script)")
    ap.add_argument("--fold-overrides", default="{}", help="JSON preset overrides of the fold run (smoke tests)")
    ap.add_argument("--max-train", type=int, default=None, help="smoke test: train on this many chains")
    ap.add_argument("--memorize-steps", type=int, default=2000)
    ap.add_argument("--memorize-data", default=None, help="chain set of the memorization check (default: its own)")
    ap.add_argument("--encoder-epochs", type=int, default=None, help="fix the encoder epochs (default: from the probe)")
    args = ap.parse_args(argv)
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    out = Path(args.out); out.mkdir(parents=True, exist_ok=True)
    splits = args.splits or str(Path(args.pack).parent / "chain_set_splits.json")
    dev = torch.device(args.device)
    info = {"device": torch.cuda.get_device_name() if dev.type == "cuda" else "cpu", "torch": torch.__version__, "pack": args.pack,
            "budget_s": args.budget_s}
    procs = []
    if args.memorize:
        for tag, extra in (("before", []), ("fixes", ["--set", "frame_gate=noise", "trans_init=mmse"]),
                           ("fixes_blend", ["--set", "frame_gate=noise", "trans_init=mmse", "sc_init=blend"])):
            cmd = [sys.executable, str(ROOT / "benchmarks" / "memorize.py"), "--device", "cuda", "--steps",
                   str(args.memorize_steps), "--epochs", "4", "--lr", "5e-4", "--samples", "2", "--noise-seeds", "2",
                   "--ddpm", "--threads", "2", *(["--data", args.memorize_data] if args.memorize_data else []), "--out", str(out / f"memorize_{tag}_{args.memorize_steps}.json"), *extra]
            procs.append((tag, subprocess.Popen(cmd, stdout=open(out / f"memorize_{tag}.log", "w"),
                                                stderr=subprocess.STDOUT, cwd=ROOT)))
            log("started memorize", tag)

    # 1. Stage-1 encoder ------------------------------------------------------------------------------------
    from minifold.config import get_encoder_preset
    from minifold.encoder import train_encoder
    ep = get_encoder_preset("fold")
    s_step, n_train = probe_encoder(args.pack, splits, "fold", dev, n=30 if dev.type == "cuda" else 2)
    steps_ep = math.ceil(n_train / ep.batch_size)
    t_ep = 1.15 * s_step * steps_ep + 4.0                     # + validation, loader start
    left = args.encoder_s - (time.time() - T0)
    enc_epochs = args.encoder_epochs or max(1, min(12, int(left // t_ep)))
    info["encoder"] = {"probe_s_per_step": s_step, "steps_per_epoch": steps_ep, "epochs": enc_epochs,
                       "est_epoch_s": t_ep}
    log("encoder probe", info["encoder"])
    t = time.time()
    enc = train_encoder(args.pack, splits, preset="fold", epochs=enc_epochs, out_dir=out / "encoder_fold",
                        device=str(dev), resume=False, progress=False, verbose=True,
                        num_workers=args.num_workers if dev.type == "cuda" else 0)
    info["encoder"]["train_s"] = time.time() - t
    enc_ckpt = Path(enc["best_path"])
    log("encoder done", info["encoder"]["train_s"], enc_ckpt)

    # 2. fold model: probe, then the sized run ----------------------------------------------------------------
    from minifold.config import get_preset
    from minifold.data import load_chain_splits
    from minifold.model import build_model
    from minifold.trainer import Trainer, ChainBatches, train
    over = json.loads(args.fold_overrides)
    preset = get_preset("fold", **over)
    sets = load_chain_splits(args.pack, splits, splits=("train", "validation"))
    model = build_model(preset, encoder_weights=enc_ckpt).to(dev)
    n_probe = 40 if dev.type == "cuda" else 2
    with tempfile.TemporaryDirectory() as d:
        tr = Trainer(model, preset, ChainBatches(sets["train"], preset, train=True, seed=0),
                     ChainBatches(sets["validation"], preset, train=False, seed=0), d, epochs=1,
                     ddim_every=0, max_steps_per_epoch=n_probe, num_workers=args.num_workers, progress=False,
                     verbose=False, resume=False)
        t = time.time(); tr.validate(0); _sync(dev); t_val = time.time() - t
        t = time.time(); tr.train_epoch(); _sync(dev); t_train = max(1e-3, time.time() - t - t_val) / n_probe
    del model, tr
    if dev.type == "cuda": torch.cuda.empty_cache()
    left = args.budget_s - (time.time() - T0) - 25.0          # checkpoint writes, the tar at the end
    E = preset.epochs
    steps = int((left - E * (t_val + 6.0)) / (E * t_train * 1.05))
    n_full = math.ceil(len(sets["train"]) / preset.batch_size)
    steps = max(10, min(steps, n_full))
    info["fold"] = {"probe_s_per_step": t_train, "probe_val_s": t_val, "epochs": E, "steps_per_epoch": steps,
                    "full_epoch_steps": n_full, "left_s": left}
    log("fold probe", info["fold"])
    t = time.time()
    res = train("fold", args.pack, splits, out / "fold", encoder_weights=str(enc_ckpt), device=str(dev), max_train_chains=args.max_train, preset_overrides=over,
                max_steps_per_epoch=steps, num_workers=args.num_workers, ddim_every=0, resume=False,
                progress=False, verbose=True, time_limit_min=(args.budget_s - (time.time() - T0)) / 60.0)
    info["fold"]["train_s"] = time.time() - t
    info["fold"]["best_val_total"] = res["best_val_total"]
    info["fold"]["time_stopped"] = res["time_stopped"]
    info["fold"]["peak_mem_gib"] = torch.cuda.max_memory_allocated() / 2 ** 30 if dev.type == "cuda" else None
    log("fold done", info["fold"])
    from minifold.structure_io import export_weights
    info["fold"]["export"] = export_weights(out / "fold", out / "fold_weights.pt")   # best.pt → slim EMA weights
    for tag, p in procs:
        try: p.wait(timeout=max(1.0, args.budget_s + 40 - (time.time() - T0)))
        except subprocess.TimeoutExpired: p.kill(); log("memorize", tag, "killed at the budget")
        info[f"memorize_{tag}_rc"] = p.returncode
    info["total_s"] = time.time() - T0
    (out / "driver.json").write_text(json.dumps(info, indent=1, default=str))
    log("all done")


if __name__ == "__main__":
    main()
