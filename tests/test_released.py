"""Vector files in the forms IDiff-Face released are read in their order, and never run their code."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch

from idiff_core.data.released import ReleasedFileError, read_vectors
from idiff_core.io import save_matrix


def vectors(count: int = 5, dim: int = 8) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {f"{i:05d}_synthetic": rng.normal(size=dim).astype(np.float32) for i in reversed(range(count))}


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_a_torch_saved_dict_keeps_its_names_and_order(tmp_path, zip_format):
    released = vectors()
    torch.save(released, tmp_path / "contexts.npy", _use_new_zipfile_serialization=zip_format)
    names, matrix = read_vectors(tmp_path / "contexts.npy")
    assert names == list(released) and names[0] == "00004_synthetic"  # insertion order, not sorted
    assert matrix.dtype == np.float32 and np.array_equal(matrix, np.stack(list(released.values())))
    torch.save({k: torch.from_numpy(v) for k, v in released.items()}, tmp_path / "tensors.pt")
    assert np.array_equal(read_vectors(tmp_path / "tensors.pt")[1], matrix)


def test_plain_matrices_and_project_files_are_read_as_they_are(tmp_path):
    matrix = np.stack(list(vectors().values()))
    np.save(tmp_path / "m.npy", matrix.astype(np.float64))
    names, read = read_vectors(tmp_path / "m.npy")
    assert names == ["00000", "00001", "00002", "00003", "00004"] and np.array_equal(read, matrix)
    save_matrix(tmp_path / "e.npz", ["a", "b", "c", "d", "e"], matrix)
    assert read_vectors(tmp_path / "e.npz")[0] == ["a", "b", "c", "d", "e"]


class _RunsACommand:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("writer", ["torch", "pickle"])
def test_a_pickle_that_would_run_a_command_is_refused_unrun(tmp_path, writer):
    marker = tmp_path / "payload_ran"
    payload = {"00000": vectors()["00000_synthetic"], "00001": _RunsACommand(marker)}
    path = tmp_path / "contexts.npy"
    if writer == "torch":
        torch.save(payload, path)
    else:
        with open(path, "wb") as fh:
            pickle.dump(payload, fh)
    with pytest.raises(ReleasedFileError, match="not loaded"):
        read_vectors(path)
    assert not marker.exists()
    if writer == "torch":  # the payload is real: the original's plain loading runs it
        torch.load(path, weights_only=False)
    else:
        with open(path, "rb") as fh:
            pickle.load(fh)
    assert marker.exists()


@pytest.mark.parametrize("content, message", [
    ([1.0, 2.0], "holds a list, not a mapping"),
    ({"a": np.ones(4, np.float32), "b": np.ones(5, np.float32)}, "different lengths"),
    ({"a": np.ones((2, 2), np.float32)}, "'a' is not a 1-D vector"),
    ({"a": np.array([1.0, np.nan], np.float32)}, "NaN or infinity, e.g. row 0"),
    ({"a": np.array([1, 2], np.int64)}, "not loaded"),  # integer dtypes are not on the allow-list
])
def test_anything_but_finite_float_vectors_is_refused_by_name(tmp_path, content, message):
    torch.save(content, tmp_path / "bad.pt")
    with pytest.raises(ReleasedFileError, match=message):
        read_vectors(tmp_path / "bad.pt")


def test_object_arrays_integer_matrices_and_other_files_are_refused(tmp_path):
    np.save(tmp_path / "ints.npy", np.ones((3, 4), np.int64))
    with pytest.raises(ReleasedFileError, match="expected float vectors"):
        read_vectors(tmp_path / "ints.npy")
    np.save(tmp_path / "objects.npy", np.array([vectors()], dtype=object), allow_pickle=True)
    with pytest.raises(ReleasedFileError, match="NumPy file of Python objects"):
        read_vectors(tmp_path / "objects.npy")
    (tmp_path / "notes.txt").write_text("not vectors\n")
    with pytest.raises(ReleasedFileError, match="not loaded"):
        read_vectors(tmp_path / "notes.txt")
