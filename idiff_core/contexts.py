"""Identity contexts: the 512-d vectors each synthetic identity is generated from.

Three kinds (spec section 6): `synthetic_uniform` (Gaussian vectors, L2-normalised: uniform on the
sphere), `two_stage` (faces from the unconditional LDM, embedded by the same FR model) and `real`
(a subset of real embeddings, e.g. FFHQ's or LFW's); and `file`, a set IDiff-Face released (or any
vector file `data.released` reads). Each set is one non-pickle `.npz` with ids, the float32 matrix,
and its seed and source recorded.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .data.released import read_vectors
from .embeddings import EmbeddingSettings, embed_images
from .generation import GeneratorSpec, SamplerSettings
from .io import load_matrix, save_matrix
from .runtime import derive_seed
from .vectors import l2_normalize


@dataclass(frozen=True)
class ContextSettings:
    kind: str
    count: int
    seed: int
    dim: int


def context_ids(count: int) -> list[str]:
    """Synthetic identity names: zero-padded indices, so sorted order is generation order."""
    return [f"{i:05d}" for i in range(count)]


def uniform_contexts(count: int, dim: int, seed: int) -> np.ndarray:
    """`count` vectors drawn N(0, I) in `dim` dimensions and L2-normalised (uniform on the sphere)."""
    generator = torch.Generator().manual_seed(derive_seed(seed, "synthetic_uniform"))
    return l2_normalize(torch.randn(count, dim, generator=generator, dtype=torch.float64).numpy(), np.float32,
                        refuse_zero=True)


def real_contexts(embeddings_npz: str | os.PathLike, count: int, seed: int) -> tuple[list[str], np.ndarray]:
    """A seeded random subset of `count` real embeddings (all of them when `count` equals their number)."""
    names, matrix, _ = load_matrix(embeddings_npz)
    if count > len(names):
        raise ValueError(f"{count} real contexts requested but {embeddings_npz} holds only {len(names)} embeddings")
    rng = np.random.default_rng(derive_seed(seed, "real_contexts"))
    chosen = np.sort(rng.choice(len(names), size=count, replace=False))
    return [names[i] for i in chosen], l2_normalize(matrix[chosen], np.float32, refuse_zero=True)


@dataclass(frozen=True)
class TwoStageSource:
    """What two-stage contexts are made with: the unconditional generator, the identity embedder
    (applied as to the training faces) and the sampler."""

    generator: GeneratorSpec
    backbone: Path
    embedder: EmbeddingSettings
    sampler: SamplerSettings


def two_stage_contexts(source: TwoStageSource, count: int, seed: int, device: str) -> np.ndarray:
    """Faces sampled from the unconditional LDM, embedded (whole image, as training embeddings) and normalised."""
    pipeline = source.generator.load(device)
    if pipeline.is_conditional:
        raise ValueError(f"{source.generator.checkpoint}: two-stage contexts need the UNCONDITIONAL generator")
    images = pipeline(None, [derive_seed(seed, "two_stage", i) for i in range(count)], source.sampler)
    embedder = source.embedder
    model = embedder.backbone.load(source.backbone).to(device)
    embedded = embed_images(model, images, embedder.batch_size, device, flip_sum=embedder.flip_sum)
    return l2_normalize(embedded, np.float32, refuse_zero=True)


def released_contexts(vectors_file: str | os.PathLike, count: int, dim: int) -> tuple[list[str], np.ndarray]:
    """The first `count` vectors of a released file (`data.released`), in its order, L2-normalised."""
    names, matrix = read_vectors(vectors_file, dim, "the context set's dim")
    if count > len(names):
        raise ValueError(f"{count} contexts requested but {vectors_file} holds only {len(names)} vectors")
    return names[:count], l2_normalize(matrix[:count], np.float32, refuse_zero=True)


def make_contexts(settings: ContextSettings, out_npz: str | os.PathLike, *,
                  vectors: str | os.PathLike | None = None, two_stage: TwoStageSource | None = None,
                  device: str = "cpu") -> None:
    """Write one context set of `settings.kind`: `real` and `file` read `vectors` (the project's
    embeddings, a released vector file), `two_stage` samples and embeds with `two_stage`."""
    names = None
    if settings.kind == "synthetic_uniform":
        matrix, source = uniform_contexts(settings.count, settings.dim, settings.seed), "N(0, I), L2-normalised"
    elif settings.kind == "real" and vectors is not None:
        names, matrix = real_contexts(vectors, settings.count, settings.seed)
        source = f"real embeddings {vectors}"
    elif settings.kind == "file" and vectors is not None:
        names, matrix = released_contexts(vectors, settings.count, settings.dim)
        source = f"released vectors {vectors}"
    elif settings.kind == "two_stage" and two_stage is not None:
        matrix = two_stage_contexts(two_stage, settings.count, settings.seed, device)
        source = f"two-stage: {two_stage.generator.checkpoint} embedded by {two_stage.backbone}"
    else:
        needs = {"real": "vectors", "file": "vectors", "two_stage": "two_stage"}.get(settings.kind)
        raise ValueError(f"unknown context kind {settings.kind!r}" if needs is None
                         else f"{settings.kind} contexts need `{needs}`")
    write_contexts(out_npz, matrix, settings, source, names)


def write_contexts(out_npz: str | os.PathLike, matrix: np.ndarray, settings: ContextSettings,
                   source: str, source_names: list[str] | None = None) -> None:
    """One context file: synthetic ids, the matrix, and where the vectors came from."""
    if matrix.shape != (settings.count, settings.dim):
        raise ValueError(f"context matrix has shape {matrix.shape}, expected ({settings.count}, {settings.dim})")
    save_matrix(out_npz, context_ids(settings.count), matrix, kind=settings.kind, seed=settings.seed,
                source=source, source_names=source_names or [])
