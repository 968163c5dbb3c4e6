"Property tests for minifold.geometry (hypothesis): quaternion/rotation round trips, orthonormality, rigid algebra, slerp."
import math

import pytest
import torch
from hypothesis import example, given, settings, strategies as st

from minifold.geometry import (apply, bond_angles, compose, dihedral, frames_from_backbone, frames_from_ca, ideal_helix,
                               invert, invert_apply, normalize, place_oxygen, pseudo_dihedrals, quat_multiply, quat_to_rot,
                               radius_of_gyration, random_rotation, rigid_from_3_points, rot_cos_angle, rot_to_quat,
                               safe_cdist, safe_norm, signed_volumes, slerp_rot)

finite = st.floats(-10, 10, allow_nan=False, allow_infinity=False, width=32)
quats = st.lists(finite, min_size=4, max_size=4).filter(lambda v: sum(x * x for x in v) > 1e-3)
vec3 = st.lists(finite, min_size=3, max_size=3)
SET = settings(max_examples=60, deadline=None)


def _eye(*shape):
    return torch.eye(3, dtype=torch.float64).expand(*shape, 3, 3)


@SET
@given(quats)
def test_quat_rot_round_trip(q):
    q = torch.tensor(q, dtype=torch.float64)
    R = quat_to_rot(q)
    assert torch.allclose(R @ R.T, _eye(), atol=1e-10)
    assert abs(torch.det(R).item() - 1) < 1e-10
    q2 = rot_to_quat(R)
    qn = q / q.norm()
    qn = qn if qn[0] >= 0 else -qn
    # q and -q are the same rotation; when w ≈ 0 the canonical sign is ambiguous
    assert torch.allclose(q2, qn, atol=1e-7) or torch.allclose(q2, -qn, atol=1e-7)
    assert torch.allclose(quat_to_rot(q2), R, atol=1e-10)


@SET
@given(quats)
def test_rot_quat_round_trip_near_180(q):
    # rotations by ~180° (w ≈ 0) are where the trace-based formula breaks down
    q = torch.tensor([1e-7] + list(q[1:]), dtype=torch.float64)
    if q[1:].norm() < 1e-3:
        return
    R = quat_to_rot(q)
    assert torch.allclose(quat_to_rot(rot_to_quat(R)), R, atol=1e-7)


@SET
@given(quats, quats)
def test_quat_multiply_is_matrix_product(q1, q2):
    q1, q2 = torch.tensor(q1, dtype=torch.float64), torch.tensor(q2, dtype=torch.float64)
    assert torch.allclose(quat_to_rot(quat_multiply(q1, q2)), quat_to_rot(q1) @ quat_to_rot(q2), atol=1e-9)


@SET
@given(vec3, vec3, vec3)
@example(a=[0.0, 0.0, 0.0], b=[3.0, 0.25, 0.0], c=[0.25, 0.0, 0.0])    # nearly parallel arms (found by hypothesis:
@example(a=[0.0, 0.0, 0.0], b=[0.0, 0.0, 1.0], c=[0.0, 0.0625, 0.0])   # eps under the sqrt made R non-orthonormal)
def test_rigid_from_3_points_orthonormal(a, b, c):
    x1, x2, x3 = (torch.tensor(v, dtype=torch.float64) for v in (a, b, c))
    R, t = rigid_from_3_points(x1, x2, x3)
    assert torch.isfinite(R).all()
    assert torch.allclose(R @ R.T, _eye(), atol=1e-8)
    assert abs(torch.det(R).item() - 1) < 1e-8
    assert torch.equal(t, x2)


@SET
@given(quats, vec3, quats, vec3, vec3)
def test_compose_invert_identity(q1, t1, q2, t2, x):
    R1, R2 = quat_to_rot(torch.tensor(q1, dtype=torch.float64)), quat_to_rot(torch.tensor(q2, dtype=torch.float64))
    t1, t2, x = (torch.tensor(v, dtype=torch.float64) for v in (t1, t2, x))
    Rc, tc = compose(R1, t1, *invert(R1, t1))
    assert torch.allclose(Rc, _eye(), atol=1e-9) and torch.allclose(tc, torch.zeros(3, dtype=torch.float64), atol=1e-8)
    assert torch.allclose(apply(*compose(R1, t1, R2, t2), x), apply(R1, t1, apply(R2, t2, x)), atol=1e-8)
    assert torch.allclose(invert_apply(R1, t1, apply(R1, t1, x)), x, atol=1e-8)


@SET
@given(quats, st.floats(0, 1))
def test_slerp_endpoints_and_angle(q, w):
    R = quat_to_rot(torch.tensor(q, dtype=torch.float64))
    assert torch.allclose(slerp_rot(R, 0.0), _eye(), atol=1e-9)
    assert torch.allclose(slerp_rot(R, 1.0), R, atol=1e-7)
    Rw = slerp_rot(R, w)
    assert torch.allclose(Rw @ Rw.T, _eye(), atol=1e-9)
    theta = torch.arccos(rot_cos_angle(_eye(), R).clamp(-1, 1))
    theta_w = torch.arccos(rot_cos_angle(_eye(), Rw).clamp(-1, 1))
    if theta < math.pi - 1e-3:  # the 180° case has two shortest paths
        assert abs(theta_w.item() - w * theta.item()) < 1e-4


def test_slerp_broadcast_weights():
    R = random_rotation(6, torch.Generator().manual_seed(0))
    w = torch.linspace(0, 1, 6)
    out = slerp_rot(R, w)
    assert torch.allclose(out[0], torch.eye(3), atol=1e-6) and torch.allclose(out[-1], R[-1], atol=1e-5)


def test_safe_cdist_finite_gradient_at_coincident_points():
    x = torch.randn(7, 3)
    x = torch.cat([x, x[:2]]).requires_grad_(True)         # two coincident pairs + the diagonal
    d = safe_cdist(x, x)
    d.sum().backward()
    assert torch.isfinite(x.grad).all()
    z = torch.zeros(1, 3, requires_grad=True)
    safe_norm(z).sum().backward()
    assert torch.isfinite(z.grad).all()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_reduced_precision_inputs_give_fp32_finite(dtype):
    x = (torch.randn(2, 12, 3) * 1e-3).to(dtype).requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        R, t = frames_from_ca(x)
        outs = [R, t, normalize(x), bond_angles(x), pseudo_dihedrals(x), signed_volumes(x), radius_of_gyration(x),
                slerp_rot(R, 0.3), safe_cdist(x, x)]
    for o in outs:
        assert o.dtype == torch.float32 and torch.isfinite(o).all()
    sum(o.sum() for o in outs).backward()
    assert torch.isfinite(x.grad).all()


def test_gradcheck_core_functions():
    x = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
    torch.autograd.gradcheck(lambda a: frames_from_ca(a)[0], (x,))
    torch.autograd.gradcheck(lambda a: signed_volumes(a), (x,))
    torch.autograd.gradcheck(lambda a: pseudo_dihedrals(a), (x,))
    R = random_rotation(3, torch.Generator().manual_seed(2), dtype=torch.float64).requires_grad_(True)
    torch.autograd.gradcheck(lambda r: slerp_rot(r, 0.4), (R,))


def test_frames_from_ca_batch_padding_invariance():
    g = torch.Generator().manual_seed(3)
    ca = torch.cumsum(torch.randn(1, 20, 3, generator=g) * 2, -2)
    R_short, _ = frames_from_ca(ca[:, :12])
    m = torch.zeros(1, 20, dtype=torch.bool)
    m[:, :12] = True
    R_pad, _ = frames_from_ca(ca + 0 * m[..., None], m)
    assert torch.allclose(R_pad[:, :12], R_short, atol=1e-6)
    assert torch.allclose(R_pad[:, 12:], torch.eye(3).expand(1, 8, 3, 3))


def test_frames_rigid_equivariance():
    g = torch.Generator().manual_seed(4)
    ca = torch.cumsum(torch.randn(15, 3, generator=g) * 2, -2)
    Q = random_rotation(1, g)[0]
    R1, t1 = frames_from_ca(ca)
    R2, t2 = frames_from_ca(ca @ Q.T + 5.0)
    assert torch.allclose(R2, Q @ R1, atol=1e-5) and torch.allclose(t2, t1 @ Q.T + 5.0, atol=1e-4)
    # frames from real backbone: N in the e1-e2 plane, e1 along C
    n, c = ca + torch.tensor([-0.5, 1.4, 0.]), ca + torch.tensor([1.5, 0., 0.])
    R, _ = frames_from_backbone(n, ca, c)
    assert torch.allclose(R[:, :, 0], torch.tensor([1., 0, 0]).expand(15, 3), atol=1e-6)


def test_helix_geometry_and_mirror():
    h = ideal_helix(20)
    assert torch.allclose(torch.rad2deg(pseudo_dihedrals(h)), torch.full((17,), 50.0), atol=5)
    mirror = h * torch.tensor([-1.0, 1, 1])
    assert (signed_volumes(mirror) < 0).all() and (pseudo_dihedrals(mirror) < 0).all()
    assert abs(radius_of_gyration(h).item() - radius_of_gyration(h @ random_rotation(1)[0].T - 3).item()) < 1e-4


def test_dihedral_known_values():
    a, b, c = torch.tensor([1., 1, 0]), torch.tensor([0., 1, 0]), torch.zeros(3)
    for deg in (-170, -90, -60, 0, 45, 120, 179):
        th = math.radians(deg)
        d = torch.tensor([math.cos(th), 0.0, math.sin(th)])
        assert abs(math.degrees(dihedral(a, b, c, d).item()) - deg) < 1e-3


def test_place_oxygen_real_chain(sample_dir):
    import json
    with open(sample_dir / "chain_set.jsonl") as f:
        recs = [r for r in map(json.loads, f) if all(all(v == v for v in xyz) for xyz in r["coords"]["O"])]
    assert recs, "need at least one sample chain with observed O atoms"
    errs = []
    for rec in recs:
        bb = {k: torch.tensor(rec["coords"][k], dtype=torch.float32) for k in ("N", "CA", "C", "O")}
        ok = torch.stack([torch.isfinite(v).all(-1) for v in bb.values()]).all(0)
        o = place_oxygen(bb["N"], bb["CA"], bb["C"])
        e = (o - bb["O"]).norm(dim=-1)[:-1]
        errs.append(e[ok[:-1] & ok[1:]])
    errs = torch.cat(errs)
    assert errs.median() < 0.1 and torch.quantile(errs, 0.95) < 0.3, (errs.median(), errs.max())
    # model units: pass the converted bond length
    from minifold.config import to_model_units, C_O_BOND
    bb = {k: torch.tensor(recs[0]["coords"][k], dtype=torch.float32) / 10 for k in ("N", "CA", "C")}
    o = place_oxygen(bb["N"], bb["CA"], bb["C"], c_o=to_model_units(C_O_BOND))
    assert torch.allclose((o - bb["C"]).norm(dim=-1), torch.full((o.shape[0],), 0.1231), atol=1e-5)
