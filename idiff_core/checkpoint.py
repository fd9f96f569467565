"""Resumable training state: atomic saves, safe loads, and the RNG state that makes resume exact."""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from .io import atomic_path


def save_state(path: str | os.PathLike, state: dict[str, Any]) -> None:
    """torch.save `state` so that a kill mid-write leaves the previous file intact. Saved through a file
    object, the archive's inner folder is "archive" rather than the random temporary file's name, so
    the same state gives the same bytes (same config, same files)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        torch.save(state, fh)


def load_state(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a file written by `save_state` (or any plain tensor dict) without running pickled code."""
    return torch.load(Path(path), map_location=map_location, weights_only=True)


# Key prefixes a training wrapper puts on every key: (Distributed)DataParallel's, Lightning Lite's
WRAPPER_PREFIXES = ("module.", "_forward_module.")


def strip_wrapper_prefix(state: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    """`state` without the wrapper prefix every key carries, and that prefix (None: there was none)."""
    for prefix in WRAPPER_PREFIXES:
        if state and all(key.startswith(prefix) for key in state):
            return {key[len(prefix):]: value for key, value in state.items()}, prefix
    return state, None


def state_dict_mismatches(expected: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor],
                          shown: int = 5) -> list[str]:
    """Why `state` does not load into a model whose state dict is `expected` (empty: it fits): one entry
    per kind of misfit (missing, unexpected, wrong shape), naming its first `shown` keys and the count
    of the rest, so that a few unexpected keys stay visible beside hundreds of missing ones."""
    def first(keys: list[str], describe) -> str:
        rest = f" (+{len(keys) - shown} more)" if len(keys) > shown else ""
        return ", ".join(describe(key) for key in keys[:shown]) + rest

    missing = [key for key in expected if key not in state]
    unexpected = [key for key in state if key not in expected]
    wrong = [key for key in expected if key in state and tuple(state[key].shape) != tuple(expected[key].shape)]
    problems = []
    if missing:
        problems.append("missing key " + first(missing, lambda k: f"{k} {tuple(expected[k].shape)}"))
    if unexpected:
        problems.append("unexpected key " + first(unexpected, lambda k: f"{k} {tuple(state[k].shape)}"))
    if wrong:
        problems.append("shape of " + first(wrong, lambda k: f"{k}: checkpoint {tuple(state[k].shape)} vs model "
                                                             f"{tuple(expected[k].shape)}"))
    return problems


def capture_rng() -> dict[str, Any]:
    """The state of every RNG a training loop draws from, in a form `weights_only` loading accepts."""
    np_state = np.random.get_state()
    state = {
        "python": list(random.getstate()[1]),
        "python_pos": random.getstate()[2],
        "numpy_keys": torch.from_numpy(np_state[1].astype(np.int64)),
        "numpy_pos": int(np_state[2]),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Undo `capture_rng`: the next random draws equal those of the run that saved it."""
    random.setstate((3, tuple(state["python"]), state["python_pos"]))
    np.random.set_state(("MT19937", state["numpy_keys"].numpy().astype(np.uint32), state["numpy_pos"], 0, 0.0))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
