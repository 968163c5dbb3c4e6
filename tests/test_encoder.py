"Stage-1 encoder: parameter count, freezing, padding invariance, masked losses, checkpoints, resume, papermill CI run."
import json
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn as nn

import minifold.encoder as E
from minifold.encoder import (ContactClassifier, build_encoder, encoder_losses, load_frozen_encoder, save_encoder,
                              train_encoder)
from minifold.data import ARCH_VOCAB, collate, featurize, load_chain_set, default_data_paths

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = ROOT / "data" / "weights" / "encoder_cpu.pt"


@pytest.fixture(scope="module")
def sample_chains(sample_dir):
    return load_chain_set(sample_dir / "chain_set.jsonl", sample_dir / "chain_set_splits.json")


def _batch(chains, max_len=40):
    return collate([featurize(c, (0, min(len(c), max_len))) for c in chains])


@pytest.mark.parametrize("name", ["seed", "cpu"])
def test_param_count_matches_seed(name):
    n = ContactClassifier(name, n_arch=len(ARCH_VOCAB)).n_params()
    print(f"{name}: {n:,d} parameters")
    assert abs(n - 1.2e6) / 1.2e6 < 0.10, n


def test_output_shapes_and_alignment(sample_chains):
    m = ContactClassifier("tiny").eval()
    b = _batch(sample_chains[:3])
    o = m(b["tokens"], b["mask"])
    B, L = b["tokens"].shape
    assert o["single"].shape == (B, L, 32) and o["pair"].shape == (B, L, L, 16) and o["pooled"].shape == (B, 32)
    assert o["class_logits"].shape == (B, 4) and o["arch_logits"].shape == (B, len(ARCH_VOCAB))
    assert o["contact_logits"].shape == (B, L, L)


@pytest.mark.parametrize("name", ["tiny", "cpu"])
def test_padding_does_not_change_real_residues(sample_chains, name):
    torch.manual_seed(0)
    m = ContactClassifier(name).eval()
    chains = sorted(sample_chains[:4], key=len)
    b = _batch(chains, max_len=48)
    with torch.no_grad():
        ob = m(b["tokens"], b["mask"])
        for i, c in enumerate(chains):
            L = int(b["length"][i])
            oi = m(b["tokens"][i:i + 1, :L], b["mask"][i:i + 1, :L])
            assert torch.allclose(ob["single"][i, :L], oi["single"][0], atol=1e-4)
            assert torch.allclose(ob["pair"][i, :L, :L], oi["pair"][0], atol=1e-4)
            assert torch.allclose(ob["contact_logits"][i, :L, :L], oi["contact_logits"][0], atol=1e-4)
            for k in ("pooled", "class_logits", "arch_logits"):
                assert torch.allclose(ob[k][i], oi[k][0], atol=1e-4), k
            # what sits in the padding does not matter either
            tok = b["tokens"][i:i + 1].clone(); tok[0, L:] = 7
            assert torch.allclose(m(tok, b["mask"][i:i + 1])["single"][0, :L], oi["single"][0], atol=1e-4)


def test_build_encoder_random_is_frozen_and_warns():
    with pytest.warns(UserWarning, match="randomly initialised"):
        enc = build_encoder("tiny", weights=None)
    assert not enc.training and all(not p.requires_grad for p in enc.parameters())
    # a downstream module trains on the encoder's features; the encoder must not move
    head = nn.Linear(32, 1)
    parent = nn.ModuleDict(dict(encoder=enc, head=head)); parent.train()
    assert not enc.training                                  # parent.train() cannot switch dropout on
    tok = torch.randint(4, 24, (2, 12)); mask = torch.ones(2, 12, dtype=torch.bool)
    before = {k: v.clone() for k, v in enc.state_dict().items()}
    out0 = enc(tok, mask)["single"].clone()
    opt = torch.optim.AdamW(parent.parameters(), lr=1e-1)  # even if handed to the optimizer
    loss = head(enc(tok, mask)["single"]).pow(2).mean()
    loss.backward(); opt.step()
    assert head.weight.grad is not None and all(p.grad is None for p in enc.parameters())
    assert all(torch.equal(before[k], v) for k, v in enc.state_dict().items())
    assert torch.equal(enc(tok, mask)["single"], out0)


def test_losses_mask_unknown_labels(sample_chains):
    torch.manual_seed(0)
    m = ContactClassifier("tiny")
    b = _batch(sample_chains[:4])
    b["cath_class"] = torch.tensor([0, -1, 2, -1]); b["cath_arch"] = torch.tensor([-1, 3, -1, -1])
    out = m(b["tokens"], b["mask"])
    total, logs = encoder_losses(out, b, "tiny")
    assert logs["class_n"] == 2 and logs["arch_n"] == 1 and torch.isfinite(total)
    # logits of unlabelled proteins do not enter the class/arch losses
    o2 = {k: v.detach().clone() for k, v in out.items()}
    o2["class_logits"][[1, 3]] += torch.randn(2, 4) * 50; o2["arch_logits"][[0, 2, 3]] *= -7
    _, l2 = encoder_losses(o2, b, "tiny")
    assert torch.allclose(l2["class_loss"], logs["class_loss"]) and torch.allclose(l2["arch_loss"], logs["arch_loss"])
    # no label at all: exact zeros, still differentiable; -1 is never a class (no index error, no wrap-around)
    b0 = dict(b, cath_class=torch.full((4,), -1), cath_arch=torch.full((4,), -1))
    t0, l0 = encoder_losses(m(b["tokens"], b["mask"]), b0, "tiny")
    assert float(l0["class_loss"]) == 0 and float(l0["arch_loss"]) == 0
    t0.backward()
    # contacts: padded / unobserved pairs are ignored
    o3 = {k: v.detach().clone() for k, v in out.items()}
    pad = ~(b["mask"][:, :, None] & b["mask"][:, None, :])
    o3["contact_logits"][pad] = 1e4
    _, l3 = encoder_losses(o3, b, "tiny")
    assert torch.allclose(l3["contact_bce"], logs["contact_bce"])
    with pytest.raises(ValueError, match="no 'contacts'"):
        encoder_losses(out, {k: v for k, v in b.items() if k != "contacts"}, "tiny")


def test_checkpoint_roundtrip_and_errors(tmp_path):
    m = ContactClassifier("tiny")
    p = save_encoder(m, tmp_path / "enc.pt", "tiny", ARCH_VOCAB, extra=dict(note="x"))
    f = load_frozen_encoder(p)
    assert f.extra["note"] == "x" and f.arch_vocab == list(ARCH_VOCAB)
    tok = torch.randint(4, 24, (1, 9))
    assert torch.allclose(f(tok)["pair"], m.eval()(tok)["pair"], atol=1e-5)
    assert build_encoder("tiny", weights=p).n_params() == m.n_params()
    with pytest.raises(ValueError, match="differs"):
        build_encoder("cpu", weights=p)
    with pytest.raises(FileNotFoundError, match="not found"):
        load_frozen_encoder(tmp_path / "nope.pt")
    (tmp_path / "bad.pt").write_bytes(b"\x00garbage")
    with pytest.raises(ValueError, match="corrupt"):
        load_frozen_encoder(tmp_path / "bad.pt")
    torch.save({"hello": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a Mini-Fold encoder"):
        load_frozen_encoder(tmp_path / "other.pt")
    half = save_encoder(m, tmp_path / "half.pt", half=True)
    assert half.stat().st_size < p.stat().st_size and load_frozen_encoder(half).n_params() == m.n_params()


def _rows(r):
    return [{k: v for k, v in row.items() if k != "epoch_s"} for row in r["rows"]]


def test_resume_after_interruption(tmp_path, monkeypatch):
    kw = dict(preset="tiny", epochs=3, max_len=32, progress=False, verbose=False)
    full = train_encoder(out_dir=tmp_path / "full", **kw)
    # crash in the middle of epoch 2 (after epoch 1's checkpoint): the exception propagates, last.pt is epoch 1
    calls = {"n": 0}
    real = E.encoder_losses
    def crashing(out, batch, preset):
        calls["n"] += 1
        if calls["n"] == 8:   # epoch 2, second training step (epoch 1 = 4 train + 2 validation calls)
            raise KeyboardInterrupt("simulated interruption")
        return real(out, batch, preset)
    monkeypatch.setattr(E, "encoder_losses", crashing)
    with pytest.raises(KeyboardInterrupt):
        train_encoder(out_dir=tmp_path / "cut", **kw)
    monkeypatch.setattr(E, "encoder_losses", real)
    ck = torch.load(tmp_path / "cut" / "ckpt" / "last.pt", weights_only=True)
    assert ck["epoch"] == 1 and not list((tmp_path / "cut" / "ckpt").glob("*.tmp*"))
    resumed = train_encoder(out_dir=tmp_path / "cut", **kw)
    assert _rows(resumed) == _rows(full)
    a = torch.load(tmp_path / "full" / "ckpt" / "last.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "cut" / "ckpt" / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    # a finished run returns at once; a different run in the same folder is refused
    again = train_encoder(out_dir=tmp_path / "cut", **kw)
    assert again["stop_reason"] == "done" and len(again["rows"]) == 3
    with pytest.raises(ValueError, match="different run"):
        train_encoder(out_dir=tmp_path / "cut", **dict(kw, seed=1))
    (tmp_path / "cut" / "ckpt" / "last.pt").write_bytes(b"truncated")
    with pytest.raises(ValueError, match="corrupt"):
        train_encoder(out_dir=tmp_path / "cut", **kw)


def test_csv_has_seed_columns(tmp_path):
    import pandas as pd
    r = train_encoder(preset="tiny", epochs=2, patience=1, max_len=32, out_dir=tmp_path, progress=False, verbose=False)
    df = pd.read_csv(r["csv_path"])
    for c in ["epoch", "val_total", "train_class_acc", "val_class_acc", "train_arch_acc", "val_arch_acc",
              "contact_recall_val", "contact_bce_val", "lr", "status"]:
        assert c in df.columns, c
    assert df.status.iloc[0] == "NEW BEST"
    assert set(df.status) <= {"NEW BEST", "pat 1", "EARLY STOP"}
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["stage"] == "stage1" and cfg["preset"]["name"] == "tiny"


def test_papermill_tiny_end_to_end(tmp_path):
    "The CI-sized run: the notebook with its defaults (tiny preset, bundled sample), UMAP off to stay well < 60 s."
    nb = ROOT / "nbs" / "11_train_encoder.ipynb"
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "papermill", str(nb), str(tmp_path / "out.ipynb"), "-p", "out_dir", str(out),
           "-p", "run_umap", "False", "-k", "python3", "--cwd", str(ROOT)]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    for f in ["epochs.csv", "config.json", "test_contact_metrics.csv", "test_summary.json",
              "encoder_training_curves.png", "encoder_contact_maps.png", "encoder_embeddings_pca_umap.png",
              "ckpt/best.pt"]:
        assert (out / f).exists(), f
    s = json.loads((out / "test_summary.json").read_text())
    assert s["preset"] == "tiny" and 0 <= s["top_L_long_ours"] <= 1


@pytest.mark.skipif(not WEIGHTS.exists(), reason="trained CPU weights not committed yet")
def test_committed_cpu_weights():
    assert WEIGHTS.stat().st_size < 6e6
    enc = build_encoder("cpu", weights=WEIGHTS)
    assert not enc.training and abs(enc.n_params() - 1.2e6) / 1.2e6 < 0.10
    tok = torch.randint(4, 24, (1, 30))
    o = enc(tok)
    assert o["pair"].shape == (1, 30, 30, 64) and o["single"].shape == (1, 30, 128) and o["pooled"].shape == (1, 128)



def test_project_embeddings_umap_smoke():
    "UMAP of the Stage-1 embedding figure on 30 points (numba compilation dominates: ~10-20 s on a CPU)."
    import numpy as np
    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(0, 1, (15, 16)), rng.normal(8, 1, (15, 16))]).astype(np.float32)   # 2 clusters
    proj = E.project_embeddings(X, methods=("PCA", "UMAP"), seed=0)
    assert set(proj) == {"PCA", "UMAP"}
    for Y in proj.values():
        assert Y.shape == (30, 2) and np.isfinite(Y).all()
    U = proj["UMAP"]
    d = np.linalg.norm(U[:, None] - U[None], axis=-1) + np.eye(30) * 1e9
    assert ((d.argmin(1) < 15) == (np.arange(30) < 15)).all()          # nearest neighbours stay in their cluster
    assert np.allclose(E.project_embeddings(X, methods=("UMAP",), seed=0)["UMAP"], U)   # fixed seed: deterministic
    with pytest.raises(ValueError, match="UMAP needs"):
        E.project_embeddings(X[:4], methods=("UMAP",))


def test_contact_map_figure_has_threshold_free_scores(sample_chains):
    "Panel titles carry long-range top-L/5 and top-L precision, which stay informative when nothing passes p >= 0.5."
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    preds = E.predict_chains(ContactClassifier("tiny"), sample_chains[:4], max_len=60)
    r = preds[0]
    low = dict(r, probs=(r["contacts"] * 0.3 + 0.01).astype(np.float32))      # perfect ranking, all p < 0.5
    s = E.contact_map_scores(low)
    assert np.isnan(s["precision"]) and s["recall"] == 0 and s["top_l5"] == 1.0 and 0 < s["top_l"] <= 1
    fig, picks = E.plot_contact_maps(preds, n=3)
    titles = [ax.get_title() for ax in fig.axes if ax.get_title().startswith("predicted")]
    assert len(picks) == 3 and len(titles) == 3
    assert all("top-L/5" in t and "top-L " in t and "R=" in t for t in titles)
    plt.close(fig)
    fig, _ = E.plot_contact_maps([low], n=1)
    (title,) = [ax.get_title() for ax in fig.axes if ax.get_title().startswith("predicted")]
    assert "top-L/5 1.00" in title and "no pair called, P undefined, R=0.00" in title
    plt.close(fig)


def test_run_identity_is_portable_and_ci_default_trains_fresh(tmp_path, monkeypatch):
    "run_id stores data paths relative to the project root; the CI-sized default (tiny, no out_dir) never just resumes."
    import minifold.config as C
    kw = dict(preset="tiny", epochs=1, max_len=32, progress=False, verbose=False)
    r = train_encoder(out_dir=tmp_path / "a", **kw)
    ck = torch.load(tmp_path / "a" / "ckpt" / "last.pt", weights_only=True)
    assert (ck["run_id"]["data"], ck["run_id"]["splits"]) == ("data/sample/chain_set.jsonl",
                                                              "data/sample/chain_set_splits.json")
    cfg = json.loads((tmp_path / "a" / "config.json").read_text())
    assert (cfg["data"], cfg["splits"]) == (ck["run_id"]["data"], ck["run_id"]["splits"])
    assert E._portable_path(ROOT.parent / "shared" / "x.jsonl") == "../shared/x.jsonl"    # the shared pack's place
    if not str(tmp_path.resolve()).startswith(str(ROOT.parent.resolve())):               # elsewhere: absolute
        assert E._portable_path(tmp_path / "x") == (tmp_path / "x").resolve().as_posix()
    # a checkpoint written with absolute paths (older format) still resumes in the same checkout
    ck["run_id"] = dict(ck["run_id"], data=str(ROOT / "data/sample/chain_set.jsonl"),
                        splits=str(ROOT / "data/sample/chain_set_splits.json"))
    torch.save(ck, tmp_path / "a" / "ckpt" / "last.pt")
    again = train_encoder(out_dir=tmp_path / "a", **kw)
    assert again["stop_reason"] == "done" and again["start_epoch"] == 2          # finished: resumed, nothing trained
    assert r["start_epoch"] == 1
    # the CI-sized default: out_dir None → runs/encoder_tiny (redirected here); a finished run there is retrained
    monkeypatch.setattr(C, "default_run_dir", lambda name: tmp_path / "runs" / name)
    first = train_encoder(**kw)
    assert first["out_dir"] == tmp_path / "runs" / "encoder_tiny" and first["start_epoch"] == 1
    second = train_encoder(**kw)
    assert second["start_epoch"] == 1 and len(second["rows"]) == 1 and second["stop_reason"] == "done"
    assert train_encoder(resume=True, **kw)["start_epoch"] == 2                  # explicit resume=True still resumes
