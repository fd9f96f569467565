"""The IDiff-Face denoiser: a UNet predicting the noise in a latent, conditioned on an identity context.

State-dict compatible with the released IDiff-Face checkpoints (module names and registration order
follow the original), for the three condition variants: cross-attention (`CA`), adaptive GroupNorm
(`AdaGN`) and unconditional (`is_context_conditional=False`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

CONDITION_TYPES = ("CA", "AdaGN")


def _group_norm(channels: int, groups: int) -> nn.GroupNorm:
    if channels % groups:
        raise ValueError(f"channel count {channels} is not a multiple of the {groups} GroupNorm groups (norm_groups)")
    return nn.GroupNorm(groups, channels)


def _zero_(module: nn.Module) -> nn.Module:
    """Zero a layer's parameters, as the original does for the last layer of each residual branch."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class TimeEmbedding(nn.Module):
    """Sinusoidal embedding of the integer step t (cos first), then a 2-layer MLP."""

    def __init__(self, initial_channels: int, time_channels: int):
        super().__init__()
        self.initial_channels = initial_channels
        self.lin1 = nn.Linear(initial_channels, time_channels)
        self.act = nn.SiLU()
        self.lin2 = nn.Linear(time_channels, time_channels)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        half = self.initial_channels // 2
        k = torch.arange(half, device=t.device, dtype=torch.float32)
        freq = torch.exp((-math.log(10000) * k) / half)
        args = t.float()[:, None] * freq[None]
        vector = torch.cat((args.cos(), args.sin()), dim=1)
        return self.lin2(self.act(self.lin1(vector)))


class MultiHeadAttention(nn.Module):
    """Attention over the length axis of (B, C, L) tensors; heads are contiguous channel blocks."""

    def __init__(self, query_channels: int, heads: int, head_channels: int, key_channels: int | None = None):
        super().__init__()
        inner = heads * head_channels
        key_channels = query_channels if key_channels is None else key_channels
        self.heads, self.head_channels = heads, head_channels
        self.to_q = nn.Conv1d(query_channels, inner, 1)
        self.to_k = nn.Conv1d(key_channels, inner, 1)
        self.to_v = nn.Conv1d(key_channels, inner, 1)
        self.proj_out = nn.Conv1d(inner, query_channels, 1)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        source = x if context is None else context
        b, length = x.shape[0], x.shape[2]

        def split(h: torch.Tensor) -> torch.Tensor:  # (B, heads*hc, L) -> (B, heads, L, hc)
            return h.view(b, self.heads, self.head_channels, -1).transpose(2, 3)

        q, k, v = split(self.to_q(x)), split(self.to_k(source)), split(self.to_v(source))
        # The original scales q and k by hc**-0.25 each and takes a float32 softmax; SDPA's single
        # 1/sqrt(hc) scale equals that up to rounding (checked against the parity fixtures), and its
        # fused kernels accumulate the softmax in float32 under mixed precision as well.
        out = F.scaled_dot_product_attention(q, k, v, scale=self.head_channels ** -0.5)
        return self.proj_out(out.transpose(2, 3).reshape(b, self.heads * self.head_channels, length))


def _heads(channels: int, attention_heads: int, head_channels: int) -> int:
    return attention_heads if attention_heads > 0 else channels // head_channels


class SelfAttentionBlock(nn.Module):
    """Residual self-attention over the pixels (AdaGN-conditional and unconditional models)."""

    def __init__(self, channels: int, attention_heads: int, head_channels: int, groups: int):
        super().__init__()
        self.attention = MultiHeadAttention(channels, _heads(channels, attention_heads, head_channels),
                                            head_channels)
        self.norm = _group_norm(channels, groups)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        b, c, h, w = x.shape
        return x + self.attention(self.norm(x).view(b, c, h * w)).view(b, c, h, w)


class CrossAttentionBlock(nn.Module):
    """Transformer block (self-attention, cross-attention to context tokens, feed-forward) for `CA`.

    The context vector becomes `head_channels` tokens of width `context_channels`; one GroupNorm
    (`x_norm`) is shared by the three sub-layers, as in the original.
    """

    def __init__(self, channels: int, attention_heads: int, head_channels: int, context_channels: int,
                 groups: int):
        super().__init__()
        heads = _heads(channels, attention_heads, head_channels)
        inner = heads * head_channels
        self.context_channels, self.tokens = context_channels, head_channels
        self.x_proj_in = nn.Conv2d(channels, inner, 1)
        self.x_proj_out = _zero_(nn.Conv2d(inner, channels, 1))
        self.self_attention = MultiHeadAttention(inner, heads, head_channels)
        self.c_proj_in = nn.Linear(context_channels, context_channels * head_channels)
        self.cross_attention = MultiHeadAttention(inner, heads, head_channels, key_channels=context_channels)
        self.x_norm = _group_norm(inner, groups)
        self.c_norm = _group_norm(context_channels, groups)
        self.ff = nn.Sequential(nn.Linear(inner, 4 * inner), nn.GELU(), nn.Linear(4 * inner, inner))

    def forward(self, x_in: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        b, _, h, w = x_in.shape
        x = self.x_proj_in(x_in).flatten(2)
        c = self.c_norm(self.c_proj_in(context).view(b, self.context_channels, self.tokens))
        x = self.self_attention(self.x_norm(x)) + x
        x = self.cross_attention(self.x_norm(x), c) + x
        x = self.ff(self.x_norm(x).transpose(1, 2)).transpose(1, 2) + x
        return self.x_proj_out(x.reshape(b, -1, h, w)) + x_in


class AdaptiveGroupNorm(nn.Module):
    """GroupNorm whose output is modulated per sample: (1 + scale) * norm(h) + shift."""

    def __init__(self, channels: int, groups: int):
        super().__init__()
        self.norm = _group_norm(channels, groups)

    def forward(self, h: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
        return (1 + scale[:, :, None, None]) * self.norm(h) + shift[:, :, None, None]


class ResidualBlock(nn.Module):
    """Conv residual block with AdaGN time (and, for AdaGN models, context) modulation."""

    def __init__(self, in_channels: int, out_channels: int, time_channels: int, context_channels: int | None,
                 groups: int):
        super().__init__()
        self.norm1 = _group_norm(in_channels, groups)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.time_emb = nn.Sequential(nn.SiLU(), nn.Linear(time_channels, out_channels))
        self.context_emb = (nn.Sequential(nn.SiLU(), nn.Linear(context_channels, out_channels))
                            if context_channels is not None else None)
        self.scale_emb = nn.Linear(out_channels, out_channels)
        self.shift_emb = nn.Linear(out_channels, out_channels)
        self.norm2 = AdaptiveGroupNorm(out_channels, groups)
        self.conv2 = _zero_(nn.Conv2d(out_channels, out_channels, 3, padding=1))
        self.shortcut = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: torch.Tensor, t_emb: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        emb = self.time_emb(t_emb)
        if self.context_emb is not None:
            emb = emb + self.context_emb(context)
        h = self.norm2(h, self.scale_emb(emb), self.shift_emb(emb))
        return self.conv2(F.silu(h)) + self.shortcut(x)


class ResAttnBlock(nn.Module):
    """A DownBlock / UpBlock: a residual block, optionally followed by an attention block."""

    def __init__(self, res: ResidualBlock, attn: nn.Module | None):
        super().__init__()
        self.res, self.attn = res, attn

    def forward(self, x: torch.Tensor, t_emb: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
        x = self.res(x, t_emb, context)
        return x if self.attn is None else self.attn(x, context)


class MiddleBlock(nn.Module):
    def __init__(self, res1: ResidualBlock, attn: nn.Module, res2: ResidualBlock):
        super().__init__()
        self.res1, self.attn, self.res2 = res1, attn, res2

    def forward(self, x: torch.Tensor, t_emb: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
        return self.res2(self.attn(self.res1(x, t_emb, context), context), t_emb, context)


class Downsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor, t_emb: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.ConvTranspose2d(channels, channels, 4, stride=2, padding=1)

    def forward(self, x: torch.Tensor, t_emb: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
        return self.conv(x)


@dataclass(frozen=True)
class UNetConfig:
    """The released IDiff-Face `unet` config. `norm_groups` (the original: 32) does not change the
    weights' names or shapes; a narrow model needs fewer groups than channels, since a group of one
    channel (an instance norm) erases each channel's spatial mean, the latent's brightness and colour."""

    input_channels: int
    initial_channels: int
    channel_multipliers: Sequence[int]
    is_attention: Sequence[bool]
    attention_heads: int
    attention_head_channels: int
    n_blocks_per_resolution: int
    context_input_channels: int
    context_channels: int
    condition_type: str
    is_context_conditional: bool
    context_dropout_probability: float
    n_context_classes: int = 0
    learn_empty_context: bool = False
    norm_groups: int = 32

    def __post_init__(self) -> None:
        if self.condition_type not in CONDITION_TYPES:
            raise ValueError(f"condition_type must be one of {CONDITION_TYPES}, got {self.condition_type!r}")
        if len(self.channel_multipliers) != len(self.is_attention):
            raise ValueError(f"channel_multipliers {list(self.channel_multipliers)} and is_attention "
                             f"{list(self.is_attention)} must have the same length")
        if self.n_context_classes or self.learn_empty_context:
            raise ValueError("n_context_classes > 0 and learn_empty_context=True are not supported "
                             "(IDiff-Face uses 0 / False)")
        if not 0.0 <= self.context_dropout_probability < 1.0:
            raise ValueError(f"context_dropout_probability must be in [0, 1), got {self.context_dropout_probability}")


class UNet(nn.Module):
    """eps-prediction UNet; `forward(x, t, context=None, dropout_mask=None)` returns a tensor like x.

    `context` is the raw (B, context_input_channels) identity embedding; `None` means the empty
    context for every sample. `dropout_mask` (B bools) replaces the marked rows by the empty context.
    CPD (`context_dropout_probability`) is element-wise dropout on the projected context, active only
    in training mode.
    """

    def __init__(self, config: UNetConfig):
        super().__init__()
        self.config = c = config
        self.is_context_conditional = bool(c.is_context_conditional)
        self.context_channels = c.context_channels
        time_channels = 4 * c.initial_channels
        block_context = c.context_channels if c.is_context_conditional and c.condition_type == "AdaGN" else None
        use_cross_attention = c.is_context_conditional and c.condition_type == "CA"

        def attention(channels: int) -> nn.Module:
            if use_cross_attention:
                return CrossAttentionBlock(channels, c.attention_heads, c.attention_head_channels,
                                           c.context_channels, c.norm_groups)
            return SelfAttentionBlock(channels, c.attention_heads, c.attention_head_channels, c.norm_groups)

        def residual(c_in: int, c_out: int) -> ResidualBlock:
            return ResidualBlock(c_in, c_out, time_channels, block_context, c.norm_groups)

        def block(c_in: int, c_out: int, with_attention: bool) -> ResAttnBlock:
            return ResAttnBlock(residual(c_in, c_out), attention(c_out) if with_attention else None)

        widths = [c.initial_channels]
        for mult in c.channel_multipliers:
            widths.append(widths[-1] * mult)  # multipliers are cumulative
        levels = len(c.channel_multipliers)

        self.image_proj = nn.Conv2d(c.input_channels, c.initial_channels, 3, padding=1)
        self.time_emb = TimeEmbedding(c.initial_channels, time_channels)
        if c.is_context_conditional:
            self.context_emb = nn.Linear(c.context_input_channels, c.context_channels)
            self.context_dropout = nn.Dropout(c.context_dropout_probability)

        down: list[nn.Module] = []
        for i in range(levels):
            for j in range(c.n_blocks_per_resolution):
                down.append(block(widths[i] if j == 0 else widths[i + 1], widths[i + 1], c.is_attention[i]))
            if i < levels - 1:
                down.append(Downsample(widths[i + 1]))
        self.down = nn.ModuleList(down)

        bottom = widths[-1]
        self.middle = MiddleBlock(residual(bottom, bottom), attention(bottom), residual(bottom, bottom))

        up: list[nn.Module] = []
        for i in reversed(range(levels)):
            for _ in range(c.n_blocks_per_resolution):
                up.append(block(2 * widths[i + 1], widths[i + 1], c.is_attention[i]))
            up.append(block(widths[i + 1] + widths[i], widths[i], c.is_attention[i]))
            if i > 0:
                up.append(Upsample(widths[i]))
        self.up = nn.ModuleList(up)

        self.norm = _group_norm(c.initial_channels, c.norm_groups)
        self.final = _zero_(nn.Conv2d(c.initial_channels, c.input_channels, 3, padding=1))

    def embed_context(self, context: torch.Tensor | None, batch_size: int,
                      dropout_mask: torch.Tensor | None = None) -> torch.Tensor | None:
        """The (B, context_channels) context the blocks see: projected, masked, CPD-dropped."""
        if not self.is_context_conditional:
            return None
        if context is None:
            weight = self.context_emb.weight
            return torch.zeros(batch_size, self.context_channels, device=weight.device, dtype=weight.dtype)
        c = self.context_emb(context)
        if dropout_mask is not None:
            c = torch.where(dropout_mask.to(c.device).view(-1, 1), torch.zeros_like(c), c)
        return self.context_dropout(c)

    def forward(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor | None = None,
                dropout_mask: torch.Tensor | None = None) -> torch.Tensor:
        t_emb = self.time_emb(t)
        c = self.embed_context(context, x.shape[0], dropout_mask)
        h = self.image_proj(x)
        skips = [h]
        for module in self.down:
            h = module(h, t_emb, c)
            skips.append(h)
        h = self.middle(h, t_emb, c)
        for module in self.up:
            if isinstance(module, Upsample):
                h = module(h, t_emb, c)
            else:
                h = module(torch.cat((h, skips.pop()), dim=1), t_emb, c)
        return self.final(F.silu(self.norm(h)))
