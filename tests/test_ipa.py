"Invariant Point Attention denoiser: equivariance, padding, mixed-precision robustness (minifold.ipa)."
import math
import pytest
import torch
from torch import nn

from minifold.config import get_preset
from minifold.geometry import random_rotation, frames_from_ca
from minifold.ipa import (InvariantPointAttention, FrameUpdate, IPADenoiser, snr_gated_frames, chain_mean_frame,
                          sc_distogram)

DEV = "cuda" if torch.cuda.is_available() else "cpu"


def _randomise(module, std=0.2, seed=0):
    "Random weights everywhere (the zero inits of the output layers would make many checks trivial)."
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            if p.dim() > 1: p.copy_(torch.randn(p.shape, generator=g) * std)
    return module


def _denoiser(name="tiny", d_cond=12, **kw):
    p = get_preset(name, **kw)
    return _randomise(IPADenoiser(p, d_cond_single=d_cond, d_cond_pair=p.d_pair)), p


def _inputs(p, B=2, L=11, d_cond=12, seed=1):
    g = torch.Generator().manual_seed(seed)
    single = torch.randn(B, L, d_cond, generator=g)
    pair = torch.randn(B, L, L, p.d_pair, generator=g)
    mask = torch.ones(B, L, dtype=torch.bool)
    mask[-1, L - 3:] = False
    # a compact, protein-like trace (3.8 Å steps in model units) plus noise
    steps = torch.randn(B, L, 3, generator=g)
    x = torch.cumsum(0.38 * steps / steps.norm(dim=-1, keepdim=True), 1)
    x = x - x.mean(1, keepdim=True) + 0.1 * torch.randn(B, L, 3, generator=g)
    return single, pair, mask, x


@pytest.mark.parametrize("conf", [0.0, 0.35, 1.0])
def test_se3_equivariance(conf):
    torch.manual_seed(0)
    den, p = _denoiser()
    den.eval()
    single, pair, mask, x = _inputs(p)
    t = torch.tensor([50, 800]); c = torch.full((2,), conf)
    out = den(single, pair, mask, x, t, c)
    for k in range(3):
        Rg = random_rotation(1, generator=torch.Generator().manual_seed(k))[0]
        tg = torch.randn(3) * 5
        o2 = den(single, pair, mask, x @ Rg.T + tg, t, c)     # pair/single features unchanged (invariant)
        assert torch.allclose(o2["x0"][mask], (out["x0"] @ Rg.T + tg)[mask], atol=2e-4)
        assert torch.allclose(o2["R"][mask], (Rg @ out["R"])[mask], atol=2e-4)
        assert torch.allclose(o2["atoms"][mask], (out["atoms"] @ Rg.T + tg)[mask], atol=2e-4)


def test_seed_identity_reference_is_not_equivariant_but_mean_is():
    "The seed's slerp(I, R_GS, conf) breaks equivariance for conf < 1; our default reference does not."
    x = torch.randn(1, 10, 3); m = torch.ones(1, 10, dtype=torch.bool)
    Rg = random_rotation(1, generator=torch.Generator().manual_seed(3))[0]
    Ri, _ = snr_gated_frames(x, m, 0.4, reference="identity")
    Ri2, _ = snr_gated_frames(x @ Rg.T, m, 0.4, reference="identity")
    assert not torch.allclose(Ri2, Rg @ Ri, atol=1e-3)
    Rm, _ = snr_gated_frames(x, m, 0.4)
    Rm2, _ = snr_gated_frames(x @ Rg.T, m, 0.4)
    assert torch.allclose(Rm2, Rg @ Rm, atol=1e-5)
    with pytest.raises(ValueError):
        snr_gated_frames(x, m, 0.4, reference="lab")


def test_padding_never_changes_real_residues():
    torch.manual_seed(0)
    den, p = _denoiser()
    den.eval()
    single, pair, mask, x = _inputs(p, B=1, L=9)
    mask[:] = True
    t, c = torch.tensor([300]), torch.tensor([0.6])
    ref = den(single, pair, mask, x, t, c)
    for extra in (1, 6):
        L2 = 9 + extra
        s2 = torch.cat([single, torch.randn(1, extra, single.shape[-1]) * 30], 1)
        p2 = torch.randn(1, L2, L2, p.d_pair) * 30
        p2[:, :9, :9] = pair
        x2 = torch.cat([x, torch.randn(1, extra, 3) * 100], 1)
        m2 = torch.cat([mask, torch.zeros(1, extra, dtype=torch.bool)], 1)
        out = den(s2, p2, m2, x2, t, c)
        for k in ("x0", "R", "atoms"):
            assert torch.allclose(out[k][:, :9], ref[k], atol=1e-5), (k, extra)
        assert (out["x0"][:, 9:] == 0).all() and (out["atoms"][:, 9:] == 0).all()
        assert torch.allclose(out["R"][:, 9:], torch.eye(3).expand(1, extra, 3, 3))
    # self-conditioning features respect padding too
    sc = {k: v.detach() for k, v in ref.items()}
    ref_sc = den(single, pair, mask, x, t, c, self_cond=sc)
    sc2 = {"x0": torch.cat([sc["x0"], torch.randn(1, 4, 3) * 50], 1)}
    m2 = torch.cat([mask, torch.zeros(1, 4, dtype=torch.bool)], 1)
    s2 = torch.cat([single, torch.randn(1, 4, single.shape[-1])], 1)
    p2 = torch.nn.functional.pad(pair, (0, 0, 0, 4, 0, 4), value=5.0)
    x2 = torch.cat([x, torch.zeros(1, 4, 3)], 1)
    out = den(s2, p2, m2, x2, t, c, self_cond=sc2)
    assert torch.allclose(out["x0"][:, :9], ref_sc["x0"], atol=1e-5)


def test_ipa_matches_explicit_algorithm_and_masks():
    "Fused implementation (expanded distances, one matmul) vs a literal Alg. 22 with explicit point differences."
    torch.manual_seed(0)
    B, L, Cs, Cp, H, C, Pq, Pv = 2, 13, 48, 16, 4, 8, 4, 3
    ipa = _randomise(InvariantPointAttention(Cs, Cp, H, C, Pq, Pv), std=0.1)
    s, z = torch.randn(B, L, Cs), torch.randn(B, L, L, Cp)
    R, t = random_rotation(B * L).view(B, L, 3, 3), torch.randn(B, L, 3) * 2 + 40.0   # far from the origin
    mask = torch.rand(B, L) > 0.3; mask[:, 0] = True
    y = ipa(s, z, R, t, mask)
    # literal algorithm in float64
    ipa64 = ipa.double()
    s64, z64, R64, t64 = s.double(), z.double(), R.double(), t.double()
    qs, ks, vs, qp, kp, vp = ipa64.proj(s64).split(ipa64.split, -1)
    glob = lambda v, P: torch.einsum("blxy,blhpy->blhpx", R64, v.view(B, L, H, P, 3)) + t64[:, :, None, None]
    qs, ks, vs = (v.view(B, L, H, C) for v in (qs, ks, vs))
    qp, kp, vp = glob(qp, Pq), glob(kp, Pq), glob(vp, Pv)
    wL, wC = math.sqrt(1 / 3), math.sqrt(2 / (9 * Pq))
    d2 = (qp[:, :, None] - kp[:, None]).pow(2).sum((-1, -2))
    gamma = torch.nn.functional.softplus(ipa64.head_weight)
    lg = wL * (torch.einsum("bihc,bjhc->bijh", qs, ks) / math.sqrt(C) + ipa64.pair_bias(z64) - gamma * wC / 2 * d2)
    lg = lg.masked_fill(~mask[:, None, :, None], -1e9)
    a = lg.softmax(2)
    o_s = torch.einsum("bijh,bjhc->bihc", a, vs).reshape(B, L, -1)
    o_g = torch.einsum("bijh,bjhpx->bihpx", a, vp)
    o_p = torch.einsum("blyx,blhpy->blhpx", R64, o_g - t64[:, :, None, None])
    o_n = (o_p.pow(2).sum(-1) + 1e-10).sqrt().reshape(B, L, -1)
    o_z = torch.einsum("bijh,bijc->bihc", a, z64).reshape(B, L, -1)
    y_ref = ipa64.out(torch.cat([o_s, o_p.reshape(B, L, -1), o_n, o_z], -1))
    assert torch.allclose(y.double(), y_ref, atol=1e-4), (y.double() - y_ref).abs().max()


def test_frame_update_right_composition_and_init():
    fu = FrameUpdate(16, 1)
    s = torch.randn(3, 5, 16)
    R, t = random_rotation(15).view(3, 5, 3, 3), torch.randn(3, 5, 3)
    R2, t2 = fu(s, R, t)
    assert (R2 - R).abs().max() < 0.05 and (t2 - t).abs().max() < 0.05
    with torch.no_grad(): fu.net[-1].bias.copy_(torch.tensor([0.0, 0.0, 1e9, 0.1, 0.2, 0.3])); fu.net[-1].weight.zero_()
    R2, t2 = fu(s, R, t)    # ΔR = 180° about z (quaternion (1, 0, 0, 1e9) → (0, 0, 0, 1)), Δt in the LOCAL frame
    dR = torch.diag(torch.tensor([-1.0, -1.0, 1.0]))
    assert torch.allclose(R2, R @ dR, atol=1e-5)
    assert torch.allclose(t2, t + (R @ torch.tensor([0.1, 0.2, 0.3])[:, None]).squeeze(-1), atol=1e-5)


def test_sc_distogram_and_self_conditioning_path():
    x = torch.tensor([[[0.0, 0, 0], [0.38, 0, 0], [5.0, 0, 0]]])
    m = torch.tensor([[True, True, False]])
    d = sc_distogram(x, m, 32, 2.0, 40.0)
    assert d.shape == (1, 3, 3, 32) and d[0, 2].sum() == 0 and d[0, :, 2].sum() == 0
    assert d[0, 0, 0, 0] == 1 and d[0, 0, 1].argmax() == 2   # bins: <2 Å, 2–3.27 Å, 3.27–4.53 Å (3.8 Å) ...
    # the SC Linear has no bias: zero self-conditioning features are exactly "no self-conditioning" in the pair
    den, p = _denoiser()
    assert den.sc_pair.bias is None


def test_self_conditioned_output_still_depends_on_x_t():
    "With self-conditioning the noised input must still matter (else DDIM's eta and the trajectory are ignored)."
    den, p = _denoiser()
    single, pair, mask, x = _inputs(p)
    t = torch.full((x.shape[0],), 300)
    conf = torch.full((x.shape[0],), 0.5)
    with torch.no_grad():
        sc = den(single, pair, mask, x, t, conf)
        a = den(single, pair, mask, x, t, conf, self_cond=sc)["x0"]
        b = den(single, pair, mask, x + 0.3 * torch.randn_like(x), t, conf, self_cond=sc)["x0"]
    assert (a - b)[mask].abs().max() > 1e-3


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_mixed_precision_degenerate_inputs_finite(dtype):
    "fp16/bf16 autocast (CUDA when present, else CPU autocast): degenerate geometry keeps outputs and grads finite."
    den, p = _denoiser()
    den.to(DEV).train()
    cases = [torch.zeros(2, 6, 3),                                           # coincident Cα
             torch.arange(6.0)[None, :, None].expand(2, 6, 3) * 0.38,       # collinear Cα
             torch.randn(2, 6, 3) * 1e-4,                                    # near-coincident
             torch.randn(2, 6, 3) * 300]                                     # huge (fp16 overflow bait)
    masks = [torch.ones(2, 6, dtype=torch.bool)] * 4
    cases.append(torch.randn(2, 6, 3)); masks.append(torch.zeros(2, 6, dtype=torch.bool))     # fully masked
    for L in (1, 2, 3):
        cases.append(torch.randn(2, L, 3)); masks.append(torch.ones(2, L, dtype=torch.bool))
    for x, m in zip(cases, masks):
        B, L = m.shape
        x, m = x.to(DEV), m.to(DEV)
        single = torch.randn(B, L, 12, device=DEV, requires_grad=True)
        pair = torch.randn(B, L, L, p.d_pair, device=DEV, requires_grad=True)
        for sc in (None, {"x0": x.clone()}):
            with torch.autocast(DEV, dtype=dtype):
                out = den(single, pair, m, x, torch.tensor([999, 0], device=DEV), torch.tensor([0.0, 1.0], device=DEV),
                          self_cond=sc)
            for k, v in out.items():
                assert torch.isfinite(v.float()).all(), (k, L, dtype)
            loss = out["x0"].float().pow(2).sum() + out["atoms"].float().pow(2).sum() + out["R"].float().sum()
            loss.backward()
            for name, q in list(den.named_parameters()) + [("single", single), ("pair", pair)]:
                if q.grad is not None: assert torch.isfinite(q.grad).all(), (name, L, dtype)
            den.zero_grad(); single.grad = None; pair.grad = None


def test_gradient_checkpointing_same_gradients():
    torch.manual_seed(0)
    den, p = _denoiser(grad_checkpoint=True)
    single, pair, mask, x = _inputs(p)
    t, c = torch.tensor([10, 400]), torch.tensor([1.0, 0.5])
    grads = []
    for ckpt in (True, False):
        den.grad_checkpoint = ckpt
        den.zero_grad()
        out = den(single, pair, mask, x, t, c)
        (out["x0"].pow(2).sum() + out["atoms"].sum()).backward()
        grads.append(torch.cat([q.grad.flatten() for q in den.parameters() if q.grad is not None]))
    assert torch.allclose(grads[0], grads[1], atol=1e-5)


def test_chain_mean_frame_degenerate_is_identity():
    R = torch.eye(3).expand(2, 4, 3, 3)
    assert torch.allclose(chain_mean_frame(R, torch.ones(2, 4, dtype=torch.bool)), torch.eye(3).expand(2, 3, 3))
    assert torch.allclose(chain_mean_frame(R, torch.zeros(2, 4, dtype=torch.bool)), torch.eye(3).expand(2, 3, 3))


def test_bad_shapes_raise():
    den, p = _denoiser()
    single, pair, mask, x = _inputs(p)
    with pytest.raises(ValueError, match="disagree"):
        den(single, pair, mask[:, :5], x, torch.tensor([1, 2]), torch.ones(2))
    with pytest.raises(ValueError, match="conf"):
        den(single, pair, mask, x, torch.tensor([1, 2]), None)


@pytest.mark.gpu
def test_gpu_fp16_large_protein_finite():
    den, p = _denoiser("v13", d_cond=128)
    den.cuda().train()
    B, L = 2, 125
    x = torch.randn(B, L, 3, device="cuda") * 3
    mask = torch.ones(B, L, dtype=torch.bool, device="cuda"); mask[1, 100:] = False
    single = torch.randn(B, L, 128, device="cuda"); pair = torch.randn(B, L, L, p.d_pair, device="cuda")
    with torch.autocast("cuda", dtype=torch.float16):
        out = den(single, pair, mask, x, torch.tensor([999, 1], device="cuda"), torch.tensor([0.0, 1.0], device="cuda"))
    out["x0"].float().pow(2).sum().backward()
    assert torch.isfinite(out["x0"]).all()
    assert all(torch.isfinite(q.grad).all() for q in den.parameters() if q.grad is not None)


@pytest.mark.parametrize("conf", [0.0, 1.0])
def test_se3_equivariance_with_self_conditioning(conf):
    "The self-conditioned pass (frames from the previous x0, its distogram on the pair) is SE(3)-equivariant too."
    torch.manual_seed(0)
    den, p = _denoiser()
    den.eval()
    single, pair, mask, x = _inputs(p)
    t = torch.tensor([50, 800]); c = torch.full((2,), conf)
    prev = den(single, pair, mask, x, t, c)                       # first pass, as the sampler/trainer do
    out = den(single, pair, mask, x, t, c, self_cond=prev)
    assert not torch.allclose(out["x0"], prev["x0"], atol=1e-4)  # self-conditioning changes the prediction
    for k in range(2):
        Rg = random_rotation(1, generator=torch.Generator().manual_seed(10 + k))[0]
        tg = torch.randn(3) * 5
        prev2 = {kk: (v @ Rg.T + tg if kk in ("x0", "trans") else (Rg @ v if kk == "R" else
                      (v @ Rg.T + tg if kk == "atoms" and v is not None else v))) for kk, v in prev.items()}
        o2 = den(single, pair, mask, x @ Rg.T + tg, t, c, self_cond=prev2)
        assert torch.allclose(o2["x0"][mask], (out["x0"] @ Rg.T + tg)[mask], atol=2e-4)
        assert torch.allclose(o2["R"][mask], (Rg @ out["R"])[mask], atol=2e-4)
        assert torch.allclose(o2["atoms"][mask], (out["atoms"] @ Rg.T + tg)[mask], atol=2e-4)
