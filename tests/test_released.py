"""Vector files in the forms IDiff-Face released are read in their order, and never run their code;
released training embeddings stand in for extracted ones."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch

from idiff_core.data.released import ReleasedFileError, read_vectors
from idiff_core.embeddings import import_embeddings
from idiff_core.io import load_matrix, save_matrix, write_png


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


def test_released_training_embeddings_take_the_place_of_extracted_ones(tmp_path):
    images = tmp_path / "ffhq"
    for stem in ("00000", "00001", "00002"):
        write_png(images / f"{stem}.png", np.zeros((8, 8, 3), np.uint8))
    released = {f"{i:05d}": np.random.default_rng(i).normal(size=8).astype(np.float32) for i in (3, 2, 1, 0)}
    torch.save(released, tmp_path / "embeddings_elasticface_128.npy")
    released_file = tmp_path / "embeddings_elasticface_128.npy"
    import_embeddings(released_file, images, tmp_path / "ffhq.npz", tmp_path / "ffhq.csv", 8)
    names, matrix, meta = load_matrix(tmp_path / "ffhq.npz")
    assert names == ["00000", "00001", "00002"] and meta["left_out"] == 1  # the folder's order; 00003 has no image
    np.testing.assert_allclose(matrix[1], released["00001"] / np.linalg.norm(released["00001"]), rtol=1e-6)
    with pytest.raises(ValueError, match="8-d vectors; the embedder's num_features is 16"):
        import_embeddings(released_file, images, tmp_path / "x.npz", tmp_path / "x.csv", 16)
    torch.save({**released, "00002": np.zeros(8, np.float32)}, tmp_path / "zeros.npy")
    with pytest.raises(ValueError, match="row 2 is all zeros"):
        import_embeddings(tmp_path / "zeros.npy", images, tmp_path / "x.npz", tmp_path / "x.csv", 8)
    torch.save({f"{i:05d}.png": v for i, v in enumerate(released.values())}, tmp_path / "other_names.npy")
    with pytest.raises(ValueError, match=r"no vector for 3 of the 3 images .* names look like \['00000.png'"):
        import_embeddings(tmp_path / "other_names.npy", images, tmp_path / "x.npz", tmp_path / "x.csv", 8)
