"""The sampling stage: many images per identity context, sharded, resumable, reproducible.

Identities are grouped into fixed units (as many whole identities as fit in one sampler batch) and
unit u belongs to shard u mod K. Every image's noise comes from `derive_seed(seed, identity, j)`
and the batches are the same whatever K is, so 1 shard and K shards give byte-identical images.
Finished identities are kept in a state folder (outside Snakemake's outputs, which it deletes on a
rerun), each renamed into place only once complete, so a killed shard redoes only what is missing.
"""

from __future__ import annotations

import csv
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from .generation import GeneratorSpec, SamplerSettings
from .io import atomic_path, link_or_copy, load_matrix, write_png
from .progress import progress
from .resume import StateFolder, file_key, settings_key
from .runtime import derive_seed


@dataclass(frozen=True)
class SamplingSettings:
    sampler: SamplerSettings
    images_per_identity: int
    identities: int
    seed: int
    shards: int


def identity_units(n_identities: int, images_per_identity: int, batch_size: int) -> list[range]:
    """Fixed groups of consecutive identities, each filling (at most) one sampler batch."""
    per_unit = max(1, batch_size // images_per_identity)
    return [range(i, min(i + per_unit, n_identities)) for i in range(0, n_identities, per_unit)]


def shard_units(n_identities: int, settings: SamplingSettings, shard: int) -> list[range]:
    """The identity units (index ranges) that shard `shard` of `settings.shards` generates."""
    if not 0 <= shard < settings.shards:
        raise ValueError(f"shard {shard} is outside 0..{settings.shards - 1}")
    units = identity_units(n_identities, settings.images_per_identity, settings.sampler.batch_size)
    return units[shard::settings.shards]


def image_seed(seed: int, identity: str, image: int) -> int:
    return derive_seed(seed, "sample", identity, image)


def _write_identity(folder: Path, images) -> None:
    """Write one identity's images into a temporary folder, then rename it into place (atomic)."""
    tmp = folder.with_name(f".tmp-{folder.name}")
    shutil.rmtree(tmp, ignore_errors=True)
    for j, image in enumerate(images):
        write_png(tmp / f"{j}.png", image)
    os.replace(tmp, folder)


def sample_shard(generator: GeneratorSpec, contexts_npz: str | os.PathLike, out_dir: str | os.PathLike,
                 manifest_csv: str | os.PathLike, state_dir: str | os.PathLike, settings: SamplingSettings, *,
                 shard: int, device: str) -> None:
    """Generate shard `shard`: `<out_dir>/<identity>/<j>.png` for its identities, and a manifest CSV."""
    ids, contexts, _ = load_matrix(contexts_npz)
    if len(ids) < settings.identities:
        raise ValueError(f"{contexts_npz} holds {len(ids)} contexts but {settings.identities} identities are "
                         f"to be sampled; raise the count of that context set or lower the dataset size")
    units = shard_units(settings.identities, settings, shard)
    mine = [i for unit in units for i in unit]
    key = {"settings": settings_key(settings), **generator.state_key(), "contexts": file_key(contexts_npz)}
    work = StateFolder(state_dir, key, f"sampling shard {shard}").open()

    pipeline = generator.load(device)
    per_image = settings.images_per_identity
    with progress(total=len(mine) * per_image, desc=f"sampling shard {shard}", unit="img") as bar:
        for unit in units:
            if all((work / ids[i]).is_dir() for i in unit):
                bar.update(len(unit) * per_image)
                continue
            seeds = [image_seed(settings.seed, ids[i], j) for i in unit for j in range(per_image)]
            rows = torch.from_numpy(contexts[list(unit)]).repeat_interleave(per_image, dim=0)
            images = pipeline(rows if pipeline.is_conditional else None, seeds, settings.sampler)
            for k, i in enumerate(unit):
                if not (work / ids[i]).is_dir():
                    _write_identity(work / ids[i], images[k * per_image:(k + 1) * per_image])
            bar.update(len(unit) * per_image)

    out = Path(out_dir)
    with atomic_path(manifest_csv) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["identity", "image", "seed", "path"])
        for i in mine:
            for j in range(per_image):
                link_or_copy(work / ids[i] / f"{j}.png", out / ids[i] / f"{j}.png", atomic=True)
                writer.writerow([ids[i], j, image_seed(settings.seed, ids[i], j), f"{ids[i]}/{j}.png"])
    out.mkdir(parents=True, exist_ok=True)
