"""Diffusion schedule, training loss and samplers: parity with the original and sampler properties."""

from __future__ import annotations

import math

import pytest
import torch

from idiff_core.diffusion.samplers import (draw_noise, ddpm_step, guided_eps, make_eps_fn, sample,
                                           sampling_timesteps)
from idiff_core.diffusion.schedule import BUFFER_NAMES, DiffusionSchedule
from idiff_core.models.unet import UNet, UNetConfig
from refdata import discover

EXAMPLE_TOL = 1e-6

TINY = dict(input_channels=3, initial_channels=32, channel_multipliers=[1], is_attention=[True],
            attention_heads=-1, attention_head_channels=16, n_blocks_per_resolution=1,
            context_input_channels=512, context_channels=32, condition_type="CA",
            is_context_conditional=True, context_dropout_probability=0.25)


def _schedule_from_fixture(ref: dict) -> DiffusionSchedule:
    p = ref["params"]
    return DiffusionSchedule.create(p["T"], p["schedule_type"], k=p["schedule_k"],
                                    beta_min=p["schedule_beta_min"], beta_max=p["schedule_beta_max"])


@pytest.mark.parametrize("path", discover("diffusion", "ddpm_*_T*.pt"))
def test_schedule_buffers_match_original(path):
    ref = torch.load(path, weights_only=True)
    schedule = _schedule_from_fixture(ref)
    assert schedule.n_steps == ref["params"]["T"]
    assert torch.equal(schedule.betas, ref["betas"]) and torch.equal(schedule.alphas, ref["alphas"])
    # float32 log/exp/sqrt kernels differ by an ulp between CPUs (this torch build's sqrt is not even
    # correctly rounded), so derived buffers are compared at the README's fallback tolerance.
    for name in BUFFER_NAMES:
        mine = getattr(schedule, name)
        assert mine.dtype == torch.float32
        torch.testing.assert_close(mine, ref[name], rtol=1e-6, atol=1e-6, msg=name)
    torch.testing.assert_close(schedule.alpha_bars.double(), ref["alphas_cumprod_float64_reference"],
                               rtol=0, atol=1e-6)


@pytest.mark.parametrize("path", discover("diffusion", "ddpm_*_T*.pt"))
def test_worked_examples_match_original(path):
    ref = torch.load(path, weights_only=True)
    schedule = _schedule_from_fixture(ref)
    x_t = schedule.q_sample(ref["x0"], ref["t"], ref["eps"])
    assert (x_t - ref["expected_x_t"]).abs().max() <= EXAMPLE_TOL

    def fake_model(x, t, context, dropout_mask):
        assert torch.equal(t, ref["t"]) and (x - ref["expected_x_t"]).abs().max() <= EXAMPLE_TOL
        return ref["eps_pred"]

    loss = schedule.denoising_loss(fake_model, ref["x0"], ref["t"], ref["eps"], None)
    assert abs(loss.item() - ref["expected_mse_loss"].item()) <= EXAMPLE_TOL
    for k, i in enumerate(ref["step_indices"].tolist()):
        z = ref["step_z"][k] if i > 1 else None
        x_prev = ddpm_step(schedule, ref["step_x_t"][k], ref["step_eps"][k], i, z)
        assert (x_prev - ref["expected_step_x_prev"][k]).abs().max() <= EXAMPLE_TOL, f"step {i}"
    cfg = guided_eps(ref["cfg_eps_uncond"], ref["cfg_eps_cond"], ref["cfg_guidance_scale"])
    assert (cfg - ref["expected_cfg_eps"]).abs().max() <= EXAMPLE_TOL


def test_linear_schedule_scales_with_T_and_bad_kind_is_refused():
    s = DiffusionSchedule.create(500, "linear")
    assert s.n_steps == 500
    assert math.isclose(s.betas[0].item(), 2e-4, rel_tol=1e-6) and math.isclose(s.betas[-1].item(), 0.04, rel_tol=1e-6)
    warped = DiffusionSchedule.create(100, "cosine_warped", k=2.0, beta_min=0.01, beta_max=0.5)
    assert warped.betas.min() >= 0.01 - 1e-7 and warped.betas.max() <= 0.5 + 1e-7
    assert not torch.equal(warped.betas, DiffusionSchedule.create(100, "cosine", beta_max=0.5).betas)
    with pytest.raises(ValueError, match="unknown diffusion schedule"):
        DiffusionSchedule.create(1000, "sigmoid")
    with pytest.raises(ValueError, match="every beta must lie in"):
        DiffusionSchedule.create(12, "linear")


def test_training_loss_is_reproducible_from_generator():
    schedule = DiffusionSchedule.create(1000, "linear")
    x0 = torch.randn(4, 3, 8, 8)
    seen = []

    def model(x, t, context, dropout_mask):
        seen.append(t)
        return torch.zeros_like(x)

    a = schedule.training_loss(model, x0, None, generator=torch.Generator().manual_seed(5))
    b = schedule.training_loss(model, x0, None, generator=torch.Generator().manual_seed(5))
    c = schedule.training_loss(model, x0, None, generator=torch.Generator().manual_seed(6))
    assert a.ndim == 0 and torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(seen[0], seen[1]) and seen[0].min() >= 0 and seen[0].max() < 1000
    gen = torch.Generator().manual_seed(5)
    t = torch.randint(0, 1000, (4,), generator=gen)
    eps = torch.randn(x0.shape, generator=gen)
    assert torch.equal(a, (eps ** 2).mean())  # zero prediction: the loss is E[eps^2] of the same draws
    assert torch.equal(t, seen[0])


def test_sampling_timesteps():
    assert sampling_timesteps(1000, 1000) == list(range(999, -1, -1))
    assert sampling_timesteps(1000, 10) == list(range(999, 0, -100))
    assert sampling_timesteps(20, 3) == [19, 12, 6]
    with pytest.raises(ValueError):
        sampling_timesteps(20, 0)


@pytest.fixture(scope="module")
def tiny_unet() -> UNet:
    torch.manual_seed(0)
    unet = UNet(UNetConfig(**TINY)).eval()
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in unet.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    return unet


def _generators(seeds):
    return [torch.Generator().manual_seed(s) for s in seeds]


@pytest.mark.parametrize("method,steps,eta", [("ddpm", None, 0.0), ("ddim", 5, 0.7), ("dpmsolver++", 5, 0.0)])
def test_samplers_are_per_sample_deterministic(tiny_unet, method, steps, eta):
    schedule = DiffusionSchedule.create(30, "linear")
    seeds = [11, 22, 33]
    context = torch.nn.functional.normalize(torch.randn(3, 512, generator=torch.Generator().manual_seed(0)), dim=1)

    gaussian_eps = _gaussian_eps_fn(schedule)

    def run(indices):
        gens = _generators([seeds[i] for i in indices])
        x_T = draw_noise(gens, (3, 4, 4), "cpu")
        unet_eps = make_eps_fn(tiny_unet, context[indices])

        def eps_fn(x, t):  # a random UNet is no denoiser; anchor it to the exact one so latents stay O(1)
            return gaussian_eps(x, t) + 0.2 * unet_eps(x, t)

        with torch.no_grad():
            return sample(eps_fn, x_T, schedule, method, steps, eta, gens)

    batch = run([0, 1, 2])
    assert batch.shape == (3, 3, 4, 4) and batch.abs().max() < 10
    assert torch.equal(batch, run([0, 1, 2]))
    for i in range(3):
        alone = run([i])
        assert (alone[0] - batch[i]).abs().max() <= 1e-5
    assert not torch.allclose(batch[0], batch[1])


def test_stochastic_samplers_need_generators(tiny_unet):
    schedule = DiffusionSchedule.create(30, "linear")
    x_T = torch.randn(2, 3, 4, 4)
    eps_fn = make_eps_fn(tiny_unet, None)
    with pytest.raises(ValueError, match="one torch.Generator per batch element"):
        sample(eps_fn, x_T, schedule, "ddpm")
    with pytest.raises(ValueError, match="one torch.Generator per batch element"):
        sample(eps_fn, x_T, schedule, "ddim", steps=4, eta=1.0, generators=_generators([1]))
    with pytest.raises(ValueError, match="unknown sampling method"):
        sample(eps_fn, x_T, schedule, "euler", steps=4)
    with pytest.raises(ValueError, match="all T=30 steps"):
        sample(eps_fn, x_T, schedule, "ddpm", steps=4, generators=_generators([1, 2]))
    with torch.no_grad():
        a = sample(eps_fn, x_T, schedule, "ddim", steps=4, progress=True)
        b = sample(eps_fn, x_T, schedule, "ddim", steps=4)
    assert torch.equal(a, b)


def test_guidance_matches_separate_calls(tiny_unet):
    x = torch.randn(2, 3, 4, 4)
    t = torch.tensor([7, 7])
    context = torch.nn.functional.normalize(torch.randn(2, 512), dim=1)
    with torch.no_grad():
        eps_cond, eps_uncond = tiny_unet(x, t, context), tiny_unet(x, t, None)
        guided = make_eps_fn(tiny_unet, context, guidance_scale=2.5)(x, t)
        plain = make_eps_fn(tiny_unet, context, guidance_scale=1.0)(x, t)
    assert (guided - guided_eps(eps_uncond, eps_cond, 2.5)).abs().max() <= 1e-5
    assert (plain - eps_cond).abs().max() <= 1e-5
    with pytest.raises(ValueError, match="classifier-free guidance"):
        make_eps_fn(tiny_unet, None, guidance_scale=2.0)


# Gaussian data x0 ~ N(0, s^2 I) has the exact noise predictor below; the probability-flow ODE then
# maps x_T to x_T * s / std_T with std_t = sqrt(abar_t s^2 + 1 - abar_t), which deterministic
# samplers must approach, and the ancestral sampler must produce samples of variance ~ s^2.
DATA_STD = 0.5


def _gaussian_eps_fn(schedule: DiffusionSchedule):
    def eps_fn(x, t):
        ab = schedule.at("alpha_bars", t, x.ndim)
        return (1 - ab).sqrt() * x / (ab * DATA_STD ** 2 + 1 - ab)
    return eps_fn


def _ode_solution(schedule: DiffusionSchedule, x_T: torch.Tensor) -> torch.Tensor:
    ab_T = schedule.alpha_bars[-1].double()
    return (x_T.double() * DATA_STD / (ab_T * DATA_STD ** 2 + 1 - ab_T).sqrt()).float()


def test_deterministic_samplers_converge_to_the_ode_solution():
    schedule = DiffusionSchedule.create(1000, "linear")
    x_T = torch.randn(4, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    exact = _ode_solution(schedule, x_T)
    eps_fn = _gaussian_eps_fn(schedule)

    def error(method, steps):
        return (sample(eps_fn, x_T, schedule, method, steps) - exact).abs().max().item()

    ddim = [error("ddim", n) for n in (10, 50, 250)]  # first order: ~5x smaller per 5x steps
    assert ddim[0] > 3 * ddim[1] > 9 * ddim[2] and ddim[2] < 0.03
    dpm = [error("dpmsolver++", n) for n in (10, 50)]  # second order: far ahead of DDIM
    assert dpm[0] < ddim[0] and dpm[1] < 5e-3 and dpm[1] < ddim[2] / 4


def test_ancestral_sampler_produces_the_data_variance():
    schedule = DiffusionSchedule.create(100, "linear")
    gens = _generators(range(64))
    x_T = draw_noise(gens, (1, 16, 16), "cpu")
    out = sample(_gaussian_eps_fn(schedule), x_T, schedule, "ddpm", generators=gens)
    assert abs(out.var().item() / DATA_STD ** 2 - 1) < 0.05
    assert abs(out.mean().item()) < 0.02


@pytest.mark.parametrize("method,steps", [("ddpm", None), ("ddim", 10), ("dpmsolver++", 10)])
def test_clipping_x0_bounds_samples_and_is_a_no_op_inside_the_range(method, steps):
    schedule = DiffusionSchedule.create(1000, "linear")
    gens = _generators(range(8))
    x_T = draw_noise(gens, (1, 4, 4), "cpu")
    exact = _gaussian_eps_fn(schedule)
    wide = (torch.tensor(-100.0), torch.tensor(100.0))

    def run(eps_fn, x0_range=None):
        return sample(eps_fn, x_T, schedule, method, steps, generators=_generators(range(8)), x0_range=x0_range)

    # a range the predictions never reach changes nothing
    assert torch.allclose(run(exact, wide), run(exact), atol=1e-5)
    # a range inside the data's is enforced on every sample (the last step returns the clipped x0)
    low, high = torch.full((1, 1, 1, 1), -0.5 * DATA_STD), torch.full((1, 1, 1, 1), 0.5 * DATA_STD)
    assert run(exact).abs().max() > DATA_STD
    clipped = run(exact, (low, high))
    assert clipped.min() >= low.item() - 1e-5 and clipped.max() <= high.item() + 1e-5
    assert (clipped.abs() > 0.45 * DATA_STD).any()  # samples reach the bounds rather than collapsing to 0
