"""Embedding extraction: preprocessing, flip-sum, one `.npz` per folder, corrupt files skipped and listed."""

from __future__ import annotations

import csv
import hashlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from idiff_core.embeddings import CPU_STEP, EmbeddingSettings, embed_images, extract_embeddings, image_names
from idiff_core.io import load_matrix, write_png
from idiff_core.models.iresnet import iresnet
from idiff_core.settings import settings_from_dict

TINY = {"arch": [1, 1, 1, 1], "num_features": 16, "base_width": 8, "input_size": 112, "batch_size": 2, "flip_sum": False}


@pytest.fixture
def tiny_model() -> torch.nn.Module:
    torch.manual_seed(0)
    model = iresnet([1, 1, 1, 1], num_features=16, base_width=8)
    with torch.no_grad():  # non-trivial BN statistics so eval mode differs from identity
        for module in model.modules():
            if isinstance(module, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
                module.running_mean.normal_(0, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    return model.eval()


def test_embed_images_preprocesses_and_normalises(tiny_model):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(3, 112, 112, 3), dtype=np.uint8)
    embeddings = embed_images(tiny_model, pixels, batch_size=2, device="cpu", flip_sum=False)
    x = (torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255 - 0.5) / 0.5
    with torch.no_grad():
        expected = F.normalize(tiny_model(x), dim=1).numpy()
        flipped = F.normalize(tiny_model(x) + tiny_model(torch.flip(x, dims=[3])), dim=1).numpy()
    assert embeddings.dtype == np.float32 and embeddings.shape == (3, 16)
    np.testing.assert_allclose(embeddings, expected, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(embed_images(tiny_model, x, 3, "cpu", flip_sum=True), flipped, atol=1e-5)
    np.testing.assert_allclose(embed_images(tiny_model, torch.from_numpy(pixels), 3, "cpu", False), expected, atol=1e-5)


def test_embed_images_steps_through_a_big_batch_on_the_cpu(tiny_model):
    """A configured batch of 32 runs on the CPU in CPU_STEP-image passes, the bar advancing after each,
    with the same embeddings as passes of CPU_STEP images."""
    pixels = np.random.default_rng(2).integers(0, 256, size=(20, 112, 112, 3), dtype=np.uint8)

    updates: list[int] = []

    class Bar:
        def update(self, n: int) -> None:
            updates.append(n)
    embeddings = embed_images(tiny_model, pixels, 32, "cpu", False, bar=Bar())
    assert updates == [CPU_STEP, CPU_STEP, 20 - 2 * CPU_STEP]
    np.testing.assert_array_equal(embeddings, embed_images(tiny_model, pixels, CPU_STEP, "cpu", False))


def test_embed_images_resizes_whole_image_to_112(tiny_model):
    pixels = np.random.default_rng(1).integers(0, 256, size=(2, 128, 128, 3), dtype=np.uint8)
    x = (torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255 - 0.5) / 0.5
    resized = F.interpolate(x, size=(112, 112), mode="bilinear", align_corners=False, antialias=True)
    with torch.no_grad():
        expected = F.normalize(tiny_model(resized), dim=1).numpy()
    np.testing.assert_allclose(embed_images(tiny_model, pixels, 2, "cpu", False), expected, atol=1e-5)
    with pytest.raises(ValueError, match="uint8 NHWC"):
        embed_images(tiny_model, pixels.astype(np.int32), 2, "cpu", False)


def test_embed_images_reads_at_the_models_input_size():
    """A stand-in backbone for 56x56 faces gets 128x128 images resized to 56 (its fc fits no other side)."""
    torch.manual_seed(0)
    model = iresnet([1, 1, 1, 1], num_features=16, base_width=8, input_size=56).eval()
    pixels = np.random.default_rng(2).integers(0, 256, size=(2, 128, 128, 3), dtype=np.uint8)
    x = (torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255 - 0.5) / 0.5
    with torch.no_grad():
        expected = F.normalize(model(F.interpolate(x, size=(56, 56), mode="bilinear", align_corners=False,
                                                   antialias=True)), dim=1).numpy()
    np.testing.assert_allclose(embed_images(model, pixels, 2, "cpu", False), expected, atol=1e-5)


def test_extract_embeddings_skips_and_lists_corrupt_files(tmp_path, tiny_model):
    backbone = tmp_path / "backbone.pt"
    torch.save(tiny_model.state_dict(), backbone)
    images = tmp_path / "images"
    rng = np.random.default_rng(2)
    pixels = {name: rng.integers(0, 256, size=(128, 128, 3), dtype=np.uint8) for name in ("00000", "00001", "00003")}
    for name, image in pixels.items():
        write_png(images / f"{name}.png", image)
    (images / "00002.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    settings = settings_from_dict(EmbeddingSettings, TINY)
    out, manifest = tmp_path / "emb.npz", tmp_path / "manifest.csv"
    extract_embeddings(images, backbone, out, manifest, settings, threads=1, device="cpu")

    names, matrix, meta = load_matrix(out)
    assert names == ["00000", "00001", "00003"] and matrix.shape == (3, 16)
    expected = embed_images(tiny_model, np.stack(list(pixels.values())), 3, "cpu", flip_sum=False)
    np.testing.assert_allclose(matrix, expected, atol=1e-5)
    assert meta["backbone_sha256"] == hashlib.sha256(backbone.read_bytes()).hexdigest()
    assert meta["arch"] == [1, 1, 1, 1] and meta["backbone_path"] == str(backbone)
    with open(manifest, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["name"], r["status"]) for r in rows] == [("00000", "ok"), ("00001", "ok"), ("00002", "unreadable"),
                                                        ("00003", "ok")]
    assert "00002.png" in rows[2]["error"] and rows[0]["error"] == ""


def test_names_are_stems_when_flat_and_relative_paths_when_nested(tmp_path):
    flat = [tmp_path / "a.png", tmp_path / "b.jpg"]
    assert image_names(tmp_path, flat) == ["a", "b"]
    nested = [tmp_path / "top.png", tmp_path / "id1" / "0.png", tmp_path / "id2" / "0.png"]
    assert image_names(tmp_path, nested) == ["top", "id1/0", "id2/0"]
    with pytest.raises(ValueError, match="same name 'a'"):
        image_names(tmp_path, [tmp_path / "a.png", tmp_path / "a.jpg"])


def test_extract_embeddings_reports_missing_weights(tmp_path):
    write_png(tmp_path / "images" / "0.png", np.zeros((8, 8, 3), np.uint8))
    missing = tmp_path / "weights" / "Elastic_R100_295672backbone.pth"
    settings = settings_from_dict(EmbeddingSettings, {**TINY, "arch": "iresnet100", "num_features": 512,
                                                      "base_width": 64})
    with pytest.raises(FileNotFoundError, match="ElasticFace") as info:
        extract_embeddings(tmp_path / "images", missing, tmp_path / "e.npz", tmp_path / "m.csv", settings,
                           threads=1, device="cpu")
    assert str(missing) in str(info.value)
