"Tests for minifold.diffusion: schedules, q_sample marginals and masking, posterior, SNR gate, timestep embedding."
import math

import pytest
import torch

from minifold.diffusion import NoiseSchedule, cosine_betas, linear_betas, timestep_embedding


@pytest.mark.parametrize("kind", ["cosine", "linear"])
@pytest.mark.parametrize("T", [50, 1000])
def test_snr_strictly_decreasing_and_bounds(kind, T):
    S = NoiseSchedule(T, kind)
    snr = S.snr(torch.arange(T))
    assert torch.isfinite(snr).all() and (snr > 0).all()
    assert (snr[1:] < snr[:-1]).all(), "SNR must decrease strictly with t"
    assert S.alphas_cumprod[0] > 0.99 and S.alphas_cumprod[-1] < 1e-3
    conf = S.frame_confidence(torch.arange(T))
    assert (conf[1:] <= conf[:-1]).all() and conf.min() == 0 and conf.max() == 1


def test_frame_confidence_formula():
    S = NoiseSchedule(1000, "cosine")
    t = torch.arange(1000)
    snr = S.snr(t)
    expect = ((snr - 0.2) / 0.8).clamp(0, 1)
    assert torch.allclose(S.frame_confidence(t), expect)
    # fully open before SNR drops below 1, fully closed after SNR < 0.2 (t ≈ 730 for cosine)
    assert (S.frame_confidence(t[snr >= 1]) == 1).all() and (S.frame_confidence(t[snr <= 0.2]) == 0).all()
    assert S.frame_confidence(torch.tensor([700])).item() > 0 and S.frame_confidence(torch.tensor([740])).item() == 0


@pytest.mark.parametrize("kind", ["cosine", "linear"])
def test_marginal_variance(kind):
    "x0 with unit variance → Var(x_t) = ᾱ + (1 − ᾱ) = 1 (variance preserving); x0 = 0 → Var = 1 − ᾱ; mean = √ᾱ x0."
    S = NoiseSchedule(1000, kind)
    g = torch.Generator().manual_seed(0)
    t = torch.tensor([0, 100, 400, 700, 999])
    B, L = len(t), 20000
    x0 = torch.randn(B, L, 3, generator=g)
    xt = S.q_sample(x0, t, generator=g)
    assert torch.allclose(xt.var(dim=(1, 2)), torch.ones(B), atol=0.03)
    xt0 = S.q_sample(torch.zeros(B, L, 3), t, generator=g)
    assert torch.allclose(xt0.var(dim=(1, 2)), 1 - S.alphas_cumprod[t], atol=0.02)
    # conditional mean: regress x_t on x0
    c = torch.full((B, L, 3), 0.7)
    xtc = S.q_sample(c, t, generator=g)
    assert torch.allclose(xtc.mean(dim=(1, 2)), 0.7 * S.sqrt_alphas_cumprod[t], atol=0.02)


def test_masking_and_validation():
    S = NoiseSchedule(1000)
    x0 = torch.randn(3, 10, 3) + 5.0
    m = torch.ones(3, 10, dtype=torch.bool)
    m[0, 7:] = False
    m[2, :] = False
    noise = torch.randn(3, 10, 3)
    xt = S.q_sample(x0, torch.tensor([5, 500, 999]), noise, m)
    assert (xt[0, 7:] == 0).all() and (xt[2] == 0).all() and (xt[0, :7] != 0).all() and (xt[1] != 0).all()
    # real entries equal the unmasked computation
    xt_full = S.q_sample(x0, torch.tensor([5, 500, 999]), noise)
    assert torch.equal(xt[m], xt_full[m])
    with pytest.raises(ValueError, match="t must have shape"):
        S.q_sample(x0, torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="noise shape"):
        S.q_sample(x0, torch.tensor([1, 2, 3]), noise=torch.randn(3, 9, 3))
    with pytest.raises(ValueError, match=r"\[0, 999\]"):
        S.q_sample(x0, torch.tensor([1, 2, 1000]))
    with pytest.raises(ValueError, match="integers"):
        S.snr(torch.tensor([1.5]))


def test_dtype_device_and_generator():
    S = NoiseSchedule(100, "cosine")
    x0 = torch.randn(2, 5, 3).to(torch.bfloat16)
    xt = S.q_sample(x0, torch.tensor([3, 99]), generator=torch.Generator().manual_seed(1))
    assert xt.dtype == torch.bfloat16 and torch.isfinite(xt.float()).all()
    a = S.q_sample(x0.float(), torch.tensor([3, 99]), generator=torch.Generator().manual_seed(1))
    b = S.q_sample(x0.float(), torch.tensor([3, 99]), generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    t = S.sample_timesteps(1000, generator=torch.Generator().manual_seed(0))
    assert t.dtype == torch.long and t.min() >= 0 and t.max() <= 99 and len(t.unique()) > 90


def test_posterior_is_consistent_with_marginals():
    "x_t ~ q(x_t|x0), x_{t-1} ~ q(x_{t-1}|x_t,x0)  ⇒  x_{t-1} ~ q(x_{t-1}|x0) (Monte Carlo)."
    S = NoiseSchedule(1000, "cosine")
    g = torch.Generator().manual_seed(0)
    t = torch.tensor([1, 300, 700, 999])
    B, L = len(t), 30000
    x0 = torch.full((B, L, 3), 0.5)
    xt = S.q_sample(x0, t, generator=g)
    mean, var, logvar = S.q_posterior(x0, xt, t)
    assert torch.allclose(var, logvar.exp(), rtol=1e-4)  # t >= 1: the log is not clipped
    x_prev = mean + var.sqrt() * torch.randn(xt.shape, generator=g)
    ab_prev = S.alphas_cumprod[t - 1]
    assert torch.allclose(x_prev.mean(dim=(1, 2)), 0.5 * ab_prev.sqrt(), atol=0.02)
    assert torch.allclose(x_prev.var(dim=(1, 2)), 1 - ab_prev, atol=0.02)


def test_eps_x0_roundtrip():
    S = NoiseSchedule(1000)
    x0, eps = torch.randn(4, 7, 3), torch.randn(4, 7, 3)
    t = torch.tensor([0, 10, 500, 900])
    xt = S.q_sample(x0, t, eps)
    assert torch.allclose(S.predict_eps_from_x0(xt, t, x0), eps, atol=1e-3)
    assert torch.allclose(S.predict_x0_from_eps(xt, t, eps), x0, atol=1e-3)


def test_schedule_tables_and_module_behaviour():
    assert torch.allclose(linear_betas(500), linear_betas(1000)[::2] * 2, atol=1e-4)  # T-rescaled endpoints
    assert cosine_betas(1000).max() <= 0.999
    S = NoiseSchedule(1000)
    assert S.state_dict() == {} and "alphas_cumprod" in dict(S.named_buffers())
    S2 = S.to(torch.float64)  # buffers follow module casts
    assert S2.alphas_cumprod.dtype == torch.float64
    with pytest.raises(ValueError):
        NoiseSchedule(1, "cosine")


def test_timestep_embedding():
    e = timestep_embedding(torch.tensor([0, 1, 999]), 32)
    assert e.shape == (3, 32) and e.dtype == torch.float32
    assert torch.allclose(e[0], torch.cat([torch.ones(16), torch.zeros(16)]))
    # first frequency is 1 rad / step
    assert math.isclose(e[1, 16].item(), math.sin(1.0), rel_tol=1e-6)
    assert timestep_embedding(torch.tensor([2.5]), 5).shape == (1, 5)
    with pytest.raises(ValueError):
        timestep_embedding(torch.zeros(2, 2), 8)
