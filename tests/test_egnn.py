"Tests for minifold.egnn: contract, E(3) equivariance, masking, degenerate inputs under autocast, size at v10."
import pytest
import torch

from minifold.config import get_encoder_preset, get_preset
from minifold.egnn import EGNNDenoiser, EGNNLayer
from minifold.geometry import random_rotation

PT = get_preset("tiny").replace(denoiser="egnn", n_layers=3)


def randomize_(module, std=0.05, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=g) * std)
    return module


def make_inputs(B=2, L=12, pad_from=8, seed=0, preset=PT):
    g = torch.Generator().manual_seed(seed)
    enc = get_encoder_preset(preset.encoder)
    mask = torch.ones(B, L, dtype=torch.bool)
    mask[-1, pad_from:] = False
    single = torch.randn(B, L, enc.d_model, generator=g)
    pair = torch.randn(B, L, L, preset.d_pair, generator=g)
    x_t = torch.randn(B, L, 3, generator=g) * mask[..., None]
    t = torch.randint(0, preset.T, (B,), generator=g)
    return single, pair, x_t, t, mask


@pytest.fixture(scope="module")
def den():
    torch.manual_seed(0)
    return randomize_(EGNNDenoiser(PT)).eval()


def test_contract(den):
    single, pair, x_t, t, mask = make_inputs()
    out = den(single, pair, x_t, t, mask)
    assert set(out) == {"x0", "R", "trans", "atoms"} and out["atoms"] is None
    assert out["x0"].shape == (2, 12, 3) and out["x0"].dtype == torch.float32
    assert torch.equal(out["trans"], out["x0"]) and out["R"].shape == (2, 12, 3, 3)
    assert (out["x0"][1, 8:] == 0).all()
    assert torch.allclose(torch.linalg.det(out["R"]), torch.ones(2, 12), atol=1e-5)
    # self-conditioning accepts a tensor or a previous output dict, and changes the prediction
    o_t = den(single, pair, x_t, t, mask, self_cond_x0=out["x0"])
    o_d = den(single, pair, x_t, t, mask, self_cond_x0=out)
    assert torch.equal(o_t["x0"], o_d["x0"]) and not torch.allclose(o_t["x0"], out["x0"])


@pytest.mark.parametrize("reflect", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_e3_equivariance(den, reflect, seed):
    single, pair, x_t, t, mask = make_inputs(seed=seed)
    sc = torch.randn(x_t.shape, generator=torch.Generator().manual_seed(seed + 10)) * mask[..., None]
    Q = random_rotation(1, generator=torch.Generator().manual_seed(seed))[0]
    if reflect:
        Q = Q @ torch.diag(torch.tensor([1.0, -1.0, 1.0]))
    shift = torch.randn(3, generator=torch.Generator().manual_seed(seed + 20)) * 5
    o1 = den(single, pair, x_t, t, mask, self_cond_x0=sc)
    o2 = den(single, pair, (x_t @ Q.T + shift) * mask[..., None], t, mask, self_cond_x0=(sc @ Q.T - 2 * shift) * mask[..., None])
    m = mask
    assert torch.allclose(o2["x0"][m], (o1["x0"] @ Q.T + shift)[m], atol=2e-4)
    if not reflect:  # proper rotations: frames rotate as Q R (Gram-Schmidt frames are right-handed)
        assert torch.allclose(o2["R"][m], (Q @ o1["R"])[m], atol=2e-4)


def test_translation_of_real_residues_only_and_padding_invariance(den):
    single, pair, x_t, t, mask = make_inputs()
    out = den(single, pair, x_t, t, mask)
    s2, p2, x2 = single.clone(), pair.clone(), x_t.clone()
    s2[1, 8:] = 50.0
    p2[1, 8:] = -50.0
    p2[1, :, 8:] = 3.0
    x2[1, 8:] = 1e4
    out2 = den(s2, p2, x2, t, mask)
    assert torch.allclose(out2["x0"][1, :8], out["x0"][1, :8], atol=1e-5)
    assert torch.allclose(out2["x0"][0], out["x0"][0], atol=1e-6)
    # the padded chain alone (no padding) gives the same prediction
    o3 = den(single[1:, :8], pair[1:, :8, :8], x_t[1:, :8], t[1:], mask[1:, :8])
    assert torch.allclose(o3["x0"][0], out["x0"][1, :8], atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("geom", ["coincident", "collinear", "two_coincident", "single"])
def test_degenerate_inputs_finite_under_autocast(dtype, geom):
    den = randomize_(EGNNDenoiser(PT)).train()
    single, pair, x_t, t, mask = make_inputs()
    if geom == "coincident":
        x = torch.zeros_like(x_t)
    elif geom == "collinear":
        x = torch.linspace(-2, 2, 12)[None, :, None] * torch.tensor([0.3, -0.2, 0.9])
        x = x.expand(2, 12, 3).clone()
    elif geom == "two_coincident":
        x = x_t.clone()
        x[:, 1] = x[:, 0]
    else:  # a single residue
        single, pair, x_t, t, mask = single[:, :1], pair[:, :1, :1], x_t[:, :1], t, mask[:, :1]
        x = x_t
    with torch.autocast("cpu", dtype=dtype):
        out = den(single * 20, pair * 20, x, t, mask, self_cond_x0=x)
        loss = out["x0"].square().sum() + (out["R"] ** 2).sum()
    loss.backward()
    assert torch.isfinite(out["x0"]).all() and torch.isfinite(out["R"]).all()
    for name, p in den.named_parameters():
        assert p.grad is None or torch.isfinite(p.grad).all(), name


def test_gradients_wrt_coordinates_finite_at_coincidence():
    layer = randomize_(EGNNLayer(16, 8, 32, 32))
    h = torch.randn(1, 4, 16)
    x = torch.zeros(1, 4, 3, requires_grad=True)
    e = torch.randn(1, 4, 4, 8)
    pm = ~torch.eye(4, dtype=torch.bool)[None]
    inv_n = torch.full((1, 4, 1), 1 / 3)
    h2, x2 = layer(h, x, e, pm, inv_n)
    (h2.sum() + x2.sum()).backward()
    assert torch.isfinite(x.grad).all()


def test_grad_checkpoint_same_gradients():
    single, pair, x_t, t, mask = make_inputs()
    grads = []
    for ckpt in (False, True):
        torch.manual_seed(0)
        den = randomize_(EGNNDenoiser(PT)).train()
        den.grad_checkpoint = ckpt
        den(single, pair, x_t, t, mask)["x0"].square().sum().backward()
        grads.append(torch.cat([p.grad.flatten() for p in den.parameters() if p.grad is not None]))
    assert torch.allclose(grads[0], grads[1], atol=1e-5)


def test_input_validation(den):
    single, pair, x_t, t, mask = make_inputs()
    with pytest.raises(ValueError, match="EGNNDenoiser"):
        den(single, pair[:, :, :-1], x_t, t, mask)
    with pytest.raises(ValueError, match="EGNNDenoiser"):
        den(single, pair, x_t[:, :-1], t, mask)


def test_v10_size(capsys):
    d = EGNNDenoiser(get_preset("v10"))
    n = sum(p.numel() for p in d.parameters())
    with capsys.disabled():
        print(f"\nv10 EGNNDenoiser parameters: {n:,} (target ≈ 13M; seed v10 total 14.6M incl. 1.2M frozen encoder + heads)")
    assert 12.5e6 < n < 13.5e6
    assert d.state_dict().keys().isdisjoint({"schedule.alphas_cumprod"})  # schedule buffers are not checkpointed
