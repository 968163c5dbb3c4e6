"Heads: Rg predictor and the v14 backbone atom head (units, ideal geometry, equivariance) (minifold.heads)."
import math

import pytest
import torch
import torch.nn.functional as F

from minifold.config import (to_angstrom, to_model_units, N_CA_BOND, CA_C_BOND, C_O_BOND, C_N_BOND,
                             N_CA_C_ANGLE, CA_C_O_ANGLE, COORD_SCALE)
from minifold.geometry import random_rotation, frames_from_backbone, place_oxygen, dihedral
from minifold.heads import BackboneAtomHead, RgPredictor, ideal_backbone_local, RG_PRIOR_A, RG_PRIOR_NU


def _angle(a, b, c):
    return torch.rad2deg(torch.acos(F.cosine_similarity(a - b, c - b, dim=-1).clamp(-1, 1)))


def test_ideal_offsets_are_model_units_built_from_angstrom():
    "The seed's bug 1 (offsets registered in Å in a Å/10 model) is impossible: the buffer is converted once."
    head = BackboneAtomHead(8)
    loc = head.ideal_local
    assert loc.dtype == torch.float32 and loc.shape == (4, 3)
    assert abs(float((loc[0] - loc[1]).norm()) - 0.1458) < 1e-6                 # |N−CA| in model units
    assert abs(float(to_angstrom((loc[0] - loc[1]).norm())) - N_CA_BOND) < 1e-5   # = 1.458 Å
    assert abs(float(to_angstrom((loc[2] - loc[1]).norm())) - CA_C_BOND) < 1e-5
    assert abs(float(to_angstrom((loc[3] - loc[2]).norm())) - C_O_BOND) < 1e-5   # C=O 1.231 Å
    assert torch.equal(loc, ideal_backbone_local())
    # a 10x error would put N ~1.46 model units (14.6 Å) from CA
    assert float((loc[0] - loc[1]).norm()) < 0.2
    # the builder really takes Å: doubling the Å input doubles the model-unit output
    assert torch.allclose(ideal_backbone_local(n_ca=2 * N_CA_BOND)[0], 2 * loc[0], atol=1e-7)
    assert "ideal_local" in dict(head.named_buffers())


@pytest.mark.parametrize("frames", ["identity", "random"])
def test_head_output_has_ideal_geometry_with_zero_residuals(frames):
    torch.manual_seed(0)
    B, L = 3, 7
    head = BackboneAtomHead(16)
    s = torch.randn(B, L, 16)
    R = torch.eye(3).expand(B, L, 3, 3) if frames == "identity" else random_rotation(B * L).view(B, L, 3, 3)
    t = torch.randn(B, L, 3)
    x = head(s, R, t)
    n, ca, c, o = x.unbind(-2)
    assert torch.allclose(ca, t)
    assert torch.allclose(to_angstrom((n - ca).norm(dim=-1)), torch.tensor(N_CA_BOND), atol=1e-4)
    assert torch.allclose(to_angstrom((c - ca).norm(dim=-1)), torch.tensor(CA_C_BOND), atol=1e-4)
    assert torch.allclose(to_angstrom((o - c).norm(dim=-1)), torch.tensor(C_O_BOND), atol=1e-4)
    assert torch.allclose(_angle(n, ca, c), torch.tensor(N_CA_C_ANGLE), atol=1e-3)
    assert torch.allclose(_angle(ca, c, o), torch.tensor(CA_C_O_ANGLE), atol=1e-3)
    # O in the N–CA–C plane on N's side (N–CA–C–O dihedral 0°)
    assert torch.allclose(dihedral(n, ca, c, o), torch.zeros(B, L), atol=1e-3)
    # the frame of the placed atoms is the input frame (AF2 convention round trip)
    R2, t2 = frames_from_backbone(n, ca, c)
    assert torch.allclose(R2, R, atol=1e-4) and torch.allclose(t2, t, atol=1e-6)


def test_head_matches_geometry_place_oxygen_for_extended_strand():
    "For ψ = 180° the ideal O of the head equals geometry.place_oxygen from the next residue's N."
    head = BackboneAtomHead(4)
    loc = head.ideal_local.double()
    n, ca, c = loc[0], loc[1], loc[2]
    # build N(i+1) with ψ = 180°: dihedral N–CA–C–N(i+1) = 180°, C–N 1.329 Å, CA–C–N 116.2°
    from minifold.geometry import place_atom
    n_next = place_atom(n, ca, c, to_model_units(C_N_BOND), math.radians(116.2), math.pi)
    o = place_oxygen(n[None], ca[None], c[None], n_next=n_next[None], c_o=to_model_units(C_O_BOND))[0]
    assert torch.allclose(o.float(), head.ideal_local[3], atol=1e-5)


def test_residual_init_zero_and_small_scale():
    head = BackboneAtomHead(16)
    assert (head.residual.weight == 0).all() and (head.residual.bias == 0).all()
    s = torch.randn(2, 5, 16)
    assert torch.allclose(head.local_positions(s), head.ideal_local.expand(2, 5, 4, 3))
    with torch.no_grad(): head.residual.bias.fill_(1.0)     # one unit of output = 1 Å, never 10 Å
    d = to_angstrom((head.local_positions(s) - head.ideal_local).norm(dim=-1))
    assert torch.allclose(d[..., [0, 2, 3]], torch.tensor(math.sqrt(3.0)), atol=1e-5)
    assert (d[..., 1] == 0).all()                            # CA never moves off the frame origin


def test_head_equivariance_and_grad():
    torch.manual_seed(1)
    head = BackboneAtomHead(16)
    torch.nn.init.normal_(head.residual.weight, std=0.1)
    s = torch.randn(2, 6, 16, requires_grad=True)
    R, t = random_rotation(12).view(2, 6, 3, 3), torch.randn(2, 6, 3)
    Rg, tg = random_rotation(1)[0], torch.randn(3)
    x = head(s, R, t)
    x2 = head(s, Rg @ R, t @ Rg.T + tg)
    assert torch.allclose(x2, x @ Rg.T + tg, atol=1e-5)
    x.sum().backward()
    assert torch.isfinite(s.grad).all() and head.residual.weight.grad.abs().sum() > 0


def test_head_under_autocast_returns_fp32():
    head = BackboneAtomHead(16)
    s = torch.randn(2, 4, 16)
    R, t = random_rotation(8).view(2, 4, 3, 3), torch.randn(2, 4, 3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        x = head(s, R, t)
    assert x.dtype == torch.float32
    assert torch.allclose(to_angstrom((x[..., 0, :] - x[..., 1, :]).norm(dim=-1)), torch.tensor(N_CA_BOND), atol=1e-3)


def test_rg_predictor_prior_units_and_padding():
    torch.manual_seed(0)
    rg = RgPredictor(32)
    s = torch.randn(3, 120, 32)
    m = torch.zeros(3, 120, dtype=torch.bool)
    for b, n in enumerate((30, 80, 120)): m[b, :n] = True
    out = rg(s, m)
    rg_A = to_angstrom(out.exp())                                # log Rg in model units → Å
    expected = torch.tensor([RG_PRIOR_A * n ** RG_PRIOR_NU for n in (30, 80, 120)])
    assert torch.allclose(rg_A, expected, rtol=1e-5)             # untrained = Flory prior, in Å after conversion
    assert 8.0 < rg_A[1] < 15.0                                  # sane protein sizes
    s2 = s.clone(); s2[0, 30:] = 1e4
    assert torch.allclose(rg(s2, m), out)
    out.sum().backward()
    assert all(torch.isfinite(q.grad).all() for q in rg.parameters() if q.grad is not None)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert rg(s, m).dtype == torch.float32
