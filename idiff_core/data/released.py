"""Identity vectors in the forms IDiff-Face released them, read without running any of the file's code.

The original's context files (`samples/contexts/random_synthetic_uniform_5000.npy`, ...) and its
training embeddings (`data/embeddings_elasticface_128.npy`) are `torch.save`d dicts, identity name ->
512-d float32 NumPy vector, in insertion order, despite the `.npy` suffix; the original reads them
with a plain `torch.load`, i.e. unpickling. Here they go through torch's weights-only unpickler with
an allow-list of the NumPy pieces a float vector is rebuilt from, so a file that asks for anything
else (a `__reduce__` that runs a command, say) is refused before any of it runs. Plain NumPy
matrices (`.npy` without pickles) and the project's own `.npz` files are read as they are.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np
import torch

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


def read_vectors(path: str | os.PathLike) -> tuple[list[str], np.ndarray]:
    """(names, float32 rows) of a released vector file, in the file's order.

    A name -> vector mapping (`torch.save`d, zip or legacy format) keeps its names; a plain `.npy`
    matrix gets its row numbers (`00000`, ...); a project `.npz` (`io.save_matrix`) its own names.
    """
    path = Path(path)
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
