"""Trainer tests on the real tiny MiniFold and the bundled sample (CPU): LR groups, clipping, schedule, EMA,
NaN skipping, tripwire, checkpoints (atomic, weights-only, corrupt), SIGKILL + resume on the same trajectory,
warm start, gradient cosine, DDIM columns, and DDP with 2 gloo processes (torchrun)."""
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from minifold.config import get_preset
from minifold import trainer as T

ROOT = Path(__file__).resolve().parents[1]


def _env(threads=1):
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = str(threads)
    env["MKL_NUM_THREADS"] = str(threads)
    return env


def _model(preset):
    from minifold.model import build_model
    torch.manual_seed(0)
    return build_model(preset, encoder_weights=None)


@pytest.fixture(scope="module")
def sources(sample_dir):
    from minifold.data import load_chain_splits
    sets = load_chain_splits(sample_dir / "chain_set.jsonl", sample_dir / "chain_set_splits.json",
                             splits=("train", "validation"))
    return sets["train"], sets["validation"]


def _trainer(tmp_path, sources, preset=None, **kw):
    preset = preset or get_preset("tiny")
    tr, va = sources
    kw.setdefault("ddim_every", 0)
    kw.setdefault("progress", False)
    kw.setdefault("verbose", False)
    kw.setdefault("max_steps_per_epoch", 3)
    return T.Trainer(_model(preset), preset, T.ChainBatches(tr, preset, True), T.ChainBatches(va[:4], preset, False),
                     tmp_path / "run", **kw)


# ----------------------------------------------------------------------------- parameter groups
@pytest.mark.parametrize("overrides", [{}, {"backbone_head": False}])
def test_param_groups_hold_exactly_their_modules(overrides):
    p = get_preset("tiny", **overrides)
    m = _model(p)
    groups = {g["name"]: g for g in T.param_groups(m, p)}
    trainable = {n for n, q in m.named_parameters() if q.requires_grad and not n.startswith("encoder.")}
    paths = {"backbone_head": "denoiser.backbone_head.", "pair_stack": "pair_stack.", "aux_pair": "aux_pair."}
    for g, path in paths.items():
        expected = sorted(n for n in trainable if n.startswith(path))
        if not expected:
            assert g not in groups, g
            continue
        assert sorted(groups[g]["param_names"]) == expected, g
        mult = {"backbone_head": p.lr_mult_backbone_head, "pair_stack": p.lr_mult_pair, "aux_pair": p.lr_mult_aux}[g]
        assert groups[g]["lr"] == pytest.approx(p.lr * mult)
    assert sorted(groups["base"]["param_names"]) == sorted(n for n in trainable if not any(n.startswith(x) for x in paths.values()))
    assert groups["base"]["lr"] == pytest.approx(p.lr)
    assert not any(n.startswith("encoder.") for g in groups.values() for n in g["param_names"])
    all_names = [n for g in groups.values() for n in g["param_names"]]
    assert len(all_names) == len(set(all_names)) == len(trainable)
    assert ("backbone_head" in groups) == p.backbone_head      # the seed's hasattr(model, 'backbone_head') bug
    opt = T.make_optimizer(m, p)
    assert {g["name"] for g in opt.param_groups} == set(groups)


# ----------------------------------------------------------------------------- clipping
def test_per_module_and_global_clipping():
    p = get_preset("tiny")
    m = _model(p)
    for q in m.parameters():
        if q.requires_grad: q.grad = torch.randn_like(q) * 10
    norms = T.clip_gradients(m, p)
    after = {k: float(T._grad_norm(v)) for k, v in T.module_params(m).items()}
    assert after["denoiser"] == pytest.approx(p.clip_denoiser, rel=1e-4)
    assert after["pair_stack"] == pytest.approx(p.clip_pair, rel=1e-4)
    assert after["aux_pair"] == pytest.approx(p.clip_aux, rel=1e-4)
    assert all(norms[k] > after[k] for k in ("denoiser", "pair_stack", "aux_pair"))
    for q in m.parameters():
        if q.requires_grad: q.grad = torch.randn_like(q) * 10
    T.clip_gradients(m, p.replace(clip_mode="global"))
    total = float(T._grad_norm([q for ps in T.module_params(m).values() for q in ps]))
    assert total == pytest.approx(p.clip_denoiser, rel=1e-4)
    with pytest.raises(ValueError, match="clip_mode"):
        T.clip_gradients(m, p.replace(clip_mode="bogus"))


# ----------------------------------------------------------------------------- schedule
def test_schedule_shapes():
    p = get_preset("v13")
    lr = lambda e: T.scheduled_lr(p.lr, p, e, 60)
    assert lr(0) == pytest.approx(0.01 * p.lr) and lr(1.5) == pytest.approx(p.lr * (0.01 + 0.99 * 0.5))
    assert lr(3) == pytest.approx(p.lr) and lr(22.99) == pytest.approx(p.lr)
    assert lr(23 + 37 / 2) == pytest.approx(p.eta_min + (p.lr - p.eta_min) / 2)
    assert lr(60) == pytest.approx(p.eta_min)
    v10 = get_preset("v10")
    assert T.scheduled_lr(v10.lr, v10, 0, 60) == pytest.approx(v10.lr)
    assert T.scheduled_lr(v10.lr, v10, 7.5, 60) == pytest.approx(v10.eta_min + (v10.lr - v10.eta_min) / 2)
    assert T.scheduled_lr(v10.lr, v10, 15, 60) == pytest.approx(v10.lr)        # restart (T0 = 15)
    v12b = get_preset("v12b")
    assert T.scheduled_lr(v12b.lr, v12b, 3, 60) == pytest.approx(v12b.lr)
    assert T.scheduled_lr(v12b.lr, v12b, 31.5, 60) == pytest.approx(v12b.eta_min + (v12b.lr - v12b.eta_min) / 2)
    with pytest.raises(ValueError, match="lr_schedule"):
        T.scheduled_lr(1e-3, p.replace(lr_schedule="linear"), 1, 10)


def test_schedule_is_stepped_per_optimizer_step(tmp_path, sources):
    p = get_preset("tiny", warmup_epochs=1, constant_epochs=0, grad_accum=2)
    t = _trainer(tmp_path, sources, p, epochs=2, step_log=tmp_path / "steps.jsonl", max_steps_per_epoch=None)
    t.fit()
    recs = [json.loads(l) for l in open(tmp_path / "steps.jsonl")]
    n_steps = math.ceil(len(t.train_source.epoch_batches(0)) / 2)
    assert len(recs) == 2 * n_steps
    for r in recs:
        e = r["step"] // n_steps + (r["step"] % n_steps) / n_steps
        assert r["lr"] == pytest.approx(T.scheduled_lr(p.lr, p, e, 2))
    assert recs[0]["lr"] == pytest.approx(0.01 * p.lr) and recs[-1]["lr"] < p.lr


# ----------------------------------------------------------------------------- EMA
def test_ema_tracks_trainable_params_only():
    p = get_preset("tiny")
    m = _model(p)
    ema = T.EMA(m, 0.5)
    assert not any(n.startswith("encoder.") for n in ema.shadow)
    before = {n: v.clone() for n, v in ema.shadow.items()}
    with torch.no_grad():
        for n, q in m.named_parameters():
            if q.requires_grad: q.add_(1.0)
    ema.update(m)
    for n, v in ema.shadow.items():
        assert torch.allclose(v, before[n] + 0.5, atol=1e-6)
    with ema.swapped(m):
        n0 = next(iter(ema.shadow))
        assert torch.allclose(dict(m.named_parameters())[n0], ema.shadow[n0])
    assert torch.allclose(dict(m.named_parameters())[n0], before[n0] + 1.0)


# ----------------------------------------------------------------------------- NaN skip
def test_nonfinite_batches_are_skipped_and_counted(tmp_path, sources):
    from minifold.losses import compute_losses
    calls = {"n": 0}

    def poisoned(out, batch, preset, epoch):
        total, logs = compute_losses(out, batch, preset, epoch)
        calls["n"] += 1
        if out["x0"].requires_grad and calls["n"] in (1, 3):         # two training micro-batches
            total = total * float("nan")
        return total, logs

    t = _trainer(tmp_path, sources, epochs=1, loss_fn=poisoned)
    rows = t.fit()
    assert rows[0]["skipped_batches"] == 2 and rows[0]["skipped_steps"] == 2      # grad_accum=1: those steps are empty
    assert all(torch.isfinite(q).all() for q in t.model.parameters())
    assert math.isfinite(rows[0]["train_total"]) and math.isfinite(rows[0]["val_total"])
    df = pd.read_csv(tmp_path / "run" / "epochs.csv")
    assert df.skipped_batches.tolist() == [2]


# ----------------------------------------------------------------------------- tripwire
def test_tripwire_injects_noise_then_halts(tmp_path, sources):
    t = _trainer(tmp_path, sources, epochs=1)
    t.tripwire = T.Tripwire(low=1e9, patience=3)               # "starving" on every step → an event every 3 steps
    rows = t.fit()
    n_steps = rows[0]["step"]
    assert rows[0]["tripwire_events"] == n_steps // 3 and "noise std 0.01" in rows[0]["tripwire_log"]
    t2 = _trainer(tmp_path / "b", sources, epochs=1)
    t2.tripwire = T.Tripwire(dead=1e9, max_dead=2)
    with pytest.raises(T.TrainingHalted, match="pair-stack grad norm"):
        t2.fit()
    assert T.Tripwire().patience == 50 and T.Tripwire().max_dead == 500 and T.Tripwire().low == 0.01


# ----------------------------------------------------------------------------- checkpoints
def test_checkpoint_contents_weights_only_and_corrupt(tmp_path, sources):
    t = _trainer(tmp_path, sources, epochs=1)
    t.fit()
    last = tmp_path / "run" / "ckpt" / "last.pt"
    s = torch.load(last, map_location="cpu", weights_only=True)
    for k in ("model", "ema", "optimizer", "scheduler", "scaler", "rng", "epoch", "micro", "global_step", "rows"):
        assert k in s, k
    assert set(s["rng"]) >= {"python", "numpy", "torch", "cuda"} and s["epoch"] == 1 and s["micro"] == 0
    assert (tmp_path / "run" / "ckpt" / "best.pt").exists() and not list((tmp_path / "run" / "ckpt").glob("*.tmp"))
    last.write_bytes(last.read_bytes()[:1000])                        # truncated file
    t2 = _trainer(tmp_path, sources, epochs=2)
    with pytest.raises(T.CheckpointError, match="corrupt"):
        t2.fit()


def test_resume_completed_run_is_a_no_op(tmp_path, sources):
    t = _trainer(tmp_path, sources, epochs=1)
    rows = t.fit()
    t2 = _trainer(tmp_path, sources, epochs=1)
    rows2 = t2.fit()
    assert len(rows2) == len(rows) == 1 and rows2[0]["val_total"] == rows[0]["val_total"]
    assert t2.global_step == t.global_step == 3


def _read_steps(path):
    d = {}
    for line in open(path):
        r = json.loads(line)
        d.setdefault(r["step"], []).append(r["loss"])
    return d


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_same_trajectory(tmp_path):
    "Kill a CLI training run with SIGKILL mid-epoch, restart it: the per-step losses equal an uninterrupted run's."
    args = [sys.executable, "-m", "minifold.trainer", "--version", "tiny", "--epochs", "3", "--ddim-every", "0",
            "--save-every-steps", "3", "--no-progress", "--device", "cpu", "--max-val-chains", "4"]
    a, b = tmp_path / "A", tmp_path / "B"
    subprocess.run(args + ["--out-dir", str(a), "--step-log", str(a / "steps.jsonl")], check=True, env=_env(), cwd=ROOT,
                   capture_output=True, timeout=600)
    ref = _read_steps(a / "steps.jsonl")
    n_total = len(ref)
    kill_after = n_total // 2 + 1                                        # mid-epoch 2, after a mid-epoch checkpoint
    proc = subprocess.Popen(args + ["--out-dir", str(b), "--step-log", str(b / "steps.jsonl")], env=_env(), cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log = b / "steps.jsonl"
    t0 = time.time()
    while time.time() - t0 < 300:
        if log.exists() and sum(1 for _ in open(log)) >= kill_after: break
        if proc.poll() is not None: break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL); proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    n_before = sum(1 for _ in open(log))
    assert n_before < n_total
    ck = torch.load(b / "ckpt" / "last.pt", weights_only=True)
    assert 0 < ck["global_step"] < n_total
    res = subprocess.run(args + ["--out-dir", str(b), "--step-log", str(log)], env=_env(), cwd=ROOT,
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "resumed from" in res.stdout
    got = _read_steps(log)
    assert sorted(got) == sorted(ref)
    for s, losses in got.items():
        assert all(l == ref[s][0] for l in losses), (s, losses, ref[s])    # exact: same trajectory
    assert any(len(v) > 1 for v in got.values())                          # some steps really were replayed
    ea, eb = pd.read_csv(a / "epochs.csv"), pd.read_csv(b / "epochs.csv")
    cols = [c for c in ea if c.startswith(("train_", "val_", "grad_norm_")) or c in ("lr", "status", "step")]
    pd.testing.assert_frame_equal(ea[cols], eb[cols])


# ----------------------------------------------------------------------------- warm start, accumulation, AMP, DDIM
def test_warm_start_from_ema_weights(tmp_path, sample_dir):
    r1 = T.train("tiny", out_dir=tmp_path / "a", epochs=1, ddim_every=0, max_val_chains=4, progress=False, verbose=False)
    sd = T.ema_weights(tmp_path / "a")
    ck = torch.load(tmp_path / "a" / "ckpt" / "best.pt", weights_only=True)
    n0 = next(iter(ck["ema"]["shadow"]))
    assert torch.equal(sd[n0], ck["ema"]["shadow"][n0])
    r2 = T.train("tiny", out_dir=tmp_path / "b", epochs=1, ddim_every=0, max_val_chains=4, init_from=tmp_path / "a",
                 max_steps_per_epoch=1, progress=False, verbose=False)
    cfg = json.loads((tmp_path / "b" / "config.json").read_text())
    assert "warm_start" in cfg and cfg["warm_start"]["from"].endswith("best.pt")
    with pytest.raises(T.CheckpointError):
        T.ema_weights(tmp_path / "nothing_here")


def test_grad_accum_bf16_and_ddim_columns(tmp_path, sources):
    p = get_preset("tiny", grad_accum=3, amp="bf16", ddim_steps=4)
    t = _trainer(tmp_path, sources, p, epochs=1, ddim_every=1, ddim_max_chains=3, max_steps_per_epoch=2)
    rows = t.fit()
    assert rows[0]["step"] == 2 and t.accum == 3
    assert t.amp == "bf16" and math.isfinite(rows[0]["train_total"])
    assert 0 <= rows[0]["ddim_tm"] <= 1 and rows[0]["ddim_rmsd"] > 0 and 0 <= rows[0]["ddim_gdt"] <= 1
    assert rows[0]["ddim_chains"] == 3


def test_gradient_cosine_table(tmp_path, sources):
    p = get_preset("tiny")
    t = _trainer(tmp_path, sources, epochs=1)
    t.fit()
    rows = T.gradient_cosine_from_checkpoint(tmp_path / "run" / "ckpt" / "best.pt")
    assert [r["pair"] for r in rows] == ["fape vs rot", "dist vs fape", "dist vs rot", "fape vs bond"]
    for r in rows:
        for k in ("cos_denoiser", "cos_pair_stack", "cos_shared"):
            assert -1 - 1e-5 <= r[k] <= 1 + 1e-5, (r, k)


# ----------------------------------------------------------------------------- DDP
def test_ddp_two_gloo_processes(tmp_path):
    "torchrun with 2 CPU processes (gloo): batches sharded, identical weights on both ranks, rank-0 outputs."
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533",
           "-m", "minifold.trainer", "--version", "tiny", "--epochs", "1", "--ddim-every", "0", "--no-progress",
           "--device", "cpu", "--max-val-chains", "4", "--out-dir", str(out)]
    res = subprocess.run(cmd, env=_env(), cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    df = pd.read_csv(out / "epochs.csv")
    from minifold.data import load_chain_set, default_data_paths, LengthBucketSampler
    n_batches = len(T.ChainBatches(load_chain_set(*default_data_paths(), split="train"), get_preset("tiny"), True).epoch_batches(0))
    assert df.step.tolist() == [n_batches // 2]                 # each rank made half of the steps
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["world_size"] == 2
    assert torch.load(out / "ckpt" / "last.pt", weights_only=True)["global_step"] == n_batches // 2


def test_time_limit_stops_between_epochs_and_resumes(tmp_path, sources):
    t = _trainer(tmp_path, sources, epochs=3, max_steps_per_epoch=1, time_limit_s=1e-3)
    rows = t.fit()
    assert len(rows) == 1 and t.time_stopped and not t.stopped          # the first epoch always runs
    t2 = _trainer(tmp_path, sources, epochs=3, max_steps_per_epoch=1)
    assert len(t2.fit()) == 3 and t2.resumed_from["epoch"] == 1


def test_fp16_gradscaler_path_on_cpu(tmp_path, sources):
    """v10/v11/v11b train in fp16 with a GradScaler: an overflowing step is skipped by the scaler (scale backs off),
    finite steps update the weights, and the scaler state is checkpointed and restored on resume."""
    p = get_preset("tiny", amp="fp16")
    t = _trainer(tmp_path, sources, p, epochs=1, max_steps_per_epoch=6, cpu_fp16=True)
    assert t.amp == "fp16" and t.scaler.is_enabled()
    s0 = t.scaler.get_scale()
    w0 = {n: q.detach().clone() for n, q in t.model.named_parameters() if q.requires_grad}
    # poison the first step's gradients with inf, as an fp16 overflow would: the scaler must skip that step
    hook_calls = {"n": 0}
    first = next(q for q in t.model.parameters() if q.requires_grad)
    def poison(g):
        hook_calls["n"] += 1
        return torch.full_like(g, float("inf")) if hook_calls["n"] == 1 else g
    h = first.register_hook(poison)
    rows = t.fit()
    h.remove()
    assert hook_calls["n"] >= 2
    # every overflow (ours, and any real fp16 overflow at the initial scale 2^16) backs the scale off once
    n_skip = rows[0]["skipped_steps"]
    assert 1 <= n_skip < 6 and t.scaler.get_scale() == s0 * t.scaler.get_backoff_factor() ** n_skip
    assert math.isfinite(rows[0]["train_total"])
    changed = [n for n, q in t.model.named_parameters() if q.requires_grad and not torch.equal(q, w0[n])]
    assert changed and all(torch.isfinite(q).all() for q in t.model.parameters())   # finite steps were applied
    ck = torch.load(tmp_path / "run" / "ckpt" / "last.pt", weights_only=True)
    assert ck["scaler"]["scale"] == t.scaler.get_scale()
    t2 = _trainer(tmp_path, sources, p, epochs=2, max_steps_per_epoch=6, cpu_fp16=True)
    assert t2.maybe_resume() and t2.scaler.get_scale() == t.scaler.get_scale()
