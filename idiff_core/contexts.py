"""Identity contexts: the 512-d vectors each synthetic identity is generated from.

Three kinds (spec section 6): `synthetic_uniform` (Gaussian vectors, L2-normalised: uniform on the
sphere), `two_stage` (faces from the unconditional LDM, embedded by the same FR model) and `real`
(a subset of real embeddings, e.g. FFHQ's or LFW's). Each set is one non-pickle `.npz` with ids,
the float32 matrix, and its seed and source recorded.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import torch

from .autoencoder import load_decoder
from .embeddings import EmbeddingSettings, embed_images
from .evaluation import separability
from .generation import SamplerSettings, generate, latent_shape_of, load_generator
from .io import load_matrix, save_matrix
from .models.vq import VQConfig
from .runtime import derive_seed


@dataclass(frozen=True)
class ContextSettings:
    kind: str
    count: int
    seed: int
    dim: int


def context_ids(count: int) -> list[str]:
    """Synthetic identity names: zero-padded indices, so sorted order is generation order."""
    return [f"{i:05d}" for i in range(count)]


def l2_normalize(matrix: np.ndarray) -> np.ndarray:
    """Unit rows as float32 (the evaluation's normalisation), refusing a zero row: it names no identity."""
    if not np.all(np.any(matrix != 0, axis=1)):
        raise ValueError("a context vector has zero norm and cannot be normalised")
    return separability.l2_normalize(matrix, np.float32)


def uniform_contexts(count: int, dim: int, seed: int) -> np.ndarray:
    """`count` vectors drawn N(0, I) in `dim` dimensions and L2-normalised (uniform on the sphere)."""
    generator = torch.Generator().manual_seed(derive_seed(seed, "synthetic_uniform"))
    return l2_normalize(torch.randn(count, dim, generator=generator, dtype=torch.float64).numpy())


def real_contexts(embeddings_npz: str | os.PathLike, count: int, seed: int) -> tuple[list[str], np.ndarray]:
    """A seeded random subset of `count` real embeddings (all of them when `count` equals their number)."""
    names, matrix, _ = load_matrix(embeddings_npz)
    if count > len(names):
        raise ValueError(f"{count} real contexts requested but {embeddings_npz} holds only {len(names)} embeddings")
    rng = np.random.default_rng(derive_seed(seed, "real_contexts"))
    chosen = np.sort(rng.choice(len(names), size=count, replace=False))
    return [names[i] for i in chosen], l2_normalize(matrix[chosen])


def two_stage_contexts(generator_ckpt: str | os.PathLike, unet_config: Mapping[str, Any],
                       decoder_path: str | os.PathLike, vq_config: VQConfig, backbone_path: str | os.PathLike,
                       embedder: EmbeddingSettings, sampler: SamplerSettings, count: int, seed: int,
                       image_size: int, device: str) -> np.ndarray:
    """Faces sampled from the unconditional LDM, embedded (whole image, as training embeddings) and normalised."""
    unet, schedule = load_generator(generator_ckpt, unet_config, device)
    if unet.is_context_conditional:
        raise ValueError(f"{generator_ckpt}: two-stage contexts need the UNCONDITIONAL generator")
    decoder = load_decoder(decoder_path, vq_config)
    seeds = [derive_seed(seed, "two_stage", i) for i in range(count)]
    images = generate(unet, schedule, decoder, None, seeds, latent_shape_of(vq_config, image_size), sampler, device)
    model = embedder.backbone.load(backbone_path).to(device)
    return l2_normalize(embed_images(model, images, embedder.batch_size, device, flip_sum=embedder.flip_sum))


def write_contexts(out_npz: str | os.PathLike, matrix: np.ndarray, settings: ContextSettings,
                   source: str, source_names: list[str] | None = None) -> None:
    """One context file: synthetic ids, the matrix, and where the vectors came from."""
    if matrix.shape != (settings.count, settings.dim):
        raise ValueError(f"context matrix has shape {matrix.shape}, expected ({settings.count}, {settings.dim})")
    save_matrix(out_npz, context_ids(settings.count), matrix, kind=settings.kind, seed=settings.seed,
                source=source, source_names=source_names or [])
