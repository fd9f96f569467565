"""Reverse-diffusion samplers over a `DiffusionSchedule`: the paper's ancestral DDPM, DDIM, DPM-Solver++(2M).

All share one loop. Randomness is per sample: element b of the batch draws all its noise from
`generators[b]` (shape `x.shape[1:]`), so a sample's trajectory does not depend on which other
samples share its batch, and a resumed or re-sharded run reproduces it.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
from torch import nn

from ..progress import progress as progress_bar
from .schedule import DiffusionSchedule

SAMPLING_METHODS = ("ddpm", "ddim", "dpmsolver++")

EpsFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def draw_noise(generators: Sequence[torch.Generator], sample_shape: Sequence[int],
               device: str | torch.device, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """N(0, I) noise of shape (len(generators), *sample_shape); row b drawn from `generators[b]`."""
    rows = [torch.randn(tuple(sample_shape), generator=g, device=g.device, dtype=dtype) for g in generators]
    return torch.stack(rows).to(device)


def guided_eps(eps_uncond: torch.Tensor, eps_cond: torch.Tensor, guidance_scale: float) -> torch.Tensor:
    """Classifier-free guidance: (1 - w) eps_uncond + w eps_cond (w = 1 is plain conditional)."""
    return (1 - guidance_scale) * eps_uncond + guidance_scale * eps_cond


def make_eps_fn(unet: nn.Module, context: torch.Tensor | None,
                guidance_scale: float | None = None) -> EpsFn:
    """Bind a context (and optional CFG scale) to a UNet, giving the `eps_fn(x, t)` the samplers call.

    With guidance, the conditional and unconditional (empty-context, like `context=None`) predictions
    come from one batched call in which the second half's context rows are masked to empty.
    """
    if guidance_scale is None:
        return lambda x, t: unet(x, t, context)
    if context is None or not getattr(unet, "is_context_conditional", True):
        raise ValueError("classifier-free guidance needs a context-conditional UNet and a context")
    batch = context.shape[0]
    doubled_context = torch.cat((context, context))
    mask = torch.arange(2 * batch, device=context.device) >= batch

    def eps_fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        eps_cond, eps_uncond = unet(torch.cat((x, x)), torch.cat((t, t)), doubled_context, mask).chunk(2)
        return guided_eps(eps_uncond, eps_cond, guidance_scale)

    return eps_fn


def ddpm_step(schedule: DiffusionSchedule, x: torch.Tensor, eps: torch.Tensor, i: int,
              z: torch.Tensor | None) -> torch.Tensor:
    """One ancestral step i -> i-1 of the paper: x = (x - eps * beta/sqrt(1-abar)) / sqrt(alpha) + sigma z."""
    out = schedule.sqrt_alphas_inv[i].item() * (
        x - eps * schedule.one_minus_alphas_over_sqrt_one_minus_alpha_bars[i].item())
    return out if z is None else out + schedule.sigmas[i].item() * z


def sampling_timesteps(n_steps: int, steps: int) -> list[int]:
    """`steps` decreasing timesteps from T-1, evenly spaced ("trailing"); steps = T gives T-1..0."""
    if not 1 <= steps <= n_steps:
        raise ValueError(f"steps must be between 1 and T={n_steps}, got {steps}")
    return [round(n_steps - k * n_steps / steps) - 1 for k in range(steps)]


def _alpha_bar(schedule: DiffusionSchedule, t: int | None) -> float:
    """alpha_bar at step t in float64; `None` is the clean end of the chain (alpha_bar = 1)."""
    return 1.0 if t is None else float(schedule.alpha_bars[t].item())


def _predict_x0(x: torch.Tensor, eps: torch.Tensor, alpha_bar: float) -> torch.Tensor:
    """The clean latent x_t implies with noise eps: (x - sqrt(1 - alpha_bar) eps) / sqrt(alpha_bar)."""
    return (x - (1 - alpha_bar) ** 0.5 * eps) / alpha_bar ** 0.5


def _ddim_update(x: torch.Tensor, eps: torch.Tensor, ab_t: float, ab_prev: float, eta: float,
                 z: torch.Tensor | None) -> torch.Tensor:
    x0 = _predict_x0(x, eps, ab_t)
    sigma = eta * ((1 - ab_prev) / (1 - ab_t) * (1 - ab_t / ab_prev)) ** 0.5
    x_prev = ab_prev ** 0.5 * x0 + max(1 - ab_prev - sigma ** 2, 0.0) ** 0.5 * eps
    return x_prev if z is None or sigma == 0 else x_prev + sigma * z


def clip_eps(x: torch.Tensor, eps: torch.Tensor, alpha_bar: float,
             x0_range: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """The eps whose clean-latent prediction is the model's, clamped to `x0_range` = (low, high).

    Pixel-space DDPM clips x0 to [-1, 1] ("clip_denoised"); this is the same for latents. Early in
    training the eps error at large t, divided by sqrt(alpha_bar) ~ 0.006, throws x0 far off the data
    and the trajectory never returns; clamping keeps every sampler on it.
    """
    x0 = _predict_x0(x, eps, alpha_bar).clamp(*x0_range)
    return (x - alpha_bar ** 0.5 * x0) / (1 - alpha_bar) ** 0.5


def sample(eps_fn: EpsFn, x_T: torch.Tensor, schedule: DiffusionSchedule, method: str = "ddpm",
           steps: int | None = None, eta: float = 0.0,
           generators: Sequence[torch.Generator] | None = None, progress: bool = False,
           x0_range: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """Run the reverse process from `x_T` to a clean latent.

    method `ddpm`: the paper's ancestral sampler over all T steps (`steps` must be None or T);
    `ddim`: `steps` steps with stochasticity `eta` (0 = deterministic);
    `dpmsolver++`: DPM-Solver++(2M), multistep second order, `steps` steps, deterministic.
    `generators` (one per batch element) are required whenever noise is drawn (ddpm; ddim, eta > 0).
    `eps_fn(x, t)` gets the int64 step tensor `t` of shape (B,) on x's device.
    `x0_range` (low, high), broadcastable to x (moved to its device): clamp every clean-latent
    prediction (`clip_eps`); None (the paper) leaves them as the model makes them.
    """
    if method not in SAMPLING_METHODS:
        raise ValueError(f"unknown sampling method {method!r}; expected one of {SAMPLING_METHODS}")
    T = schedule.n_steps
    if method == "ddpm":
        if steps not in (None, T):
            raise ValueError(f"the ancestral ddpm sampler runs all T={T} steps; got steps={steps}")
        timesteps = list(range(T - 1, -1, -1))
    else:
        if steps is None:
            raise ValueError(f"method {method!r} needs `steps`")
        timesteps = sampling_timesteps(T, steps)
    stochastic = method == "ddpm" or (method == "ddim" and eta > 0)
    if stochastic and (generators is None or len(generators) != x_T.shape[0]):
        raise ValueError(f"method {method!r} draws noise: pass one torch.Generator per batch element "
                         f"({x_T.shape[0]}), got {None if generators is None else len(generators)}")

    def noise() -> torch.Tensor:
        return draw_noise(generators, x_T.shape[1:], x_T.device, x_T.dtype)

    if x0_range is not None:
        x0_range = tuple(bound.to(x_T.device, x_T.dtype) for bound in x0_range)
    x = x_T
    previous_x0: torch.Tensor | None = None
    iterator = progress_bar(timesteps, desc=f"{method} sampling", unit="step") if progress else timesteps
    for k, t in enumerate(iterator):
        t_prev = timesteps[k + 1] if k + 1 < len(timesteps) else None
        t_tensor = torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)
        eps = eps_fn(x, t_tensor).to(x.dtype)
        if x0_range is not None:
            eps = clip_eps(x, eps, _alpha_bar(schedule, t), x0_range)
        if method == "ddpm":
            x = ddpm_step(schedule, x, eps, t, noise() if t > 1 else None)
        elif method == "ddim":
            ab_prev = _alpha_bar(schedule, t_prev)
            x = _ddim_update(x, eps, _alpha_bar(schedule, t), ab_prev, eta,
                             noise() if eta > 0 and t_prev is not None else None)
        else:
            x, previous_x0 = _dpmsolver_pp_update(schedule, x, eps, t, t_prev, timesteps[k - 1] if k else None,
                                                  previous_x0)
    return x


def _dpmsolver_pp_update(schedule: DiffusionSchedule, x: torch.Tensor, eps: torch.Tensor, t: int,
                         t_prev: int | None, t_last: int | None,
                         last_x0: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """DPM-Solver++(2M) (Lu et al. 2022, data prediction) from t to t_prev; returns (x, x0 at t).

    First order (= DDIM) on the first step and into the clean end (lambda = inf); second order
    otherwise, using the x0 prediction of the previous timestep `t_last`.
    """
    ab_t = _alpha_bar(schedule, t)
    x0 = _predict_x0(x, eps, ab_t)
    if t_prev is None:
        return x0, x0

    def lam(ab: float) -> float:  # log(alpha / sigma)
        return 0.5 * (math.log(ab) - math.log1p(-ab))

    ab_prev = _alpha_bar(schedule, t_prev)
    h = lam(ab_prev) - lam(ab_t)
    if last_x0 is None:
        d = x0
    else:
        r = (lam(ab_t) - lam(_alpha_bar(schedule, t_last))) / h
        d = (1 + 1 / (2 * r)) * x0 - (1 / (2 * r)) * last_x0
    sigma_ratio = ((1 - ab_prev) / (1 - ab_t)) ** 0.5
    x_prev = sigma_ratio * x - ab_prev ** 0.5 * math.expm1(-h) * d
    return x_prev, x0
