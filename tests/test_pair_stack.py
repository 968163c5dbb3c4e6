"Tests for minifold.pair_stack: shapes, masking invariance, autocast numerics, fp32 triangle island, symmetries, sizes."
import pytest
import torch

import minifold.pair_stack as ps
from minifold.config import get_encoder_preset, get_preset
from minifold.pair_stack import (AuxPairStack, AxialPairBlock, ColumnAttention, EnhancedPairBlock, LinearRPE, LogRPE,
                                 PairStack, RowAttention, TriangleMultiplicativeUpdate, dist_bin_edges, distance_to_bin,
                                 log_rpe_table, pair_mask_from, triangle_product)


def randomize_(module, std=0.2, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * std)
    return module


def inputs(preset, B=2, L=9, pad_from=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    enc = get_encoder_preset(preset.encoder)
    mask = torch.ones(B, L, dtype=torch.bool)
    mask[0, pad_from:] = False
    single = torch.randn(B, L, enc.d_model, generator=g)
    pair = torch.randn(B, L, L, enc.d_pair, generator=g)
    ri = torch.arange(L).expand(B, L).clone()
    return single, pair, mask, ri


PT = get_preset("tiny")


# ---------------------------------------------------------------- shapes and masking

@pytest.mark.parametrize("kind", ["none", "axial", "enhanced"])
@pytest.mark.parametrize("rpe", ["linear", "log"])
def test_pair_stack_shapes_and_padding_invariance(kind, rpe):
    preset = PT.replace(pair_stack=kind, rpe=rpe, n_pair_blocks=2)
    stack = randomize_(PairStack(preset), std=0.1).eval()
    single, pair, mask, ri = inputs(preset)
    out = stack(single, pair, mask, ri)
    assert out.shape == (2, 9, 9, preset.d_pair) and torch.isfinite(out).all()
    assert (out[0, 6:] == 0).all() and (out[0, :, 6:] == 0).all()
    # garbage in padded inputs (features and residue indices) must not change real entries
    s2, p2, r2 = single.clone(), pair.clone(), ri.clone()
    s2[0, 6:] = 1e3
    p2[0, 6:] = -1e3
    p2[0, :, 6:] = 77.0
    r2[0, 6:] = 10_000
    out2 = stack(s2, p2, mask, r2)
    assert torch.allclose(out2[0, :6, :6], out[0, :6, :6], atol=1e-4)
    assert torch.allclose(out2[1], out[1], atol=1e-5)
    # the same chain without padding at all gives the same real block
    out3 = stack(single[:1, :6], pair[:1, :6, :6], mask[:1, :6], ri[:1, :6])
    assert torch.allclose(out3[0], out[0, :6, :6], atol=1e-4)


def test_aux_stack_masking_symmetry_and_independence():
    aux = randomize_(AuxPairStack(PT), std=0.1).eval()
    single, pair, mask, ri = inputs(PT)
    lg, z = aux(single, pair, mask, ri, return_pair=True)
    assert lg.shape == (2, 9, 9, PT.n_dist_bins) and z.shape == (2, 9, 9, PT.aux_pair_dim)
    assert lg.dtype == torch.float32 and torch.equal(lg, lg.transpose(1, 2))
    assert (lg[0, 6:] == 0).all()
    p2 = pair.clone()
    p2[0, 6:] = 123.0
    assert torch.allclose(aux(single, p2, mask, ri)[0, :6, :6], lg[0, :6, :6], atol=1e-4)
    main = PairStack(get_preset("v13"))
    aux13 = AuxPairStack(get_preset("v13"))
    assert not ({id(p) for p in main.parameters()} & {id(p) for p in aux13.parameters()})
    assert not ({p.data_ptr() for p in main.parameters()} & {p.data_ptr() for p in aux13.parameters()})


def test_input_validation():
    stack = PairStack(PT)
    single, pair, mask, ri = inputs(PT)
    with pytest.raises(ValueError, match="single must be"):
        stack(single[..., :-1], pair, mask, ri)
    with pytest.raises(ValueError, match="pair must be"):
        stack(single, pair[:, :, :-1], mask, ri)
    with pytest.raises(ValueError, match="pair_stack"):
        PairStack(PT.replace(pair_stack="triangle"))
    with pytest.raises(ValueError, match="rpe"):
        PairStack(PT.replace(rpe="rotary"))
    with pytest.raises(ValueError):
        TriangleMultiplicativeUpdate(8, 4)(torch.randn(1, 3, 4, 8))


# ---------------------------------------------------------------- numerics under autocast

@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("L", [1, 2, 3, 8])
def test_autocast_finite_outputs_and_grads(dtype, L):
    preset = PT.replace(n_pair_blocks=2, pair_stack="enhanced")
    stack = randomize_(PairStack(preset), std=0.1).train()
    aux = randomize_(AuxPairStack(preset), std=0.1).train()
    single, pair, mask, ri = inputs(preset, B=2, L=L, pad_from=max(L - 1, 0))
    mask[1] = False  # one chain entirely padded: every row of its pair map is fully masked
    with torch.autocast("cpu", dtype=dtype):
        z = stack(single * 30, pair * 30, mask, ri)
        lg = aux(single * 30, pair * 30, mask, ri)
        loss = z.float().square().mean() + lg.float().square().mean()
    loss.backward()
    assert torch.isfinite(z.float()).all() and torch.isfinite(lg).all()
    assert (z[1] == 0).all() and (lg[1] == 0).all()
    for name, p in list(stack.named_parameters()) + list(aux.named_parameters()):
        assert p.grad is None or torch.isfinite(p.grad).all(), name


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_triangle_product_is_fp32_inside_autocast(dtype, monkeypatch):
    seen = []
    orig = ps.triangle_product

    def spy(p, m, *a, **k):
        out = orig(p, m, *a, **k)
        seen.append(dict(autocast=torch.is_autocast_enabled("cpu"), p=p.dtype, out=out.dtype))
        return out

    monkeypatch.setattr(ps, "triangle_product", spy)
    tri = randomize_(TriangleMultiplicativeUpdate(16, 8))
    z = torch.randn(2, 6, 6, 16) * 50
    with torch.autocast("cpu", dtype=dtype):
        out = tri(z, pair_mask_from(torch.ones(2, 6, dtype=torch.bool)))
    assert seen and seen[0]["p"] == dtype and seen[0]["out"] == torch.float32
    assert torch.isfinite(out.float()).all()

    # inside: autocast disabled while the bmm runs (check with a hook on torch.bmm)
    calls = []
    real_bmm = torch.bmm

    def bmm_spy(a, b, *args, **kw):
        calls.append((a.dtype, b.dtype, torch.is_autocast_enabled("cpu")))
        return real_bmm(a, b, *args, **kw)

    monkeypatch.setattr(torch, "bmm", bmm_spy)
    with torch.autocast("cpu", dtype=dtype):
        o = triangle_product(torch.randn(32, 2 * 36).to(dtype), None, 2, 6)
    assert calls and all(c == (torch.float32, torch.float32, False) for c in calls)
    assert o.dtype == torch.float32


def test_triangle_sum_overflow_is_clamped_not_nan():
    "L terms of size 300² overflow fp16 (65504); in fp32 with the ±1e4 clamp the output stays finite."
    L, D = 64, 4
    p = torch.full((4 * D, L * L), 300.0, dtype=torch.float16)
    with torch.autocast("cpu", dtype=torch.float16):
        o = triangle_product(p, None, 1, L)
    assert o.dtype == torch.float32 and torch.isfinite(o).all() and o.max() == 1e4
    a = torch.full((L, L, D), 300.0, dtype=torch.float16)
    naive = torch.einsum("ikd,jkd->ijd", a, a)  # the same sum in fp16: 64 · 9e4 > 65504
    assert not torch.isfinite(naive).all()


def test_fully_masked_rows_give_finite_zeros():
    for att in (randomize_(RowAttention(8, 2)), randomize_(ColumnAttention(8, 2))):
        z = torch.randn(1, 5, 5, 8, requires_grad=True)
        m = torch.zeros(1, 5, 5, dtype=torch.bool)
        m[0, 1, :3] = True  # row 1 partly valid, rows 0, 2, 3, 4 fully masked
        m[0, :3, 1] = True
        with torch.autocast("cpu", dtype=torch.float16):
            o = att(z, m)
        o.float().sum().backward()
        assert torch.isfinite(o.float()).all() and (o[~m] == 0).all() and torch.isfinite(z.grad).all()


# ---------------------------------------------------------------- exactness and symmetries

@pytest.mark.parametrize("outgoing", [True, False])
def test_triangle_matches_einsum_reference_and_gradcheck(outgoing):
    torch.manual_seed(0)
    tri = randomize_(TriangleMultiplicativeUpdate(10, 5, outgoing)).double()
    mask = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]]).bool()
    pm = pair_mask_from(mask)
    z = torch.randn(2, 5, 5, 10, dtype=torch.float64, requires_grad=True)
    D = 5
    x = tri.norm_in(z)
    p = tri.proj(x)
    m = pm[..., None].double()
    a = p[..., :D] * torch.sigmoid(p[..., 2 * D:3 * D]) * m
    b = p[..., D:2 * D] * torch.sigmoid(p[..., 3 * D:]) * m
    o = torch.einsum("bikd,bjkd->bijd" if outgoing else "bkid,bkjd->bijd", a, b)
    ref = tri.out(tri.norm_out(o) * torch.sigmoid(tri.gate(x))) * m
    out = tri(z, pm)
    assert torch.allclose(out, ref, atol=1e-10)
    g1, = torch.autograd.grad(out.square().sum(), z)
    g2, = torch.autograd.grad(ref.square().sum(), z)
    assert torch.allclose(g1, g2, atol=1e-9)
    assert torch.autograd.gradcheck(lambda zz: tri(zz, pm), (z,), atol=1e-6)


def test_transpose_symmetries():
    row = randomize_(RowAttention(8, 2))
    col = ColumnAttention(8, 2)
    col.load_state_dict(row.state_dict())
    z = torch.randn(2, 6, 6, 8)
    pm = pair_mask_from(torch.tensor([[1, 1, 1, 1, 1, 0], [1] * 6]).bool())
    assert torch.allclose(col(z, pm), row(z.transpose(1, 2), pm.transpose(1, 2)).transpose(1, 2), atol=1e-6)
    # a symmetric map stays symmetric through the transpose-symmetric pair (row ∘ col averaged)
    zs = z + z.transpose(1, 2)
    pms = pm & pm.transpose(1, 2)
    d = row(zs, pms) + col(zs, pms)
    assert torch.allclose(d, d.transpose(1, 2), atol=1e-5)


def test_permutation_equivariance_of_the_stack():
    "Permuting residues (features, mask and residue_index together) permutes the pair map."
    for rpe in ("linear", "log"):
        preset = PT.replace(n_pair_blocks=2, pair_stack="enhanced", rpe=rpe)
        stack = randomize_(PairStack(preset), std=0.1).eval()
        single, pair, mask, ri = inputs(preset, B=1, L=8, pad_from=8)
        ri = ri * 7  # gaps (crops keep true separations)
        perm = torch.randperm(8, generator=torch.Generator().manual_seed(1))
        out = stack(single, pair, mask, ri)
        outp = stack(single[:, perm], pair[:, perm][:, :, perm], mask[:, perm], ri[:, perm])
        assert torch.allclose(outp, out[:, perm][:, :, perm], atol=1e-4)


def test_grad_checkpoint_matches():
    preset = PT.replace(n_pair_blocks=2, pair_stack="enhanced", grad_checkpoint=True)
    single, pair, mask, ri = inputs(preset)
    grads = []
    for ckpt in (False, True):
        stack = randomize_(PairStack(preset), std=0.1).train()
        stack.grad_checkpoint = ckpt
        stack(single, pair, mask, ri).square().sum().backward()
        grads.append(torch.cat([p.grad.flatten() for p in stack.parameters()]))
    assert torch.allclose(grads[0], grads[1], atol=1e-5)


# ---------------------------------------------------------------- RPEs and distogram bins

def test_rpe_bins():
    lin = LinearRPE(4, 32)
    b = lin.bins(torch.tensor([[0, 10, 100]]))
    assert b[0, 0].tolist() == [32, 42, 64] and b[0, 2].tolist() == [0, 0, 32]
    log = LogRPE(4, 128, 512, 32)
    t = log_rpe_table(64, 512)
    assert t[:9].tolist() == list(range(9)) and t[512] == 63 and (t.diff() >= 0).all()
    assert (torch.bincount(t, minlength=64) >= 1).all()
    ri = torch.tensor([[0, 3, 4, 30, 100, 600]])
    bins = log.bins(ri)
    assert bins[0, 0, 1] == 3 and bins[0, 1, 0] == 64 + 3 and bins[0, 0, 5] == 63 and bins[0, 5, 0] == 127
    assert torch.equal(log(ri), log(ri + 1000))  # only separations matter
    assert log.sinusoids(ri).shape == (1, 6, 6, 32)
    assert bins[0, 0, 3] != bins[0, 0, 4]  # separations 30 and 100 are distinct (v12 would clip both to 32)
    with pytest.raises(ValueError):
        LogRPE(4, 127)
    with pytest.raises(ValueError):
        log_rpe_table(8, 512)


def test_dist_bins():
    p = get_preset("v13")
    e = dist_bin_edges(p)
    assert len(e) == 33 and e[0] == 2 and e[-1] == 40
    d = torch.tensor([1.0, 2.0, 2.0 + 38 / 32 + 1e-3, 39.99, 100.0])
    assert distance_to_bin(d, p).tolist() == [0, 0, 1, 31, 31]
    assert torch.equal(distance_to_bin(d / 10, p, model_units=True), distance_to_bin(d, p))


# ---------------------------------------------------------------- parameter counts

def test_parameter_counts_v12_v13(capsys):
    def n(m):
        return sum(p.numel() for p in m.parameters())
    c12, c13 = n(PairStack(get_preset("v12"))), n(PairStack(get_preset("v13")))
    caux = n(AuxPairStack(get_preset("v13")))
    with capsys.disabled():
        print(f"\npair stack params: v12 (4 axial, d128) {c12:,}; v13 (8 enhanced, tri64, transition x8) {c13:,}; "
              f"aux {caux:,}; axial block {n(AxialPairBlock(128, 4)):,}; enhanced block {n(EnhancedPairBlock(128, 4, 64, 8)):,}")
    assert get_preset("v13").pair_transition_n == 8 and get_preset("v12b").pair_transition_n == 4
    assert 1.0e6 < c12 < 1.5e6 and 4.0e6 < c13 < 4.6e6 and 1.0e5 < caux < 3.0e5
