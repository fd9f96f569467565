"""Identity embeddings: the paper's preprocessing, batched inference and one `.npz` per image folder.

Preprocessing (as the paper's context extraction): the whole image (no alignment) resized to the
backbone's input side, 112x112 for the published ones (bilinear, antialiased), `((x / 255) - 0.5) / 0.5`, backbone, L2 normalisation. With `flip_sum`, the
embedding is `normalise(f(x) + f(hflip(x)))` as in the insightface evaluation protocol.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from .checkpoint import save_state
from .data.released import read_vectors
from .io import UnreadableImage, atomic_path, file_digests, list_images, read_rgb, save_matrix
from .models.iresnet import BackboneSpec
from .progress import progress, step_size
from .runtime import resolve_device, set_threads
from .vectors import l2_normalize

INPUT_SIZE = 112  # the published backbones' input side
CPU_STEP = 8  # images per forward pass on the CPU: ~3 s for an iresnet100 on two cores


def resize_pixels(images: torch.Tensor, size: int = INPUT_SIZE) -> torch.Tensor:
    """Resize float NCHW images (any value range) to size x size; a no-op when already that size."""
    if images.shape[-2:] == (size, size):
        return images
    return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


def to_model_input(images: np.ndarray | torch.Tensor, size: int = INPUT_SIZE) -> torch.Tensor:
    """uint8 pixels (NHWC) -> float NCHW at `size`, scaled to [-1, 1]. Float tensors are taken as that already."""
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(np.ascontiguousarray(images))
    if images.is_floating_point():
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"float input must be normalised NCHW with 3 channels, got shape {tuple(images.shape)}")
        return resize_pixels(images, size)
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"pixel input must be uint8 NHWC with 3 channels, got {images.dtype} {tuple(images.shape)}")
    pixels = resize_pixels(images.permute(0, 3, 1, 2).float(), size)
    return (pixels / 255.0 - 0.5) / 0.5


@torch.no_grad()
def embed_images(model: nn.Module, images: np.ndarray | torch.Tensor, batch_size: int, device: torch.device | str,
                 flip_sum: bool, *, bar: tqdm | None = None) -> np.ndarray:
    """L2-normalised float32 embeddings (N, d) of uint8 NHWC pixels or normalised float NCHW tensors.

    Images are resized to the model's `input_size` (112 for models without one). Runs the model in
    eval mode (restoring its previous mode afterwards). Forward passes take `batch_size` images, at
    most `CPU_STEP` on the CPU (`step_size`); `bar`, if given, advances after each.
    """
    device = torch.device(device)
    size = getattr(getattr(model, "module", model), "input_size", INPUT_SIZE)
    step = step_size(batch_size, device, CPU_STEP)
    was_training = model.training
    model.eval()
    chunks = []
    try:
        for start in range(0, len(images), step):
            batch = to_model_input(images[start:start + step], size).to(device)
            features = model(batch).float()
            if flip_sum:
                features = features + model(torch.flip(batch, dims=[3])).float()
            chunks.append(F.normalize(features, dim=1).cpu())
            if bar is not None:
                bar.update(len(batch))
    finally:
        model.train(was_training)
    if not chunks:
        return np.zeros((0, 0), dtype=np.float32)
    return torch.cat(chunks).numpy().astype(np.float32)


@dataclass
class EmbeddingSettings:
    """Which backbone embeds the images and how (see the report for each key's meaning)."""

    arch: str | list[int]
    num_features: int
    base_width: int
    input_size: int
    batch_size: int
    flip_sum: bool

    @property
    def backbone(self) -> BackboneSpec:
        return BackboneSpec(self.arch, self.num_features, self.base_width, self.input_size)


def image_names(root: Path, paths: Sequence[Path]) -> list[str]:
    """File stems for a flat folder; relative POSIX paths without suffix when any image is in a subfolder."""
    relative = [p.relative_to(root) for p in paths]
    nested = any(len(r.parts) > 1 for r in relative)
    names = [r.with_suffix("").as_posix() if nested else r.stem for r in relative]
    seen: dict[str, Path] = {}
    for name, path in zip(names, paths):
        if name in seen:
            raise ValueError(f"two images map to the same name '{name}': {seen[name]} and {path}; "
                             f"remove one or give them different stems")
        seen[name] = path
    return names


def extract_embeddings(image_dir: str | os.PathLike, backbone_path: str | os.PathLike, out_npz: str | os.PathLike,
                       manifest_csv: str | os.PathLike, settings: EmbeddingSettings, *, threads: int,
                       device: str) -> None:
    """Embed every image under `image_dir` into ONE `.npz` (names, float32 matrix, meta) plus a manifest CSV.

    Unreadable images are listed in the manifest with their error and left out of the matrix.
    """
    set_threads(threads)
    root = Path(image_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {root} does not exist")
    paths = list_images(root)
    if not paths:
        raise ValueError(f"no images found under {root}")
    names = image_names(root, paths)
    torch_device = resolve_device(device)
    model = settings.backbone.load(backbone_path).to(torch_device)
    kept_names: list[str] = []
    rows: list[np.ndarray] = []
    manifest: list[tuple[str, str, str, str]] = []
    with progress(total=len(paths), desc="embedding", unit="img") as bar:
        for start in range(0, len(paths), settings.batch_size):
            batch_names, pixels = [], []
            for name, path in zip(names[start:start + settings.batch_size], paths[start:start + settings.batch_size]):
                try:
                    image = read_rgb(path)
                except UnreadableImage as err:
                    manifest.append((name, str(path), "unreadable", str(err)))
                    continue
                pixels.append(resize_pixels(torch.from_numpy(image).permute(2, 0, 1)[None].float(),
                                              settings.input_size)[0])
                batch_names.append(name)
                manifest.append((name, str(path), "ok", ""))
            if pixels:
                batch = (torch.stack(pixels) / 255.0 - 0.5) / 0.5
                rows.append(embed_images(model, batch, settings.batch_size, torch_device, settings.flip_sum, bar=bar))
                kept_names += batch_names
            bar.update(min(settings.batch_size, len(paths) - start) - len(pixels))  # the unreadable ones
    write_manifest(manifest_csv, manifest)
    if not kept_names:
        raise ValueError(f"none of the {len(paths)} images under {root} could be read; see {manifest_csv}")
    # paths as given (the workflow's are relative to its directory): one config, the same bytes in any run folder
    save_matrix(out_npz, kept_names, np.concatenate(rows), backbone_path=str(backbone_path),
                backbone_sha256=file_digests(backbone_path).sha256, arch=settings.arch, num_features=settings.num_features,
                base_width=settings.base_width, flip_sum=settings.flip_sum, input_size=settings.input_size,
                image_dir=str(image_dir))


def import_embeddings(vectors_file: str | os.PathLike, image_dir: str | os.PathLike, out_npz: str | os.PathLike,
                      manifest_csv: str | os.PathLike, dim: int) -> None:
    """Released embeddings of the training faces (IDiff-Face's `embeddings_elasticface_128.npy`) in the
    place and form `extract_embeddings` writes: one L2-normalised row per image of `image_dir`, by name.

    Every image needs its vector (a missing one means the file belongs to other images); vectors of
    images not in the folder are left out and counted.
    """
    names, matrix = read_vectors(vectors_file, dim, "the embedder's num_features")
    root = Path(image_dir)
    paths = list_images(root)
    images = image_names(root, paths)
    row_of = {name: i for i, name in enumerate(names)}
    missing = [name for name in images if name not in row_of]
    if missing:
        raise ValueError(f"{vectors_file} has no vector for {len(missing)} of the {len(images)} images in {root} "
                         f"(e.g. {missing[:3]}; its names look like {names[:3]}): is it the file of these images?")
    unit = l2_normalize(matrix[[row_of[name] for name in images]], np.float32, refuse_zero=True)
    write_manifest(manifest_csv, [(name, str(path), "ok", "") for name, path in zip(images, paths)])
    save_matrix(out_npz, images, unit,
                source=str(vectors_file), source_sha256=file_digests(vectors_file).sha256, image_dir=str(image_dir),
                left_out=len(names) - len(images))
    print(f"[embeddings] {len(images)} released vectors of {vectors_file} for {root}; "
          f"{len(names) - len(images)} of other images left out")


def write_manifest(path: str | os.PathLike, rows: list[tuple[str, str, str, str]]) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["name", "path", "status", "error"])
            writer.writerows(rows)


def import_backbone(weights: str | os.PathLike, out_path: str | os.PathLike, backbone: BackboneSpec) -> None:
    """Verify user-provided weights (e.g. ElasticFace's) against the configured iresnet; keep a clean copy."""
    model = backbone.load(weights)
    save_state(out_path, model.state_dict())
