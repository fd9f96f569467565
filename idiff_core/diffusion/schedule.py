"""The DDPM wrapper of IDiff-Face: noise schedule, forward process, training loss, checkpoint layout.

The eight schedule buffers are computed exactly as the original (float32, alpha_bars via
exp(cumsum(log))), and `ddpm_checkpoint_state` / `load_ddpm_checkpoint` read and write the released
`model.ckpt` / `ema_averaged_model.ckpt` layout: the buffers first, then `eps_model.<unet key>`.
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..checkpoint import state_dict_mismatches, strip_wrapper_prefix

SCHEDULE_KINDS = ("linear", "cosine", "cosine_warped")
BUFFER_NAMES = ("betas", "alphas", "sigmas", "sqrt_alphas_inv", "alpha_bars", "sqrt_alpha_bars",
                "sqrt_one_minus_alpha_bars", "one_minus_alphas_over_sqrt_one_minus_alpha_bars")
EPS_MODEL_PREFIX = "eps_model."
COSINE_OFFSET = 0.008

EpsModel = Callable[..., torch.Tensor]


def _linear_betas(n_steps: int) -> torch.Tensor:
    scale = 1000 / n_steps
    return torch.linspace(scale * 1e-4, scale * 0.02, n_steps, dtype=torch.float32)


def _cosine_betas(n_steps: int, k: float, beta_min: float, beta_max: float) -> torch.Tensor:
    def alpha_bar(u: float) -> float:
        return math.cos(math.pi / 2 * (u + COSINE_OFFSET) / (1 + COSINE_OFFSET) ** k) ** 2

    betas = [min(max(1 - alpha_bar((i + 1) / n_steps) / alpha_bar(i / n_steps), beta_min), beta_max)
             for i in range(n_steps)]
    return torch.tensor(betas, dtype=torch.float64).float()


@dataclasses.dataclass(frozen=True)
class DiffusionSettings:
    """The forward process: T = `timesteps` steps of the original's beta `schedule` (linear, cosine, ...)."""

    timesteps: int
    schedule: str


@dataclasses.dataclass(frozen=True)
class DiffusionSchedule:
    """The eight float32 length-T buffers of the original DDPM wrapper (names as in its checkpoints)."""

    betas: torch.Tensor
    alphas: torch.Tensor
    sigmas: torch.Tensor
    sqrt_alphas_inv: torch.Tensor
    alpha_bars: torch.Tensor
    sqrt_alpha_bars: torch.Tensor
    sqrt_one_minus_alpha_bars: torch.Tensor
    one_minus_alphas_over_sqrt_one_minus_alpha_bars: torch.Tensor

    @classmethod
    def from_betas(cls, betas: torch.Tensor) -> "DiffusionSchedule":
        betas = betas.to(torch.float32)
        alphas = 1 - betas
        alpha_bars = torch.exp(torch.cumsum(torch.log(alphas), dim=0))
        sqrt_one_minus_alpha_bars = torch.sqrt(1 - alpha_bars)
        return cls(betas=betas, alphas=alphas, sigmas=torch.sqrt(betas), sqrt_alphas_inv=1 / torch.sqrt(alphas),
                   alpha_bars=alpha_bars, sqrt_alpha_bars=torch.sqrt(alpha_bars),
                   sqrt_one_minus_alpha_bars=sqrt_one_minus_alpha_bars,
                   one_minus_alphas_over_sqrt_one_minus_alpha_bars=(1 - alphas) / sqrt_one_minus_alpha_bars)

    @classmethod
    def create(cls, n_steps: int, kind: str, k: float = 1.0, beta_min: float = 0.0,
               beta_max: float = 0.1) -> "DiffusionSchedule":
        """The original's schedule `kind` over T = `n_steps`.

        `linear` (the paper: betas 1e-4..0.02 at T=1000) ignores k/beta_min/beta_max. `cosine` forces
        k=1 and beta_min=0 but still clips at `beta_max` (0.1 in the original's config);
        `cosine_warped` uses all three.
        """
        if kind not in SCHEDULE_KINDS:
            raise ValueError(f"unknown diffusion schedule {kind!r}; expected one of {SCHEDULE_KINDS}")
        if n_steps < 2:
            raise ValueError(f"a diffusion schedule needs at least 2 steps, got {n_steps}")
        if kind == "linear":
            betas = _linear_betas(n_steps)
        else:
            if kind == "cosine":
                k, beta_min = 1.0, 0.0
            betas = _cosine_betas(n_steps, k, beta_min, beta_max)
        if not (0 < betas.min() and betas.max() < 1):
            raise ValueError(f"{kind} schedule with T={n_steps} has betas in [{betas.min():.4g}, {betas.max():.4g}];"
                             " every beta must lie in (0, 1) (the linear schedule needs T >= 21)")
        return cls.from_betas(betas)

    @classmethod
    def from_buffers(cls, buffers: dict[str, torch.Tensor]) -> "DiffusionSchedule":
        missing = [name for name in BUFFER_NAMES if name not in buffers]
        if missing:
            raise ValueError(f"schedule buffers {missing} are missing")
        return cls(**{name: buffers[name].to(torch.float32) for name in BUFFER_NAMES})

    @property
    def n_steps(self) -> int:
        return self.betas.shape[0]

    def buffers(self) -> dict[str, torch.Tensor]:
        """The buffers by name, in the original's registration order."""
        return {name: getattr(self, name) for name in BUFFER_NAMES}

    def to(self, device: str | torch.device) -> "DiffusionSchedule":
        return DiffusionSchedule(**{name: t.to(device) for name, t in self.buffers().items()})

    def at(self, name: str, t: torch.Tensor, ndim: int) -> torch.Tensor:
        """Buffer `name` gathered at the (B,) steps `t`, shaped to broadcast over a `ndim` batch."""
        values = getattr(self, name).to(t.device)[t]
        return values.view(-1, *([1] * (ndim - 1)))

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) eps."""
        return (self.at("sqrt_alpha_bars", t, x0.ndim) * x0
                + self.at("sqrt_one_minus_alpha_bars", t, x0.ndim) * eps)

    def denoising_loss(self, eps_model: EpsModel, x0: torch.Tensor, t: torch.Tensor, eps: torch.Tensor,
                       context: torch.Tensor | None, dropout_mask: torch.Tensor | None = None) -> torch.Tensor:
        """MSE between the true noise and the model's prediction from x_t (mean over all elements)."""
        x_t = self.q_sample(x0, t, eps)
        eps_pred = eps_model(x_t, t, context, dropout_mask)
        return F.mse_loss(eps_pred.float(), eps.float())

    def training_loss(self, eps_model: EpsModel, x0: torch.Tensor, context: torch.Tensor | None,
                      generator: torch.Generator | None = None,
                      dropout_mask: torch.Tensor | None = None) -> torch.Tensor:
        """The DDPM loss with t ~ U{0..T-1} per sample and eps ~ N(0, I), drawn from `generator`.

        Draws happen on the generator's device (CPU generators work for CUDA latents), t first.
        """
        draw_device = generator.device if generator is not None else x0.device
        t = torch.randint(0, self.n_steps, (x0.shape[0],), generator=generator, device=draw_device)
        eps = torch.randn(x0.shape, generator=generator, device=draw_device, dtype=x0.dtype)
        return self.denoising_loss(eps_model, x0, t.to(x0.device), eps.to(x0.device), context, dropout_mask)


def ddpm_checkpoint_state(unet: nn.Module, schedule: DiffusionSchedule) -> dict[str, torch.Tensor]:
    """The state dict of the original DDPM wrapper: 8 schedule buffers, then `eps_model.*` weights."""
    state = {name: t.detach().cpu().clone() for name, t in schedule.buffers().items()}
    state.update({EPS_MODEL_PREFIX + key: value.detach().cpu().clone() for key, value in unet.state_dict().items()})
    return state


def split_ddpm_state(state: Any) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor] | None, str]:
    """(UNet weights, schedule buffers or None, the form's name) of a checkpoint in any form the
    released code wrote: the DDPM wrapper (buffers + `eps_model.*`) or a bare UNet state dict, either
    one under a `state_dict` key and/or with a `module.` / `_forward_module.` prefix on every key."""
    form = []
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state, form = state["state_dict"], ["under 'state_dict'"]
    if not isinstance(state, dict) or not state or not all(isinstance(k, str) for k in state):
        raise ValueError(f"expected a state dict of named tensors, got {type(state).__name__}")
    state, prefix = strip_wrapper_prefix(state)
    if prefix:
        form.append(f"with '{prefix}' keys")
    tensors = {key: value for key, value in state.items() if isinstance(value, torch.Tensor)}
    if any(key.startswith(EPS_MODEL_PREFIX) for key in tensors):
        weights = {key[len(EPS_MODEL_PREFIX):]: v for key, v in tensors.items() if key.startswith(EPS_MODEL_PREFIX)}
        buffers = {name: tensors[name] for name in BUFFER_NAMES if name in tensors}
        return weights, buffers, " ".join(["DDPM wrapper (buffers + eps_model.*)"] + form)
    return tensors, None, " ".join(["bare UNet state dict"] + form)


def load_ddpm_checkpoint(path: str | os.PathLike, unet: nn.Module) -> DiffusionSchedule:
    """Load a `model.ckpt` / `ema_averaged_model.ckpt` into `unet` (strictly); return its schedule.

    The file is read with `weights_only=True`. A key or shape mismatch raises a ValueError naming the
    offending keys, which usually means the UNet config does not match the checkpoint's.
    """
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path} is not a DDPM state dict (expected a flat dict of tensors)")
    weights = {key[len(EPS_MODEL_PREFIX):]: value for key, value in state.items()
               if key.startswith(EPS_MODEL_PREFIX)}
    unexpected_top = sorted(k for k in state if not k.startswith(EPS_MODEL_PREFIX) and k not in BUFFER_NAMES)
    problems = [f"eps_model {problem}" for problem in state_dict_mismatches(unet.state_dict(), weights)]
    if unexpected_top:
        problems.append(f"unknown top-level keys: {', '.join(unexpected_top[:5])}")
    if problems:
        raise ValueError(f"checkpoint {path} does not fit this UNet config; " + "; ".join(problems))
    unet.load_state_dict(weights, strict=True)
    return DiffusionSchedule.from_buffers(state)
