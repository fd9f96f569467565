"""The VQ autoencoder of LDM (the `ffhq256` VQ-f4 first stage), key-compatible with its checkpoints.

Three views of the same weights: `VQEncoder` (image -> pre-quantisation latent), `VQDecoder`
(latent -> quantise -> image) and `VQModel` (both, with the quantiser losses, for training). Their
state dicts use the published key names and order, so the LDM checkpoint's `first_stage_model.*`
entries and the two split files load strictly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn
from torch.nn import functional as F


@dataclass
class VQConfig:
    """LDM's `ddconfig` plus the codebook size (`n_embed`) and code width (`embed_dim`)."""

    ch: int
    ch_mult: list[int]
    num_res_blocks: int
    attn_resolutions: list[int]
    z_channels: int
    double_z: bool
    resolution: int
    in_channels: int
    out_ch: int
    dropout: float
    n_embed: int
    embed_dim: int
    norm_groups: int = 32
    """GroupNorm groups (LDM: 32). A group of one channel is an instance norm, which erases each
    channel's spatial mean: at ch 32 the decoder then cannot carry an image's colour or brightness."""

    def __post_init__(self) -> None:
        if self.double_z:
            raise ValueError("double_z must be false for the VQ autoencoder (double_z belongs to the KL autoencoder)")
        widths = [self.ch * m for m in self.ch_mult]
        if not self.ch_mult or self.norm_groups < 1 or any(w % self.norm_groups for w in widths):
            raise ValueError(f"ch * ch_mult must give channel counts divisible by norm_groups ({self.norm_groups}); "
                             f"got ch={self.ch}, ch_mult={self.ch_mult} -> {widths}")

    @property
    def downsampling(self) -> int:
        """Image side / latent side (4 for the paper's VQ-f4)."""
        return 2 ** (len(self.ch_mult) - 1)


def _norm(channels: int, groups: int) -> nn.GroupNorm:
    return nn.GroupNorm(groups, channels, eps=1e-6, affine=True)


def _swish(x: torch.Tensor) -> torch.Tensor:
    return x * torch.sigmoid(x)


class ResnetBlock(nn.Module):
    """Two norm-swish-conv stages with a 1x1 shortcut when the width changes; no time input."""

    def __init__(self, in_channels: int, out_channels: int, dropout: float, groups: int):
        super().__init__()
        self.norm1 = _norm(in_channels, groups)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = _norm(out_channels, groups)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        if in_channels != out_channels:
            self.nin_shortcut = nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(_swish(self.norm1(x)))
        h = self.conv2(self.dropout(_swish(self.norm2(h))))
        shortcut = self.nin_shortcut(x) if hasattr(self, "nin_shortcut") else x
        return shortcut + h


class AttnBlock(nn.Module):
    """Single-head spatial self-attention with 1x1 projections and a residual connection."""

    def __init__(self, channels: int, groups: int):
        super().__init__()
        self.norm = _norm(channels, groups)
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        hn = self.norm(x)
        q = self.q(hn).reshape(b, c, h * w).transpose(1, 2)        # (b, hw, c)
        k = self.k(hn).reshape(b, c, h * w)                         # (b, c, hw)
        v = self.v(hn).reshape(b, c, h * w)                         # (b, c, hw)
        weights = torch.softmax(torch.bmm(q, k) * (c ** -0.5), dim=2)  # (b, query, key)
        out = torch.bmm(v, weights.transpose(1, 2)).reshape(b, c, h, w)
        return x + self.proj_out(out)


class Downsample(nn.Module):
    """Halve the resolution: pad right/bottom by one, then a stride-2 3x3 conv without padding."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    """Double the resolution: nearest-neighbour x2, then a 3x3 conv."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class _Middle(nn.Module):
    """block -> attention -> block at the lowest resolution (attention always present)."""

    def __init__(self, channels: int, dropout: float, groups: int):
        super().__init__()
        self.block_1 = ResnetBlock(channels, channels, dropout, groups)
        self.attn_1 = AttnBlock(channels, groups)
        self.block_2 = ResnetBlock(channels, channels, dropout, groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block_2(self.attn_1(self.block_1(x)))


class _Level(nn.Module):
    """One resolution level: res blocks (each followed by attention when enabled) and a resampler."""

    def __init__(self, in_channels: int, out_channels: int, n_blocks: int, with_attention: bool,
                 dropout: float, groups: int, resample: nn.Module | None, resample_name: str):
        super().__init__()
        widths = [in_channels] + [out_channels] * n_blocks
        self.block = nn.ModuleList(ResnetBlock(a, b, dropout, groups) for a, b in zip(widths[:-1], widths[1:]))
        self.attn = nn.ModuleList(AttnBlock(out_channels, groups) for _ in range(n_blocks if with_attention else 0))
        self.resample_name = resample_name
        if resample is not None:
            self.add_module(resample_name, resample)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, block in enumerate(self.block):
            x = block(x)
            if len(self.attn):
                x = self.attn[i](x)
        resample = getattr(self, self.resample_name, None)
        return resample(x) if resample is not None else x


class Encoder(nn.Module):
    """Image -> `z_channels` latent at 1/2^(levels-1) resolution (before `quant_conv`)."""

    def __init__(self, cfg: VQConfig):
        super().__init__()
        self.conv_in = nn.Conv2d(cfg.in_channels, cfg.ch, 3, padding=1)
        in_mult = [1] + list(cfg.ch_mult)
        resolution = cfg.resolution
        levels = []
        for i, mult in enumerate(cfg.ch_mult):
            last = i == len(cfg.ch_mult) - 1
            # with no res blocks a level keeps its input width
            width = cfg.ch * (mult if cfg.num_res_blocks else in_mult[i])
            levels.append(_Level(cfg.ch * in_mult[i], width, cfg.num_res_blocks, resolution in cfg.attn_resolutions,
                                 cfg.dropout, cfg.norm_groups, None if last else Downsample(width), "downsample"))
            if not last:
                resolution //= 2
        self.down = nn.ModuleList(levels)
        top = width
        self.mid = _Middle(top, cfg.dropout, cfg.norm_groups)
        self.norm_out = _norm(top, cfg.norm_groups)
        self.conv_out = nn.Conv2d(top, cfg.z_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for level in self.down:
            h = level(h)
        return self.conv_out(_swish(self.norm_out(self.mid(h))))


class Decoder(nn.Module):
    """`z_channels` latent -> image; `up.0` is the highest resolution level and runs last."""

    def __init__(self, cfg: VQConfig):
        super().__init__()
        top = cfg.ch * cfg.ch_mult[-1]
        self.conv_in = nn.Conv2d(cfg.z_channels, top, 3, padding=1)
        self.mid = _Middle(top, cfg.dropout, cfg.norm_groups)
        resolution = cfg.resolution // cfg.downsampling
        levels: list[_Level] = []
        width_in = top
        for i in reversed(range(len(cfg.ch_mult))):
            width = cfg.ch * cfg.ch_mult[i]
            levels.insert(0, _Level(width_in, width, cfg.num_res_blocks + 1, resolution in cfg.attn_resolutions,
                                    cfg.dropout, cfg.norm_groups, Upsample(width) if i > 0 else None, "upsample"))
            width_in = width
            if i > 0:
                resolution *= 2
        self.up = nn.ModuleList(levels)
        self.norm_out = _norm(cfg.ch * cfg.ch_mult[0], cfg.norm_groups)
        self.conv_out = nn.Conv2d(cfg.ch * cfg.ch_mult[0], cfg.out_ch, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.mid(self.conv_in(z))
        for level in reversed(self.up):
            h = level(h)
        return self.conv_out(_swish(self.norm_out(h)))


class Quantized(NamedTuple):
    """Quantiser output: straight-through latent (value = codes, gradient -> input), codes, indices."""

    straight_through: torch.Tensor
    codes: torch.Tensor
    indices: torch.Tensor


class VectorQuantizer(nn.Module):
    """Nearest-codebook-row quantisation of every spatial position (first index on ties)."""

    def __init__(self, n_embed: int, embed_dim: int):
        super().__init__()
        self.embedding = nn.Embedding(n_embed, embed_dim)
        nn.init.uniform_(self.embedding.weight, -1.0 / n_embed, 1.0 / n_embed)

    def forward(self, z: torch.Tensor) -> Quantized:
        b, c, h, w = z.shape
        flat = z.permute(0, 2, 3, 1).reshape(-1, c)
        codebook = self.embedding.weight
        distances = (flat.pow(2).sum(1, keepdim=True) + codebook.pow(2).sum(1)[None, :]
                     - 2.0 * flat @ codebook.t())
        indices = distances.argmin(dim=1)
        codes = self.embedding(indices).reshape(b, h, w, c).permute(0, 3, 1, 2)
        return Quantized(z + (codes - z).detach(), codes, indices.reshape(b, h, w))


class VQEncoder(nn.Module):
    """The split encoder file's model: image in [-1, 1] -> PRE-quantisation latent (`encoder` + `quant_conv`)."""

    def __init__(self, cfg: VQConfig):
        super().__init__()
        self.encoder = Encoder(cfg)
        self.quant_conv = nn.Conv2d(cfg.z_channels, cfg.embed_dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.quant_conv(self.encoder(x))


class VQDecoder(nn.Module):
    """The split decoder file's model: latent -> quantise (unless told not to) -> image in ~[-1, 1]."""

    def __init__(self, cfg: VQConfig):
        super().__init__()
        self.decoder = Decoder(cfg)
        self.quantize = VectorQuantizer(cfg.n_embed, cfg.embed_dim)
        self.post_quant_conv = nn.Conv2d(cfg.embed_dim, cfg.z_channels, 1)

    def forward(self, z: torch.Tensor, force_not_quantize: bool = False) -> torch.Tensor:
        if not force_not_quantize:
            z = self.quantize(z).straight_through
        return self.decoder(self.post_quant_conv(z))


class VQOutput(NamedTuple):
    """What a training step needs: the reconstruction, the two quantiser losses, the code indices."""

    reconstruction: torch.Tensor
    codebook_loss: torch.Tensor
    commitment_loss: torch.Tensor
    latent: torch.Tensor
    indices: torch.Tensor


class VQModel(nn.Module):
    """The whole first stage as it sits in the LDM checkpoint (`first_stage_model.*` without prefix)."""

    def __init__(self, cfg: VQConfig):
        super().__init__()
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)
        self.quantize = VectorQuantizer(cfg.n_embed, cfg.embed_dim)
        self.quant_conv = nn.Conv2d(cfg.z_channels, cfg.embed_dim, 1)
        self.post_quant_conv = nn.Conv2d(cfg.embed_dim, cfg.z_channels, 1)

    def forward(self, x: torch.Tensor) -> VQOutput:
        """Encode, quantise, decode; codebook loss pulls codes to latents, commitment the reverse."""
        latent = self.quant_conv(self.encoder(x))
        q = self.quantize(latent)
        codebook_loss = F.mse_loss(q.codes, latent.detach())
        commitment_loss = F.mse_loss(latent, q.codes.detach())
        reconstruction = self.decoder(self.post_quant_conv(q.straight_through))
        return VQOutput(reconstruction, codebook_loss, commitment_loss, latent, q.indices)
