"Tests for minifold.losses: known geometry, invariances, masks, short chains, autocast, compute_losses contract."
import math

import pytest
import torch
import torch.nn.functional as F

from minifold.config import PRESETS, VERSIONS, get_preset, to_model_units
from minifold.data import collate, default_data_paths, featurize, load_chain_set
from minifold.geometry import frames_from_backbone, frames_from_ca, ideal_helix, radius_of_gyration, random_rotation, safe_cdist
from minifold.losses import (LOSS_KEYS, angle_loss, aux_distance_loss, backbone_angle_loss, backbone_bond_loss,
                             backbone_fape_loss, bb_ramp, bond_loss, bond_weight, chain_mean, chirality_loss, clash_loss,
                             compute_losses, dist_bins, distance_mse_loss, fape_loss, frame_rotation_loss, local_distance_loss,
                             loss_weights, omega_loss, random_baselines, rg_loss)


@pytest.fixture(scope="module")
def chains(sample_dir):
    return list(load_chain_set(sample_dir / "chain_set.jsonl"))


def _batch(chains, lengths):
    return collate([featurize(c, (0, min(n, len(c.seq)))) for c, n in zip(chains, lengths)])


def _out(batch, preset, noise=0.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = batch["x0"] + noise * torch.randn(batch["x0"].shape, generator=g)
    R, _ = frames_from_ca(x, batch["ca_mask"])
    if preset.backbone_head:  # v14's true frames are the N-CA-C planes where those atoms are observed
        bb = batch["bb0"]
        Rb, _ = frames_from_backbone(bb[..., 0, :], bb[..., 1, :], bb[..., 2, :])
        R = torch.where(batch["bb_mask"][..., :3].all(-1)[..., None, None], Rb, R)
    b = dist_bins(safe_cdist(batch["x0"], batch["x0"]), preset)
    out = {"x0": x, "R": R, "trans": x, "aux_logits": F.one_hot(b, preset.n_dist_bins).float() * 20,
           "log_rg": radius_of_gyration(batch["x0"], batch["ca_mask"]).log(), "atoms": None}
    if preset.backbone_head:
        atoms = batch["bb0"] + noise * torch.randn(batch["bb0"].shape, generator=g)
        out["atoms"] = torch.where(batch["bb_mask"][..., None], atoms, x[..., None, :].expand_as(atoms))
    return out


def _leaf(out):
    return {k: (v.detach().clone().requires_grad_(True) if isinstance(v, torch.Tensor) and v.is_floating_point() else v)
            for k, v in out.items()}


@pytest.mark.parametrize("name", VERSIONS + ["tiny", "small", "fold"])
def test_perfect_prediction_is_near_zero_and_all_contributors_logged(chains, name):
    p = get_preset(name)
    batch = _batch(chains[:3], (40, 50, 60))
    total, logs = compute_losses(_out(batch, p), batch, p, epoch=2)
    w = loss_weights(p, 2)
    assert {k for k in LOSS_KEYS if w[k] > 0} <= set(logs)
    assert torch.isfinite(total) and total.item() < 0.05
    assert all(isinstance(v, torch.Tensor) for v in logs.values())
    _, noisy = compute_losses(_out(batch, p, noise=0.15), batch, p, epoch=2)
    for k in ("fape", "dist", "total"):
        assert noisy[k] > logs[k]


def test_fape_invariant_to_global_rigid_motion(chains):
    p = get_preset("v13")
    batch = _batch(chains[:2], (50, 50))
    out = _out(batch, p, noise=0.2)
    Q = random_rotation(1, torch.Generator().manual_seed(5))[0]
    moved = dict(out, x0=out["x0"] @ Q.T + 1.0, trans=out["trans"] @ Q.T + 1.0, R=Q @ out["R"])
    a = compute_losses(out, batch, p)[1]
    b = compute_losses(moved, batch, p)[1]
    for k in ("fape", "dist", "bond", "angle", "chiral", "clash"):
        assert torch.allclose(a[k], b[k], atol=1e-5), k
    assert not torch.allclose(a["rot"], b["rot"], atol=1e-3)    # rotation loss supervises absolute orientation


def test_learned_vs_gram_schmidt_frames(chains):
    batch = _batch(chains[:2], (40, 40))
    p11, p11b = get_preset("v11"), get_preset("v11b")
    out = _out(batch, p11, noise=0.1)
    randR = random_rotation(2 * 40, torch.Generator().manual_seed(1)).view(2, 40, 3, 3)
    assert torch.allclose(compute_losses(out, batch, p11)[1]["fape"], compute_losses(dict(out, R=randR), batch, p11)[1]["fape"])
    assert compute_losses(dict(out, R=randR), batch, p11b)[1]["fape"] > compute_losses(out, batch, p11b)[1]["fape"] + 0.1


def test_fape_clamp_units():
    x = to_model_units(ideal_helix(30))[None]
    R, t = frames_from_ca(x)
    m = torch.ones(1, 30, dtype=torch.bool)
    far = x + 100.0                                                   # 1000 Å away in every frame
    Rf, tf = frames_from_ca(far)
    assert torch.allclose(fape_loss(R, t + 100.0, far * 0 + x + 100.0, R, t, x, m), torch.tensor(0.0), atol=1e-3)
    v = fape_loss(torch.eye(3).expand(1, 30, 3, 3), t, x + torch.tensor([0.0, 0, 50.0]), R, t, x, m,
                  clamp=to_model_units(get_preset("v14").fape_clamp))
    assert abs(v.item() - 1.0) < 1e-6                                # clamp = 10 Å = 1.0 model units


def test_clash_threshold_is_3_angstrom_in_model_units():
    thr = to_model_units(get_preset("v13").clash_threshold)
    assert abs(thr - 0.3) < 1e-12
    m = torch.ones(1, 3, dtype=torch.bool)
    def trio(dA): return torch.tensor([[[0.0, 0, 0], [3.8, 0, 0], [0.0, dA, 0]]]) / 10
    assert clash_loss(trio(2.9), m, thr) > 0
    assert clash_loss(trio(3.05), m, thr) == 0 and clash_loss(trio(6.0), m, thr) == 0
    # contact weighting (1 + 2c)
    c = torch.ones(1, 3, 3)
    assert torch.allclose(clash_loss(trio(2.9), m, thr, contacts=c), 9 * clash_loss(trio(2.9), m, thr))


def test_bond_weight_and_ramp():
    p = get_preset("v13")
    assert [bond_weight(e, p) for e in (0, 5, 10, 20)] == [1.0, 2.0, 3.0, 3.0]
    p14 = get_preset("v14")
    assert [round(bb_ramp(e, p14), 3) for e in (0, 1, 4, 9)] == [0.2, 0.4, 1.0, 1.0]
    assert bb_ramp(0, p) == 1.0 and loss_weights(p, 0)["bb_fape"] == 0.0


def test_geometry_losses_on_known_structures():
    h = to_model_units(ideal_helix(16))[None]
    m = torch.ones(1, 16, dtype=torch.bool)
    assert bond_loss(h, m) < 1e-4
    mirror = h * torch.tensor([1.0, 1.0, -1.0])
    assert chirality_loss(mirror, h, m) > 0.5 and angle_loss(mirror, h, m) < 1e-8
    assert distance_mse_loss(mirror, h, m) < 1e-8
    assert torch.allclose(rg_loss(radius_of_gyration(h, m).log() + 0.5, h, m), torch.tensor(0.25), atol=1e-6)
    R, _ = frames_from_ca(h)
    Rz = torch.tensor([[-1.0, 0, 0], [0, -1, 0], [0, 0, 1]])
    assert torch.allclose(frame_rotation_loss(R @ Rz, R, m), torch.tensor(2.0), atol=1e-5)   # 180° → 2


def test_aux_loss_is_ordinal():
    p = get_preset("v14")
    x = to_model_units(ideal_helix(24))[None]
    m = torch.ones(1, 24, dtype=torch.bool)
    b = dist_bins(safe_cdist(x, x), p)
    vals = [aux_distance_loss(F.one_hot((b + s).clamp(0, 31), 32).float() * 20, x, m, p).item() for s in (0, 1, 3, 8)]
    assert vals == sorted(vals) and vals[0] < 1e-3
    with pytest.raises(ValueError, match="bins"):
        aux_distance_loss(torch.zeros(1, 24, 24, 16), x, m, p)


def test_backbone_losses_real_and_nan_atoms(chains):
    full = [c for c in chains if featurize(c)["bb_mask"].all()][:2]
    cgdms = [c for c in chains if not featurize(c)["bb_mask"][:, 3].any()][:2]
    assert full and cgdms
    batch = _batch(full + cgdms, (50, 50, 50, 50))
    bb0, mask, ri = batch["bb0"], batch["mask"], batch["residue_index"]
    assert backbone_bond_loss(bb0[:2], mask[:2], ri[:2]) < 2e-4
    assert backbone_angle_loss(bb0[:2], mask[:2], ri[:2]) < 5e-3
    assert omega_loss(bb0[:2], mask[:2], ri[:2]) < 0.05
    # a cis peptide raises ω loss: rotate residue i+1 onward by 180° about the C–N bond
    R, t, fv = frames_from_ca(batch["x0"], batch["ca_mask"], return_valid=True)
    pred = bb0.clone()
    assert backbone_fape_loss(R, t, pred, R, t, bb0, fv, batch["bb_mask"]) < 1e-3
    # chains without O (NaN in the file) are masked: any predicted O is fine
    pred[2:, :, 3] += 0.5
    assert backbone_fape_loss(R, t, pred, R, t, bb0, fv, batch["bb_mask"] & ~torch.tensor([0, 0, 1, 1]).bool()[:, None, None]) < 1e-3


def test_cis_peptide_omega():
    # build 2 residues: trans (ω = 180°) vs cis (ω = 0°)
    ca0, c0, n1 = torch.tensor([0.0, 0, 0]), torch.tensor([1.5, 0, 0]), torch.tensor([2.0, 1.4, 0])
    trans_ca1, cis_ca1 = torch.tensor([3.5, 1.2, 0]), torch.tensor([1.3, 2.5, 0])
    def atoms(ca1):
        a = torch.zeros(1, 2, 4, 3)
        a[0, 0, 1], a[0, 0, 2], a[0, 1, 0], a[0, 1, 1] = ca0, c0, n1, ca1
        a[0, 0, 0], a[0, 1, 2] = torch.tensor([-0.5, 1.4, 0.3]), ca1 + torch.tensor([1.0, 0.5, 0.5])
        return a
    m = torch.ones(1, 2, dtype=torch.bool)
    assert omega_loss(atoms(trans_ca1), m) < 0.05 and omega_loss(atoms(cis_ca1), m) > 1.9


@pytest.mark.parametrize("n", [1, 2, 3])
def test_short_chains_and_fully_masked_rows_finite_with_grad(chains, n):
    p = get_preset("v14")
    batch = _batch(chains[:2], (n, n))
    batch["mask"][1] = False; batch["ca_mask"][1] = False; batch["bb_mask"][1] = False
    out = _leaf(_out(batch, p, noise=0.1))
    total, logs = compute_losses(out, batch, p, epoch=1)
    total.backward()
    assert torch.isfinite(total) and all(torch.isfinite(v) for v in logs.values())
    for k in ("x0", "R", "atoms", "aux_logits", "log_rg"):
        assert out[k].grad is not None and torch.isfinite(out[k].grad).all(), k


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_reduced_precision_inputs(chains, dtype):
    p = get_preset("v14")
    batch = _batch(chains[:2], (40, 30))
    out = _out(batch, p, noise=0.1)
    ref, _ = compute_losses(out, batch, p, epoch=3)
    low = _leaf({k: (v.to(dtype) if isinstance(v, torch.Tensor) and v.is_floating_point() else v) for k, v in out.items()})
    with torch.autocast("cpu", dtype=torch.bfloat16):
        total, logs = compute_losses(low, batch, p, epoch=3)
    total.backward()
    assert total.dtype == torch.float32 and torch.isfinite(total)
    assert abs(total.item() - ref.item()) < 0.05 * ref.item() + 0.02
    assert all(torch.isfinite(low[k].grad).all() for k in ("x0", "R", "atoms"))


def test_missing_inputs_raise(chains):
    p = get_preset("v14")
    batch = _batch(chains[:1], (20,))
    out = _out(batch, p)
    with pytest.raises(ValueError, match="bb_fape"):
        compute_losses(dict(out, atoms=None), batch, p)
    with pytest.raises(ValueError, match="fape_frames"):
        compute_losses(out, batch, p.replace(fape_frames="nope"))


def test_chain_mean_nan_safe():
    x = torch.tensor([[1.0, float("nan")], [float("inf"), 3.0]], requires_grad=True)
    m = torch.tensor([[True, False], [False, True]])
    v = chain_mean(x, m)
    v.backward()
    assert v.item() == 2.0 and torch.isfinite(x.grad).all()


def test_random_baselines_reported_keys(sample_dir):
    rb = random_baselines(sample_dir / "chain_set.jsonl", max_chains=16)
    for k in ("fape", "rot", "dist", "bond", "angle", "fape_unclamped"):
        assert k in rb and math.isfinite(rb[k])
    assert 0.7 < rb["fape"] <= 1.0 and 1.3 < rb["rot"] < 1.7 and rb["fape_unclamped"] > rb["fape"]


def test_missing_atoms_are_masked_through_compute_losses(chains):
    """v14 through `compute_losses` with the plain `bb_mask` of the batch: chains whose O is NaN in the file (cgdms)
    plus chains with every atom. Whatever sits at the unobserved atoms — in the target (garbage) or in the prediction
    (random) — changes no loss: missing atoms are masked, never zero-filled into the loss."""
    full = [c for c in chains if featurize(c)["bb_mask"].all()][:2]
    cgdms = [c for c in chains if not featurize(c)["bb_mask"][:, 3].any()][:2]
    assert full and cgdms
    p = get_preset("v14")
    batch = _batch(full + cgdms, (40, 40, 40, 40))
    miss = ~batch["bb_mask"] & batch["mask"][..., None]                      # [B, L, 4] unobserved real atoms
    assert miss[2:, :, 3].all() and not miss[:2].any()                       # O missing exactly in the cgdms chains
    out = _out(batch, p, noise=0.05)
    _, ref = compute_losses(out, batch, p, epoch=4)
    assert all(torch.isfinite(v) for v in ref.values())
    g = torch.Generator().manual_seed(7)
    # 1) garbage (huge values, NaN) in the target at the unobserved atoms
    b2 = dict(batch)
    junk = torch.randn(batch["bb0"].shape, generator=g) * 1e3
    b2["bb0"] = torch.where(miss[..., None], junk, batch["bb0"])
    _, l2 = compute_losses(out, b2, p, epoch=4)
    b3 = dict(batch); b3["bb0"] = batch["bb0"].masked_fill(miss[..., None], float("nan"))
    _, l3 = compute_losses(out, b3, p, epoch=4)
    # 2) random predicted O where the truth is unobserved: FAPE ignores it (the C=O bond / angle terms still judge
    #    the prediction's own geometry against ideal values, so the total may change)
    o2 = dict(out); a = out["atoms"].clone()
    a[2:, :, 3] += torch.randn(a[2:, :, 3].shape, generator=g)
    o2["atoms"] = a
    _, l4 = compute_losses(o2, batch, p, epoch=4)
    for k in [*ref]:
        for name, l in (("target junk", l2), ("target NaN", l3), ("pred O moved", l4)):
            if name == "pred O moved" and k not in ("bb_fape", "bb_fape_unclamped", "fape", "fape_unclamped"): continue
            assert torch.isfinite(l[k]) and torch.allclose(l[k], ref[k], atol=1e-6), (k, name, float(l[k]), float(ref[k]))
    # and a moved O where it IS observed does count
    o5 = dict(out); a5 = out["atoms"].clone(); a5[:2, :, 3] += 0.5; o5["atoms"] = a5
    assert compute_losses(o5, batch, p, epoch=4)[1]["bb_fape"] > ref["bb_fape"] + 1e-3


def test_local_distance_loss_is_off_for_the_seed_versions_and_sees_helix_versus_strand(chains):
    assert all(get_preset(v).w_local == 0 for v in VERSIONS)
    p = get_preset("fold", w_local=3.0)                    # runs/fold_v3
    batch = _batch(chains[:2], (40, 50))
    _, logs = compute_losses(_out(batch, p), batch, p)
    assert logs["local"].item() < 1e-6 and loss_weights(p)["local"] == p.w_local
    helix = to_model_units(ideal_helix(30))[None]
    strand = torch.zeros(1, 30, 3); strand[0, :, 0] = to_model_units(3.3) * torch.arange(30)   # extended, 3.3 Å rise
    m = torch.ones(1, 30, dtype=torch.bool)
    # i→i+3: ~5 Å in a helix, ~10 Å extended; the error is several Å², far above a rotated copy's zero
    assert local_distance_loss(strand, helix, m).item() > to_model_units(3.0) ** 2
    assert local_distance_loss(helix @ random_rotation(1, torch.Generator().manual_seed(0))[0].T, helix, m).item() < 1e-8
    nan = helix.clone(); nan[0, 5] = float("nan"); m2 = m.clone(); m2[0, 5] = False              # a missing Cα: masked, finite
    assert torch.isfinite(local_distance_loss(nan, helix, m2))
