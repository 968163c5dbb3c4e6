"""The main job: `papermill nbs/train.ipynb` with its CI defaults (tiny preset, bundled sample, CPU, 2 short
epochs), plus an overfit check of the real tiny model on one repeated batch."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from minifold.config import get_preset
from minifold import trainer as T

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_train_notebook_papermill(tmp_path):
    out_dir, out_nb = tmp_path / "run", tmp_path / "train_out.ipynb"
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cmd = [sys.executable, "-m", "papermill", str(ROOT / "nbs" / "train.ipynb"), str(out_nb),
           "-p", "out_dir", str(out_dir), "-p", "max_steps_per_epoch", "4", "-p", "device", "cpu",
           "--cwd", str(ROOT / "nbs")]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-4000:]
    df = pd.read_csv(out_dir / "epochs.csv")
    cfg = json.loads((out_dir / "config.json").read_text())
    from minifold.losses import LOSS_KEYS
    assert len(df) == 2 and df.epoch.tolist() == [1, 2] and df.step.tolist() == [4, 8]
    expected = {"epoch", "step", "status", "lr", "lr_pair_stack", "lr_aux_pair", "lr_backbone_head", "train_total",
                "val_total", "grad_norm_denoiser", "grad_norm_pair_stack", "grad_norm_aux_pair", "skipped_batches",
                "skipped_steps", "tripwire_events", "ddim_tm", "ddim_rmsd", "ddim_gdt", "epoch_time_s", "wall_time_s"}
    expected |= {f"train_{k}" for k in LOSS_KEYS} | {f"val_{k}" for k in LOSS_KEYS}
    assert expected <= set(df.columns), expected - set(df.columns)
    assert df.status.iloc[0] == "NEW BEST" and df.train_total.notna().all() and df.val_total.notna().all()
    assert df.ddim_tm.notna().all() and df.ddim_tm.between(0, 1).all()          # tiny: ddim_every = 1
    assert (out_dir / "ckpt" / "last.pt").exists() and (out_dir / "ckpt" / "best.pt").exists()
    assert (out_dir / "loss_curves.png").exists() and (out_dir / "training_diagnostics.png").exists()
    assert (out_dir / "gradient_cosine.csv").exists()
    assert cfg["preset"]["name"] == "tiny" and cfg["git"]["commit"] and cfg["hardware"]["torch"]
    assert cfg["parameters"]["max_steps_per_epoch"] == 4


def test_overfit_one_batch():
    "40 optimizer steps on one repeated batch (fixed t and noise): the tiny model's loss must fall clearly."
    from minifold.model import build_model
    from minifold.losses import compute_losses
    from minifold.data import load_chain_set, default_data_paths
    p = get_preset("tiny", p_uncond=0.0, sc_prob=0.0, max_len=40)
    torch.manual_seed(0)
    model = build_model(p, encoder_weights=None)
    src = T.ChainBatches(load_chain_set(*default_data_paths(), split="train", limit=2), p, train=False)
    batch = src.make_batch([0, 1], 0)
    opt = T.make_optimizer(model, p)
    fwd = T.TrainForward(model)
    losses = []
    model.train()
    for step in range(40):
        g = torch.Generator().manual_seed(0)                                     # the same t and noise every step
        x_t, t = T.diffusion_inputs(model, batch, g)
        total, _ = compute_losses(fwd(batch, x_t, t, False), batch, p, 0)
        opt.zero_grad(); total.backward()
        T.clip_gradients(model, p)
        opt.step()
        losses.append(float(total))
    first, last = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
    print(f"overfit: first-3 mean {first:.3f} -> last-3 mean {last:.3f}")
    assert last < 0.75 * first, losses
