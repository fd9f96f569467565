"""The training faces' VQ latents, encoded once (rule encode_latents) and read by every generator.

The encoder is frozen, and at paper shape (VQ-f4, 128 px faces) it costs ~80 GFLOP per image: the
faces are encoded once, as themselves and as their horizontal flips (so the trainer's random flip,
p = 0.5, picks a stored latent and stays exact), into one file that every `train_ldm` job loads.
The file names its images and records each file's size and the encoder's SHA-256, so a trainer
refuses latents made from other images instead of pairing them with the wrong identity contexts.
Sizes, not modification times: a results folder copied with a plain `cp -r` keeps its latents.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ..autoencoder import encode_images, load_encoder
from ..checkpoint import load_state, save_state
from ..embeddings import image_names
from ..io import file_digests, list_images, read_rgb
from ..models.vq import VQConfig
from ..progress import progress, step_size
from ..runtime import resolve_device, set_threads

CPU_STEP = 2  # images (+ their flips) per step on the CPU: ~6 s for the paper's VQ-f4 encoder on two cores


def training_images(image_dir: str | os.PathLike) -> tuple[list[str], list[Path]]:
    """Names (file stems, sorted) and paths of the flat folder of training faces."""
    root = Path(image_dir)
    paths = list_images(root, recursive=False)
    if not paths:
        raise FileNotFoundError(f"no training images in {root} (expected a flat folder of image files)")
    return image_names(root, paths), paths


def latents_key(encoder_sha256: str, names: Sequence[str], sizes: Sequence[int]) -> str:
    """Short SHA-256 of the encoder file's SHA-256 and of the images' names and sizes: what an LDM
    checkpoint records of its data, so no run resumes on other latents (and a copied folder does)."""
    payload = json.dumps({"encoder": encoder_sha256, "names": list(names), "sizes": list(sizes)})
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def encode_latents(image_dir: str | os.PathLike, encoder_path: str | os.PathLike, out_path: str | os.PathLike,
                   autoencoder: VQConfig, batch_size: int, *, threads: int, device: str) -> None:
    """Write (N, 2, C, h, w) float32 latents of every training face [unflipped, flipped] to `out_path`
    (atomically; `torch.load(weights_only=True)` reads it), with the image names, file sizes and the
    encoder they were made from. Encoder calls take `batch_size` images (fewer on the CPU, `step_size`)."""
    if batch_size < 1:
        raise ValueError(f"encode_batch_size must be > 0, got {batch_size}")
    set_threads(threads)
    names, paths = training_images(image_dir)
    torch_device = resolve_device(device)
    encoder = load_encoder(encoder_path, autoencoder)
    step = step_size(batch_size, torch_device, CPU_STEP)
    latents: torch.Tensor | None = None
    shapes: set[tuple[int, ...]] = set()
    with progress(total=len(paths), desc="encode latents", unit="img") as bar:
        for start in range(0, len(paths), step):
            images = [read_rgb(p) for p in paths[start:start + step]]
            shapes |= {image.shape for image in images}
            if len(shapes) != 1:
                raise ValueError(f"training images must all have one size; found {sorted(shapes)} in "
                                 f"{paths[0].parent}")
            batch = np.stack(images)
            pair = torch.stack([encode_images(encoder, batch, step, torch_device),
                                encode_images(encoder, np.ascontiguousarray(batch[:, :, ::-1]), step, torch_device)],
                               dim=1)
            if latents is None:
                latents = torch.empty((len(paths), *pair.shape[1:]), dtype=torch.float32)
            latents[start:start + len(batch)] = pair
            bar.update(len(batch))
    encoder_sha256 = file_digests(encoder_path).sha256
    sizes = _sizes(paths)
    save_state(out_path, {"names": names, "sizes": sizes, "latents": latents,
                          "key": latents_key(encoder_sha256, names, sizes), "encoder": str(encoder_path),
                          "encoder_sha256": encoder_sha256})
    print(f"[latents] encoded {len(paths)} images (+ flips) to {tuple(latents.shape)} in {out_path}", file=sys.stderr)


def _sizes(paths: Sequence[Path]) -> list[int]:
    return [os.path.getsize(p) for p in paths]


def load_latents(path: str | os.PathLike, names: Sequence[str], paths: Sequence[Path]) -> tuple[torch.Tensor, str]:
    """The latents of exactly these images (`names[i]` at row i) and the file's `latents_key`.

    Refuses a file encoded from other images (other names, or files rewritten since): its rows would
    be paired with the wrong identity contexts.
    """
    stored: dict[str, Any] = load_state(path)
    if stored["names"] != list(names) or stored["sizes"] != _sizes(paths):
        raise ValueError(_mismatch(path, stored, names, paths))
    print(f"[latents] loaded {tuple(stored['latents'].shape)} from {path}", file=sys.stderr)
    return stored["latents"], stored["key"]


def _mismatch(path: str | os.PathLike, stored: dict[str, Any], names: Sequence[str], paths: Sequence[Path]) -> str:
    """Why a latents file does not fit the training images, with examples."""
    encoded, wanted = dict(zip(stored["names"], stored["sizes"])), set(names)
    only_here = [n for n in names if n not in encoded]
    only_there = [n for n in stored["names"] if n not in wanted]
    changed = [n for n, size in zip(names, _sizes(paths)) if n in encoded and encoded[n] != size]
    parts = [f"{len(only_here)} images have no latent ({examples(only_here)})" if only_here else "",
             f"{len(only_there)} latents have no image ({examples(only_there)})" if only_there else "",
             f"{len(changed)} images differ in size from the encoded ones ({examples(changed)})" if changed else ""]
    return (f"latents {path} were encoded from other images than {Path(paths[0]).parent} "
            f"({len(stored['names'])} latents, {len(names)} images): "
            + ("; ".join(p for p in parts if p) or "the same images in another order")
            + ". Encode this image folder again (snakemake --forcerun encode_latents).")


def examples(names: Sequence[str], limit: int = 5) -> str:
    """The first few names of a list, for an error message."""
    shown = ", ".join(names[:limit])
    return shown + (f", ... (+{len(names) - limit} more)" if len(names) > limit else "")
