"""Where and how computation runs: device choice, threads and seeds."""

from __future__ import annotations

import hashlib
import random

import numpy as np
import torch


def resolve_device(spec: str = "auto") -> torch.device:
    """`auto` picks CUDA when present, else CPU; anything else is passed to torch.device."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(spec)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device '{spec}' requested but CUDA is not available; set device: cpu or auto")
    return device


def set_threads(threads: int) -> None:
    """Make torch use exactly the cores Snakemake gave this job."""
    torch.set_num_threads(max(1, int(threads)))


def derive_seed(*parts: object) -> int:
    """A stable 63-bit seed from any parts (global seed, stage name, identity id, ...).

    Uses SHA-256 of the parts' text, so it is the same on every machine and Python version and does
    not depend on how work is split into shards.
    """
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch; return a CPU torch.Generator seeded the same way."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)
