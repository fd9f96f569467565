"""Verification benchmark inputs: LFW's `pairs.txt` + image folders, and insightface `.bin` files.

A `.bin` is a pickle, and a pickle can run any code when loaded. `read_bin` therefore unpickles with
a whitelist that only lets through what these files legitimately contain (lists, tuples, bytes,
bools, and NumPy bool scalars in some versions); anything else is refused before it is built.
"""

from __future__ import annotations

import codecs
import os
import pickle
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np

from idiff_core.io import IMAGE_EXTENSIONS


class LfwPair(NamedTuple):
    """One line of LFW's pairs.txt; image numbers are 1-based as in the file."""

    name1: str
    idx1: int
    name2: str
    idx2: int
    issame: bool


class UnsafePickleError(pickle.UnpicklingError):
    """A `.bin` file asked the unpickler for something outside the benchmark-file whitelist."""


def read_lfw_pairs(pairs_txt: str | os.PathLike) -> tuple[list[LfwPair], int]:
    """Parse LFW's pairs.txt: (pairs in file order, number of folds).

    Header `folds<TAB>n` (each fold: n matched then n mismatched lines) or a single count n (one fold).
    Matched lines are `Name i j`, mismatched `Name1 i Name2 j`, separated by tabs or spaces.
    """
    lines = [line.split() for line in Path(pairs_txt).read_text().splitlines() if line.strip()]
    if not lines or not 1 <= len(lines[0]) <= 2 or not all(f.isdigit() for f in lines[0]):
        raise ValueError(f"{pairs_txt}: first line must be 'folds<TAB>n' or a single count, got {lines[:1]}")
    n_folds, per_set = (int(lines[0][0]), int(lines[0][1])) if len(lines[0]) == 2 else (1, int(lines[0][0]))
    body = lines[1:]
    if len(body) != 2 * n_folds * per_set:
        raise ValueError(f"{pairs_txt}: header announces {n_folds} folds x 2 x {per_set} pairs "
                         f"= {2 * n_folds * per_set} lines, found {len(body)}")
    pairs = []
    for number, fields in enumerate(body, start=2):
        try:
            if len(fields) == 3:
                pairs.append(LfwPair(fields[0], int(fields[1]), fields[0], int(fields[2]), True))
            elif len(fields) == 4:
                pairs.append(LfwPair(fields[0], int(fields[1]), fields[2], int(fields[3]), False))
            else:
                raise ValueError(f"expected 3 or 4 fields, got {len(fields)}")
        except ValueError as err:
            raise ValueError(f"{pairs_txt} line {number}: {' '.join(fields)!r}: {err}") from err
    return pairs, n_folds


def lfw_image_path(root: str | os.PathLike, name: str, idx: int) -> Path:
    """`<root>/<Name>/<Name>_<idx:04d>.<ext>` for any image extension; a clear error if missing."""
    stem = f"{name}_{int(idx):04d}"
    folder = Path(root) / name
    if folder.is_dir():
        found = sorted(p for p in folder.iterdir() if p.stem == stem and p.suffix.lower() in IMAGE_EXTENSIONS)
        if found:
            return found[0]
    raise FileNotFoundError(f"LFW image {folder / stem}.<{'|'.join(e[1:] for e in IMAGE_EXTENSIONS)}> not found "
                            f"(pair image {name} #{idx}; is the LFW root {root} right?)")


def _latin1_bytes(text: str, encoding: str = "latin1") -> bytes:
    """What Python 3 pickles of protocol < 3 call (`_codecs.encode`) to rebuild a bytes object."""
    if not isinstance(text, str) or encoding != "latin1":
        raise UnsafePickleError(f"_codecs.encode called with {type(text).__name__}/{encoding!r}; "
                                "only latin1 text -> bytes is allowed")
    return codecs.encode(text, "latin1")


def _numpy_scalar(dtype: np.dtype, data: bytes = b"") -> np.generic:
    """NumPy's scalar reconstructor, limited to booleans (some `.bin` files store numpy bool_)."""
    if not isinstance(dtype, np.dtype) or dtype != np.dtype(bool) or not isinstance(data, bytes):
        raise UnsafePickleError(f"numpy scalar of dtype {dtype!r} refused; only bool is allowed")
    return np.frombuffer(data, dtype=bool, count=1)[0]


def _bool_dtype(spec: object, align: bool = False, copy: bool = False) -> np.dtype:
    """numpy.dtype, limited to the boolean dtype the scalar reconstructor needs (a private copy,
    since the pickle then sets its state)."""
    if spec not in ("b1", b"b1"):
        raise UnsafePickleError(f"numpy dtype {spec!r} refused; only 'b1' is allowed")
    return np.dtype("b1", False, True)


_ALLOWED_GLOBALS = {
    ("_codecs", "encode"): _latin1_bytes,
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,
    ("numpy", "dtype"): _bool_dtype,
}


class _BenchmarkUnpickler(pickle.Unpickler):
    """Builds only containers, bytes, numbers, bools: every global but the whitelist is refused."""

    def find_class(self, module: str, name: str):
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise UnsafePickleError(f"refusing to load global {module}.{name}: a benchmark .bin holds only "
                                    "encoded images and booleans") from None


def _load_bin_pickle(path: Path) -> tuple[list[bytes], np.ndarray]:
    """The (encoded images, issame) lists of a `.bin`, validated."""
    with open(path, "rb") as fh:
        try:
            content = _BenchmarkUnpickler(fh, encoding="bytes").load()
        except UnsafePickleError as err:
            raise UnsafePickleError(f"{path}: {err}") from None
        except Exception as err:  # any malformed stream: truncated, wrong opcodes, bad BUILD state
            raise ValueError(f"{path}: not a readable benchmark .bin pickle ({err})") from err
    if not (isinstance(content, (tuple, list)) and len(content) == 2):
        raise ValueError(f"{path}: expected a pickled (images, issame) pair, got {type(content).__name__}")
    bins, issame = content
    if not all(isinstance(b, (bytes, bytearray)) for b in bins):
        raise ValueError(f"{path}: image list holds non-bytes entries")
    if not all(isinstance(s, (bool, np.bool_)) for s in issame):
        raise ValueError(f"{path}: issame list holds non-boolean entries")
    if len(bins) != 2 * len(issame):
        raise ValueError(f"{path}: {len(bins)} images for {len(issame)} pairs (expected 2 per pair)")
    return list(bins), np.asarray(issame, dtype=bool)


def read_bin(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read an insightface `.bin`: (images N x H x W x 3 uint8 RGB, issame bool array of N / 2).

    Pair i is images (2i, 2i + 1). Every image must decode and all must share one size (112 x 112
    in the published files). Refuses a file holding anything but images and booleans
    (`UnsafePickleError`) without running it.
    """
    path = Path(path)
    bins, issame = _load_bin_pickle(path)
    images = None
    for k, encoded in enumerate(bins):
        bgr = cv2.imdecode(np.frombuffer(encoded, dtype=np.uint8), cv2.IMREAD_COLOR)
        if bgr is None:
            raise ValueError(f"{path}: image {k} cannot be decoded")
        if images is None:
            images = np.empty((len(bins), *bgr.shape), dtype=np.uint8)
        if bgr.shape != images.shape[1:]:
            raise ValueError(f"{path}: image {k} is {bgr.shape}, the first image is {images.shape[1:]}")
        images[k] = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    if images is None:
        images = np.zeros((0, 112, 112, 3), dtype=np.uint8)
    return images, issame
