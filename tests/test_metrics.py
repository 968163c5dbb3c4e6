"Tests for minifold.metrics: invariances, identities, and agreement with tmtools / the TMscore program on real chains."
import json
import shutil

import numpy as np
import pytest
import torch

from minifold.geometry import random_rotation
from minifold.metrics import (_tmscore_program, _tmtools_tm, contact_metrics, gdt, kabsch, rmsd, superpose, tm_d0,
                              tm_score, top_l_precision)


@pytest.fixture(scope="module")
def chains(sample_dir):
    recs = [json.loads(l) for l in open(sample_dir / "chain_set.jsonl")]
    out = []
    for r in recs:
        ca = torch.tensor(r["coords"]["CA"], dtype=torch.float64)
        ok = torch.isfinite(ca).all(-1)
        out.append((ca[ok], "".join(c for c, o in zip(r["seq"], ok.tolist()) if o)))
    return out


def _batch(Ps, Qs):
    L = max(len(q) for q in Qs)
    P = torch.zeros(len(Ps), L, 3, dtype=torch.float64)
    Q = torch.zeros_like(P)
    M = torch.zeros(len(Ps), L, dtype=torch.bool)
    for i, (p, q) in enumerate(zip(Ps, Qs)):
        P[i, :len(p)], Q[i, :len(q)], M[i, :len(q)] = p, q, True
    return P, Q, M


def _pairs(chains, seed=0):
    "Noised copies at several levels + different chains of equal (truncated) length."
    g = torch.Generator().manual_seed(seed)
    Ps, Qs, seqs = [], [], []
    for ca, seq in chains[5:13]:
        for s in (0.3, 1.0, 2.5, 5.0, 10.0):
            Ps.append(ca + s * torch.randn(ca.shape, generator=g, dtype=torch.float64)); Qs.append(ca); seqs.append(seq)
    for (a, _), (b, sb) in zip(chains[13:25:2], chains[14:26:2]):
        L = min(len(a), len(b))
        Ps.append(a[:L]); Qs.append(b[:L]); seqs.append(sb[:L])
    return Ps, Qs, seqs


def test_tm_identity_and_d0():
    x = torch.cumsum(torch.randn(1, 50, 3, dtype=torch.float64) * 2, 1)
    assert torch.allclose(tm_score(x, x), torch.ones(1))
    assert torch.allclose(tm_d0(torch.tensor([5, 15, 21, 22])), torch.tensor([0.5, 0.5, 0.5, 0.5720], dtype=torch.float64), atol=1e-4)


def test_tm_matches_tmtools(chains):
    Ps, Qs, seqs = _pairs(chains)
    P, Q, M = _batch(Ps, Qs)
    ours = tm_score(P, Q, M, search="exact").double().numpy()
    fast = tm_score(P, Q, M, search="fast").double().numpy()
    ref = np.array([_tmtools_tm(p.numpy(), q.numpy(), s) for p, q, s in zip(Ps, Qs, seqs)])
    assert ref.min() < 0.2 and ref.max() > 0.9         # the set spans the whole TM range
    assert np.abs(ours - ref).max() <= 1e-4, np.abs(ours - ref).max()     # exact: same search as the program
    assert np.abs(fast - ref).max() <= 0.005, np.abs(fast - ref).max()    # fast (default): pruned search
    assert (fast <= ours + 1e-6).all()                 # the fast search visits a subset of the superpositions


def test_tm_search_argument():
    x = torch.cumsum(torch.randn(2, 30, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(9)) * 2, 1)
    with pytest.raises(ValueError, match="search"):
        tm_score(x, x, search="slow")


@pytest.mark.skipif(shutil.which("TMscore") is None, reason="TMscore program not installed (apt-get install tm-align)")
def test_tm_and_gdt_match_tmscore_program(chains):
    Ps, Qs, seqs = _pairs(chains, seed=1)
    Ps, Qs, seqs = Ps[::3], Qs[::3], seqs[::3]
    P, Q, M = _batch(Ps, Qs)
    tm, ts_tm, ha_tm = tm_score(P, Q, M, return_gdt=True, search="exact")
    ts, ha = gdt(P, Q, M)
    for i, (p, q, s) in enumerate(zip(Ps, Qs, seqs)):
        r = _tmscore_program(p.numpy(), q.numpy(), s)
        assert abs(tm[i].item() - r["tm"]) <= 0.005, (i, tm[i].item(), r)
        # the program reports GDT from its TM search superpositions: ours from the same search must agree, and the
        # dedicated per-cutoff search can only be higher
        assert abs(ts_tm[i].item() - r["gdt_ts"]) <= 0.01 and abs(ha_tm[i].item() - r["gdt_ha"]) <= 0.01, (i, r)
        assert ts[i].item() >= r["gdt_ts"] - 1e-3 and ha[i].item() >= r["gdt_ha"] - 1e-3


def test_metrics_invariant_to_rigid_motion(chains):
    Ps, Qs, _ = _pairs(chains, seed=2)
    P, Q, M = _batch(Ps[:10], Qs[:10])
    R = random_rotation(2, torch.Generator().manual_seed(7), dtype=torch.float64)
    ref = (tm_score(P, Q, M), rmsd(P, Q, M), *gdt(P, Q, M))
    for A, B in [(P @ R[0].T + 13.0, Q), (P, Q @ R[1].T - 4.0), (P @ R[1].T, Q @ R[0].T + 2.0)]:
        A = torch.where(M[..., None], A, torch.zeros_like(A))
        B = torch.where(M[..., None], B, torch.zeros_like(B))
        got = (tm_score(A, B, M), rmsd(A, B, M), *gdt(A, B, M))
        for g, r in zip(got, ref):
            assert torch.allclose(g, r, atol=2e-3), (g - r).abs().max()


def test_padding_and_nan_do_not_change_scores(chains):
    ca = chains[0][0]
    p = ca + torch.randn(ca.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    base = tm_score(p[None], ca[None])
    P = torch.cat([p, torch.full((7, 3), 99.0, dtype=torch.float64)])[None]
    Q = torch.cat([ca, torch.full((7, 3), float("nan"), dtype=torch.float64)])[None]
    M = torch.ones(1, len(ca) + 7, dtype=torch.bool)
    M[:, len(ca):] = False
    assert torch.allclose(tm_score(P, Q, M), base)
    with pytest.warns(UserWarning, match="non-finite"):
        assert torch.allclose(tm_score(P, Q), base)     # NaN residues are excluded (with a warning), not zero-filled


def test_kabsch_reflection_and_rmsd():
    g = torch.Generator().manual_seed(4)
    x = torch.randn(3, 30, 3, generator=g, dtype=torch.float64) * 5
    R0 = random_rotation(3, g, dtype=torch.float64)
    y = x @ R0.transpose(1, 2) + 2.0
    R, t = kabsch(x, y)
    assert torch.allclose(R, R0, atol=1e-8) and torch.allclose(rmsd(x, y), torch.zeros(3, dtype=torch.float64), atol=1e-6)
    mirror = x * torch.tensor([1.0, 1.0, -1.0], dtype=torch.float64)
    Rm, _ = kabsch(mirror, y)
    assert torch.allclose(torch.linalg.det(Rm), torch.ones(3, dtype=torch.float64))
    # rmsd equals the direct computation after superposition
    noisy = y + torch.randn(y.shape, generator=g, dtype=torch.float64)
    direct = (superpose(x, noisy) - noisy).pow(2).sum(-1).mean(-1).sqrt()
    assert torch.allclose(rmsd(x, noisy), direct)


def test_tm_short_chains_and_empty():
    x = torch.randn(4, 3, 3, dtype=torch.float64)
    m = torch.tensor([[1, 1, 1], [1, 1, 0], [1, 0, 0], [0, 0, 0]], dtype=torch.bool)
    out = tm_score(x, x, m)
    assert torch.allclose(out[:3], torch.ones(3)) and out[3] == 0


def test_contact_metrics_and_top_l():
    L = 30
    g = torch.Generator().manual_seed(0)
    contacts = (torch.rand(2, L, L, generator=g) < 0.1).float()
    contacts = torch.maximum(contacts, contacts.transpose(1, 2))
    pm = torch.ones(2, L, L, dtype=torch.bool)
    prec, rec = contact_metrics(contacts, contacts, pm, min_sep=6)
    assert torch.allclose(prec, torch.ones(2)) and torch.allclose(rec, torch.ones(2))
    # half the probability mass on wrong pairs → precision drops, recall stays
    wrong = (1 - contacts) * (torch.rand(2, L, L, generator=g) < 0.1).float()
    prec2, rec2 = contact_metrics(torch.clamp(contacts + wrong, max=1), contacts, pm, min_sep=6)
    assert (prec2 < 1).all() and torch.allclose(rec2, torch.ones(2))
    # masked pairs never count
    pm2 = pm.clone(); pm2[:, :, :] = False
    p3, r3 = contact_metrics(contacts, contacts, pm2)
    assert torch.isnan(p3).all() and torch.isnan(r3).all()
    # top-L with perfect ranking
    n_lr = int(contacts[0].triu(24).sum())
    if n_lr:
        assert top_l_precision(contacts[:1] * 0.9 + 0.05, contacts[:1], pm[:1], min_sep=24, k=n_lr).item() == 1.0
    # fraction k (top-L/5)
    v = top_l_precision(torch.rand(2, L, L, generator=g), contacts, pm, min_sep=6, k=0.2)
    assert v.shape == (2,) and ((v >= 0) & (v <= 1)).all()
