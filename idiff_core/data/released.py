"""IDiff-Face's released files as they were published: identity vectors and generators.

The original's context files (`samples/contexts/random_synthetic_uniform_5000.npy`, ...) and its
training embeddings (`data/embeddings_elasticface_128.npy`) are `torch.save`d dicts, identity name ->
512-d float32 NumPy vector, in insertion order, despite the `.npy` suffix; the original reads them
with a plain `torch.load`, i.e. unpickling. Here they go through torch's weights-only unpickler with
an allow-list of the NumPy pieces a float vector is rebuilt from, so a file that asks for anything
else (a `__reduce__` that runs a command, say) is refused before any of it runs. Plain NumPy
matrices (`.npy` without pickles) and the project's own `.npz` files are read as they are.

A released generator is a folder: `.hydra/config.yaml`, the composed Hydra training config (the UNet's
arguments under `diffusion.eps_model`, often as `${model}` and `${constants.*}` references; `diffusion.T`,
`diffusion.schedule_type`; `constants.image_size`), and `checkpoints/` with `ema_averaged_model.ckpt`,
`model.ckpt` and EMA copies kept at steps (`ema_averaged_model_<step>.ckpt`).
"""

from __future__ import annotations

import dataclasses
import os
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from ..io import load_matrix

NPY_MAGIC = b"\x93NUMPY"

# What pickled float vectors are rebuilt from, under the names NumPy 1.x and 2.x pickle them by.
_reconstruct = (np._core if hasattr(np, "_core") else np.core).multiarray._reconstruct
_SAFE_NUMPY = [(_reconstruct, "numpy.core.multiarray._reconstruct"),
               (_reconstruct, "numpy._core.multiarray._reconstruct"),
               np.ndarray, np.dtype, type(np.dtype(np.float32)), type(np.dtype(np.float64)),
               type(np.dtype(np.float16))]


class ReleasedFileError(ValueError):
    """A file is not one of the released vector forms, or holds something other than finite vectors."""


def read_vectors(path: str | os.PathLike, dim: int | None = None,
                 dim_key: str = "dim") -> tuple[list[str], np.ndarray]:
    """(names, float32 rows) of a released vector file, in the file's order; with `dim`, vectors of
    another length are refused, naming the config value they must match (`dim_key`).

    A name -> vector mapping (`torch.save`d, zip or legacy format) keeps its names; a plain `.npy`
    matrix gets its row numbers (`00000`, ...); a project `.npz` (`io.save_matrix`) its own names.
    """
    names, matrix = _read_rows(Path(path))
    if dim is not None and matrix.shape[1] != dim:
        raise ReleasedFileError(f"{path} holds {matrix.shape[1]}-d vectors; {dim_key} is {dim}")
    return names, matrix


def _read_rows(path: Path) -> tuple[list[str], np.ndarray]:
    with open(path, "rb") as fh:
        head = fh.read(6)
    if head == NPY_MAGIC:
        try:
            matrix = np.load(path, allow_pickle=False)
        except ValueError as err:
            raise ReleasedFileError(f"{path} is a NumPy file of Python objects (a pickle), which is not read; "
                                    f"save the vectors as a float matrix or as a torch.save'd dict") from err
        return [f"{i:05d}" for i in range(len(matrix))], _as_rows(matrix, path)
    if zipfile.is_zipfile(path) and _is_npz(path):
        names, matrix, _ = load_matrix(path)
        return names, _as_rows(matrix, path)
    return _read_mapping(path)


def _is_npz(path: Path) -> bool:
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith(".npy") for name in archive.namelist())


def _read_mapping(path: Path) -> tuple[list[str], np.ndarray]:
    if not hasattr(torch.serialization, "safe_globals"):  # with NumPy's pickled names allowed: torch >= 2.6
        raise ReleasedFileError(f"{path}: reading a torch.save'd vector file without running its code needs "
                                f"torch >= 2.6 (this is {torch.__version__}); or save the vectors as an .npy matrix")
    try:
        with torch.serialization.safe_globals(_SAFE_NUMPY):
            loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001  (a refused or malformed file fails anywhere in the unpickler)
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        reason = next((line for line in lines if any(k in line for k in ("GLOBAL", "Unsupported", "Can only build"))),
                      lines[-1] if lines else type(err).__name__)
        raise ReleasedFileError(f"{path} is not loaded: it is neither a NumPy float matrix, a project .npz, nor a "
                                f"torch.save'd dict of names and float vectors alone, and nothing in it was run "
                                f"({reason[:300]})") from err
    if not isinstance(loaded, dict) or not loaded:
        raise ReleasedFileError(f"{path} holds a {type(loaded).__name__}, not a mapping of identity names to vectors")
    names = [str(name) for name in loaded]
    vectors = [value.numpy() if isinstance(value, torch.Tensor) else value for value in loaded.values()]
    bad = next((n for n, v in zip(names, vectors) if not isinstance(v, np.ndarray) or v.ndim != 1), None)
    if bad is not None:
        raise ReleasedFileError(f"{path}: the value of '{bad}' is not a 1-D vector")
    if len({v.shape for v in vectors}) > 1:
        raise ReleasedFileError(f"{path}: the vectors have different lengths {sorted({v.size for v in vectors})}")
    return names, _as_rows(np.stack(vectors), path)


def _as_rows(matrix: np.ndarray, path: Path) -> np.ndarray:
    """The float32 (N, d) matrix, refusing other shapes, non-float data and non-finite values."""
    if matrix.ndim != 2 or not len(matrix):
        raise ReleasedFileError(f"{path}: expected rows of vectors, got an array of shape {matrix.shape}")
    if not np.issubdtype(matrix.dtype, np.floating):
        raise ReleasedFileError(f"{path}: expected float vectors, got {matrix.dtype}")
    if not np.isfinite(matrix).all():
        rows = np.flatnonzero(~np.isfinite(matrix).all(axis=1))
        raise ReleasedFileError(f"{path}: {rows.size} vector(s) hold NaN or infinity, e.g. row {rows[0]}")
    return matrix.astype(np.float32)


# ------------------------------------------------------------------------------------------ generators

HYDRA_CONFIG = Path(".hydra") / "config.yaml"
WEIGHT_FILES = {"ema": "ema_averaged_model.ckpt", "model": "model.ckpt"}
_REFERENCE = re.compile(r"\$\{([^}]*)\}")
ORIGINAL_NORM_GROUPS = 32  # the released UNet's GroupNorm; its config has no key for it


@dataclass(frozen=True)
class ReleasedGenerator:
    """What a released model folder's `.hydra/config.yaml` (the composed training config) says."""

    unet: dict[str, Any]  # `diffusion.eps_model`'s arguments, under the released names
    timesteps: int  # diffusion.T
    schedule: str  # diffusion.schedule_type
    image_size: int  # constants.image_size: the side of the images the autoencoder encodes

    def mismatches(self, unet: Any, timesteps: int, schedule: str, image_size: int) -> list[str]:
        """How the configured generator differs from this release, key by key ("key: released, configured")."""
        configured = dataclasses.asdict(unet)
        released = {**self.unet, "norm_groups": self.unet.get("norm_groups", ORIGINAL_NORM_GROUPS)}
        problems = [f"{key}: not a UNet argument here (released value {value!r})"
                    for key, value in released.items() if key not in configured]
        for key in configured:
            mine, theirs = configured[key], released.get(key)
            if key in released and _comparable(mine) != _comparable(theirs):
                note = " (the original's GroupNorm)" if key == "norm_groups" and "norm_groups" not in self.unet else ""
                problems.append(f"{key}: {theirs!r} released{note}, {mine!r} configured")
        for key, theirs, mine in (("T", self.timesteps, timesteps), ("schedule_type", self.schedule, schedule),
                                  ("image_size", self.image_size, image_size)):
            if theirs != mine:
                problems.append(f"{key}: {theirs!r} released, {mine!r} configured")
        return problems


def read_released_generator(folder: str | os.PathLike) -> ReleasedGenerator:
    """The generator a released model folder describes, its `${...}` references to other keys resolved
    (a resolver such as `${now:...}` in a key that is read is an error naming the key)."""
    path = Path(folder) / HYDRA_CONFIG
    if not path.is_file():
        raise ReleasedFileError(f"{folder} is not a released model folder: it has no {HYDRA_CONFIG} (a released "
                                f"model is <model>/.hydra/config.yaml + <model>/checkpoints/*.ckpt)")
    config = yaml.safe_load(path.read_text())

    def read(dotted: str) -> Any:
        return _resolve(_lookup(config, dotted, path), config, path, dotted)

    eps_model = read("diffusion.eps_model")
    if not isinstance(eps_model, dict):
        raise ReleasedFileError(f"{path}: diffusion.eps_model is {eps_model!r}, not the UNet's arguments")
    return ReleasedGenerator(unet={k: v for k, v in eps_model.items() if k != "_target_"},
                             timesteps=int(read("diffusion.T")), schedule=str(read("diffusion.schedule_type")),
                             image_size=int(read("constants.image_size")))


def released_weights_file(folder: str | os.PathLike, weights: str = "ema", step: int | None = None) -> Path:
    """`checkpoints/ema_averaged_model.ckpt` (`ema`), `model.ckpt` (`model`, the raw weights) or the
    EMA weights kept at `step` (`ema_averaged_model_<step>.ckpt`) of a released model folder."""
    if weights not in WEIGHT_FILES:
        raise ValueError(f"released weights are one of {sorted(WEIGHT_FILES)}, got {weights!r}")
    if step is not None and weights != "ema":
        raise ValueError("only the EMA weights are kept at earlier steps (ema_averaged_model_<step>.ckpt)")
    checkpoints = Path(folder) / "checkpoints"
    path = checkpoints / (WEIGHT_FILES[weights] if step is None else f"ema_averaged_model_{step}.ckpt")
    if not path.is_file():
        present = sorted(p.name for p in checkpoints.glob("*.ckpt")) if checkpoints.is_dir() else []
        raise ReleasedFileError(f"{path} does not exist; {checkpoints} holds {present or 'no checkpoints'}")
    return path


def _lookup(config: Any, dotted: str, path: Path) -> Any:
    node = config
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            raise ReleasedFileError(f"{path} has no key '{dotted}'")
        node = node[part]
    return node


def _resolve(value: Any, config: dict, path: Path, where: str, seen: tuple[str, ...] = ()) -> Any:
    """`value` with every `${a.b}` reference replaced by the node it names (recursively)."""
    if isinstance(value, dict):
        return {k: _resolve(v, config, path, f"{where}.{k}", seen) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve(v, config, path, f"{where}[{i}]", seen) for i, v in enumerate(value)]
    if isinstance(value, str) and "${" in value:
        match = _REFERENCE.fullmatch(value.strip())
        reference = match.group(1).strip() if match else ""
        if not re.fullmatch(r"[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*", reference):
            raise ReleasedFileError(f"{path}: '{where}' is {value!r}, which is not a reference to another key "
                                    f"of the file and cannot be resolved here")
        if reference in seen:
            raise ReleasedFileError(f"{path}: '{where}' refers to itself through {' -> '.join(seen + (reference,))}")
        return _resolve(_lookup(config, reference, path), config, path, reference, seen + (reference,))
    return value


def _comparable(value: Any) -> Any:
    return list(value) if isinstance(value, (list, tuple)) else value
