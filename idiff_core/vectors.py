"""Unit-length identity vectors: the one normalisation shared by contexts, imported embeddings and the
evaluation (NumPy only, so every layer may use it)."""

from __future__ import annotations

import numpy as np


def l2_normalize(embeddings: np.ndarray, dtype: type = np.float64, block_rows: int = 1 << 16, *,
                 refuse_zero: bool = False) -> np.ndarray:
    """Rows divided by their L2 norm (computed in float64), returned as `dtype`.

    All-zero rows stay zero, as sklearn's `normalize`, unless `refuse_zero`: a vector that names an
    identity (a context, a training embedding) cannot be all zeros. Works in row blocks, so a float32
    result for 500k x 512 embeddings never needs a float64 copy of all of them.
    """
    embeddings = np.asarray(embeddings)
    if embeddings.ndim != 2:
        raise ValueError(f"expected a 2-D (rows x dims) embedding array, got shape {embeddings.shape}")
    out = np.empty(embeddings.shape, dtype=dtype)
    for start in range(0, embeddings.shape[0], block_rows):
        block = np.asarray(embeddings[start:start + block_rows], dtype=np.float64)
        norms = np.sqrt(np.einsum("ij,ij->i", block, block))
        if refuse_zero and not norms.all():
            raise ValueError(f"row {start + int(np.argmin(norms))} is all zeros and names no identity: it cannot be "
                             f"normalised")
        norms[norms == 0] = 1.0
        out[start:start + block_rows] = block / norms[:, None]
    return out
