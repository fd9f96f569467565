"""Exponential moving average (EMA) of a model's weights, with IDiff-Face's warm-up decay.

The EMA copy is what IDiff-Face samples from. Its decay grows as 1 - (1 + k)^-power (power 0.75 in the
paper) and is capped (0.9999), so early updates follow the model closely and late ones average over
many steps.

Note on the released code: it stores the decay with `self.decay.value = ...` on a registered tensor
buffer, which sets a plain Python attribute and leaves the tensor at 0, so its "EMA" weights are a copy
of the raw weights at every step. We implement the decay the paper and its config describe.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


def ema_decay(update_index: int, power: float, cap: float) -> float:
    """Decay of the EMA update made after optimizer step `update_index` (0-based).

    Follows the released schedule exactly: k = max(0, update_index - 1), decay = min(cap,
    1 - (1 + k)^-power), so the first two updates copy the weights (decay 0).
    """
    k = max(0, update_index - 1)
    return min(cap, 1.0 - (1.0 + k) ** -power)


def make_ema(model: nn.Module) -> nn.Module:
    """A frozen copy of `model` in eval mode (no CPD dropout), to be updated by `update_ema`."""
    ema = copy.deepcopy(model).eval()
    ema.requires_grad_(False)
    return ema


@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * model for parameters; buffers are copied."""
    ema_params = list(ema.parameters())
    params = [p.detach() for p in model.parameters()]
    if len(ema_params) != len(params):
        raise ValueError("EMA model and trained model have different parameter lists")
    torch._foreach_lerp_(ema_params, params, 1.0 - decay)
    for ema_buffer, buffer in zip(ema.buffers(), model.buffers()):
        ema_buffer.copy_(buffer)
