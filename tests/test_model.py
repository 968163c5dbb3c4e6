"MiniFold assembly: contract, padding, CFG masking, parameter counts vs the seed, warm starts (minifold.model)."
import logging
import warnings

import pytest
import torch

from minifold.config import get_preset, VERSIONS
from minifold.data import PAD, MASK, load_chain_set, featurize, crop_window, collate
from minifold.model import (MiniFold, build_model, apply_cfg_dropout, count_parameters, warm_start,
                            seed_count_range, SEED_FROZEN_M)

pytestmark = pytest.mark.filterwarnings("ignore:build_encoder")
logging.getLogger("minifold.encoder").setLevel(logging.ERROR)

def _preset(name, **kw):
    return get_preset(name, **kw)


def _sample_batch(sample_dir, n=3, max_len=40):
    chains = load_chain_set(sample_dir / "chain_set.jsonl", sample_dir / "chain_set_splits.json")
    items = [featurize(c, crop_window(len(c), max_len)) for c in list(chains)[:n]]
    return collate(items)


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return build_model("tiny").eval()


def test_contract_on_real_sample(tiny, sample_dir):
    b = _sample_batch(sample_dir)
    B, L = b["mask"].shape
    t = torch.tensor([0, 500, 999])
    x_t = tiny.schedule.q_sample(b["x0"], t, torch.randn_like(b["x0"]), b["mask"])
    out = tiny(b, x_t, t)
    p = tiny.preset
    assert out["single"].shape[:2] == (B, L) and out["pair"].shape == (B, L, L, p.d_pair)
    assert out["aux_logits"].shape == (B, L, L, p.n_dist_bins) and out["log_rg"].shape == (B,)
    assert out["x0"].shape == (B, L, 3) and out["trans"].shape == (B, L, 3)
    assert out["R"].shape == (B, L, 3, 3) and out["atoms"].shape == (B, L, 4, 3)
    assert torch.equal(out["mask"], b["mask"])
    for k in ("x0", "R", "atoms", "pair", "aux_logits", "log_rg"):
        assert torch.isfinite(out[k]).all(), k
    # Cα of the v14 atoms is the predicted x0
    assert torch.allclose(out["atoms"][:, :, 1], out["x0"], atol=1e-6)


def test_submodule_paths_and_frozen_encoder():
    m = build_model(_preset("tiny"))
    assert m.get_submodule("denoiser.backbone_head") is m.denoiser.backbone_head
    for name in ("encoder", "pair_stack", "aux_pair", "rg_pred", "denoiser", "schedule"):
        m.get_submodule(name)
    m.train()
    assert not m.encoder.training and m.denoiser.training
    c = count_parameters(m)
    assert c["frozen"] == sum(q.numel() for q in m.encoder.parameters()) and c["trainable"] + c["frozen"] == c["total"]
    assert not any(k.startswith("schedule.") for k in m.state_dict())       # schedule tables are not weights


def test_padding_never_changes_real_residues(sample_dir):
    torch.manual_seed(0)
    m = build_model("tiny").eval()
    b = _sample_batch(sample_dir, n=2, max_len=30)
    L0 = int(b["length"][0])
    one = {k: (v[:1, :L0] if torch.is_tensor(v) and v.dim() >= 2 else v[:1] if torch.is_tensor(v) else v[:1])
           for k, v in b.items()}
    one["contacts"] = b["contacts"][:1, :L0, :L0]
    pad = 7
    padded = {k: v for k, v in one.items()}
    padded["tokens"] = torch.nn.functional.pad(one["tokens"], (0, pad), value=PAD)
    padded["mask"] = torch.nn.functional.pad(one["mask"], (0, pad), value=False)
    padded["residue_index"] = torch.nn.functional.pad(one["residue_index"], (0, pad), value=0)
    x_t = torch.randn(1, L0, 3)
    x_t_pad = torch.cat([x_t, 50 * torch.randn(1, pad, 3)], 1)
    t = torch.tensor([300])
    o1, o2 = m(one, x_t, t), m(padded, x_t_pad, t)
    for k in ("x0", "R", "atoms", "single"):
        assert torch.allclose(o2[k][:, :L0], o1[k], atol=1e-4), k
    assert torch.allclose(o2["pair"][:, :L0, :L0], o1["pair"], atol=1e-4)
    assert torch.allclose(o2["aux_logits"][:, :L0, :L0], o1["aux_logits"], atol=1e-4)
    assert torch.allclose(o2["log_rg"], o1["log_rg"], atol=1e-5)
    sc = {k: v.detach() for k, v in m.denoise(m.condition(one), x_t, t).items() if v is not None}
    sc_pad = {k: torch.nn.functional.pad(v, (0, 0) * (v.dim() - 2) + (0, pad)) for k, v in sc.items()}
    a = m.denoise(m.condition(one), x_t, t, sc)["x0"]
    b2 = m.denoise(m.condition(padded), x_t_pad, t, sc_pad)["x0"]
    assert torch.allclose(b2[:, :L0], a, atol=1e-4)


def test_cfg_uses_mask_token_never_pad(tiny, sample_dir):
    "The seed's v13 bug: null token = PAD → encoder mask `ids != PAD` all False → NaN. Here the mask survives."
    b = _sample_batch(sample_dir)
    g = torch.Generator().manual_seed(0)
    tok = apply_cfg_dropout(b["tokens"], b["mask"], 1.0, g)          # every chain unconditional
    assert (tok[b["mask"]] == MASK).all() and (tok[~b["mask"]] == PAD).all()
    assert torch.equal(tok != PAD, b["mask"])                        # the encoder's default mask is unchanged
    ub = tiny.apply_cfg_dropout(b, 1.0, generator=g)
    assert ub is not b and ub["tokens"] is not b["tokens"] and torch.equal(ub["mask"], b["mask"])
    enc = tiny.encoder(ub["tokens"])                                # mask derived from tokens, as in the seed
    assert torch.equal(enc["mask"], b["mask"])
    cond = tiny.condition(ub)
    t = torch.full((b["mask"].shape[0],), 400)
    out = tiny.denoise(cond, torch.randn_like(b["x0"]), t)
    assert all(torch.isfinite(cond[k]).all() for k in ("single", "pair", "aux_logits", "log_rg"))
    assert torch.isfinite(out["x0"]).all()
    # the PAD variant really is degenerate for the encoder: what we guard against
    assert not (b["tokens"].masked_fill(b["mask"], PAD) != PAD).any()
    # p = 0 is the identity, p outside [0, 1] an error, default p from the preset
    assert apply_cfg_dropout(b["tokens"], b["mask"], 0.0) is b["tokens"]
    with pytest.raises(ValueError):
        apply_cfg_dropout(b["tokens"], b["mask"], 1.5)
    n = sum(bool((tiny.apply_cfg_dropout(b, generator=torch.Generator().manual_seed(i))["tokens"] == MASK).any())
            for i in range(50))
    assert 0 < n < 50 * 3 * 0.5                                     # tiny.preset.p_uncond = 0.1 per chain


@pytest.mark.parametrize("name", VERSIONS)
def test_parameter_counts_match_seed(name):
    "Every seed version lands within ±3% of the seed's published count or range; frozen encoder ≈ 1.2M."
    p = _preset(name, grad_checkpoint=False)
    c = count_parameters(build_model(p))
    lo, hi = seed_count_range(name)
    tot = c["total"] / 1e6
    print(f"{name}: total {tot:.2f}M (seed {lo:.2f}–{hi:.2f}), frozen {c['frozen'] / 1e6:.2f}M")
    assert 0.9 * SEED_FROZEN_M <= c["frozen"] / 1e6 <= 1.1 * SEED_FROZEN_M
    assert lo <= tot <= hi, f"{name}: {tot:.2f}M outside the seed's {lo:.2f}–{hi:.2f}M"


def test_warm_start_v14_from_v13():
    torch.manual_seed(0)
    m13 = build_model(_preset("v13"))
    m14 = build_model(_preset("v14"))
    with torch.no_grad():
        for q in m13.parameters(): q.add_(0.01)                     # make the source distinguishable
    rep = warm_start(m14, m13.state_dict(), verbose=False)
    head = {k for k in m14.state_dict() if k.startswith("denoiser.backbone_head.")}
    assert head and set(rep["missing"]) == head
    assert rep["n_unexpected"] == rep["n_mismatched"] == rep["n_skipped"] == 0
    assert rep["n_matched"] == len(m13.state_dict())
    assert rep["units"]["denoiser.backbone_head"] == "new"
    assert all(s == "loaded" for u, s in rep["units"].items() if u != "denoiser.backbone_head")
    sd14 = m14.state_dict()
    assert all(torch.equal(sd14[k], v) for k, v in m13.state_dict().items())
    assert (m14.denoiser.backbone_head.residual.weight == 0).all()  # the new head keeps its zero init


def test_warm_start_v13_from_v12b_keeps_new_pair_stack(tmp_path):
    torch.manual_seed(0)
    m12 = build_model(_preset("v12b"))
    m13 = build_model(_preset("v13"))
    before = {k: v.clone() for k, v in m13.state_dict().items() if k.startswith("pair_stack.")}
    # through a file, as the trainer does (a plain state-dict file is accepted by trainer.ema_weights)
    path = tmp_path / "v12b.pt"
    torch.save(m12.state_dict(), path)
    rep = m13.warm_start(path, verbose=False)
    assert rep["units"]["pair_stack"].startswith("architecture changed")
    for u in ("denoiser", "aux_pair", "rg_pred", "encoder"):
        assert rep["units"][u] == "loaded", u
    assert not any(k.startswith("pair_stack.") for k in rep["matched"])
    assert all(torch.equal(m13.state_dict()[k], v) for k, v in before.items())     # pair stack untouched
    sd12 = m12.state_dict()
    assert all(torch.equal(v, sd12[k]) for k, v in m13.state_dict().items() if k.startswith("denoiser."))
    # partial=True is plain strict=False: name+shape matches inside the changed pair stack load too
    m13b = build_model(_preset("v13"))
    rep2 = m13b.warm_start(m12.state_dict(), partial=True, verbose=False)
    assert rep2["units"]["pair_stack"] == "partial" and rep2["n_matched"] >= rep["n_matched"]
    # exclusion
    rep3 = build_model(_preset("v13")).warm_start(m12.state_dict(), exclude=["denoiser"], verbose=False)
    assert rep3["units"]["denoiser"] == "excluded" and not any(k.startswith("denoiser.") for k in rep3["matched"])


def test_warm_start_from_trainer_checkpoint_dict_uses_ema():
    torch.manual_seed(0)
    src, dst = build_model("tiny"), build_model("tiny")
    sd = src.state_dict()
    k = "rg_pred.mlp.0.weight"
    ema = {k: torch.full_like(sd[k], 0.123)}
    rep = warm_start(dst, {"model": sd, "ema": {"decay": 0.9, "shadow": ema}}, verbose=False)
    assert rep["n_missing"] == 0 and torch.allclose(dst.rg_pred.mlp[0].weight, torch.tensor(0.123))
    with pytest.raises(TypeError):
        warm_start(dst, 42)


def test_egnn_v10_path_runs():
    p = get_preset("v10", d_single=16, n_layers=2, d_pair=8, encoder="tiny", aux_pair_dim=8, n_pair_blocks=0,
                   grad_checkpoint=False)
    m = build_model(p)
    B, L = 2, 9
    batch = dict(tokens=torch.randint(4, 24, (B, L)), mask=torch.ones(B, L, dtype=torch.bool),
                 residue_index=torch.arange(L).expand(B, L))
    out = m(batch, torch.randn(B, L, 3), torch.tensor([3, 800]))
    assert out["x0"].shape == (B, L, 3) and out["atoms"] is None and torch.isfinite(out["x0"]).all()


def test_bad_inputs():
    with pytest.raises(ValueError, match="denoiser"):
        MiniFold(get_preset("tiny", denoiser="transformer"))
    with pytest.raises(TypeError):
        MiniFold(3.14)
    m = build_model("tiny")
    with pytest.raises(ValueError, match="differ"):
        m.condition(dict(tokens=torch.randint(4, 24, (2, 5)), mask=torch.ones(2, 6, dtype=torch.bool)))


@pytest.mark.parametrize("name", ["tiny", "v10"])
def test_model_denoise_is_se3_equivariant(name, sample_dir):
    """End to end through MiniFold (encoder → pair stack → denoiser): sequence features don't see coordinates, and
    rotating/translating x_t (and the self-conditioning input) moves the predicted x0 (and frames, atoms) rigidly."""
    from minifold.geometry import random_rotation
    overrides = {} if name == "tiny" else dict(encoder="tiny", d_single=32, n_layers=2, d_pair=16, pair_stack="none",
                                                aux_pair_dim=8, n_aux_blocks=1, grad_checkpoint=False)
    torch.manual_seed(0)
    m = build_model(get_preset(name, **overrides)).eval()
    b = _sample_batch(sample_dir, n=2, max_len=24)
    mask = b["mask"]
    g = torch.Generator().manual_seed(1)
    x_t = b["x0"] + 0.3 * torch.randn(b["x0"].shape, generator=g) * mask[..., None]
    t = torch.tensor([30, 400])
    with torch.no_grad():
        cond = m.condition(b)
        prev = m.denoise(cond, x_t, t)
        out = m.denoise(cond, x_t, t, prev)
        Rg = random_rotation(1, generator=torch.Generator().manual_seed(5))[0]
        tg = torch.tensor([3.0, -1.0, 2.0])
        move = lambda v: v @ Rg.T + tg
        prev2 = {k: (move(v) if k in ("x0", "trans", "atoms") and v is not None else
                     (Rg @ v if k == "R" and v is not None else v)) for k, v in prev.items()}
        out2 = m.denoise(cond, move(x_t), t, prev2)
    assert torch.allclose(out2["x0"][mask], move(out["x0"])[mask], atol=2e-4)
    if out.get("R") is not None:
        assert torch.allclose(out2["R"][mask], (Rg @ out["R"])[mask], atol=2e-4)
    if out.get("atoms") is not None:
        assert torch.allclose(out2["atoms"][mask], move(out["atoms"])[mask], atol=2e-4)
