"""iresnet backbones and margin heads against the reference fixtures; checkpoint loading and its errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from idiff_core.models.heads import MarginHead
from idiff_core.models.iresnet import ARCH_LAYERS, iresnet, load_backbone
from refdata import discover, reference_dir


def _arch_for_manifest(manifest: Path) -> str | list[int] | None:
    """`manifest_iresnet50.tsv` -> "iresnet50"; a fixture manifest -> the layers its io file records."""
    name = manifest.stem.removeprefix("manifest_")
    if name in ARCH_LAYERS:
        return name
    io_file = manifest.with_name(f"{name}_io.pt")
    return list(torch.load(io_file, weights_only=True)["config"]["layers"]) if io_file.is_file() else None


@pytest.mark.parametrize("io_file", discover("iresnet", "iresnet_*_io.pt"))
def test_iresnet_matches_reference_outputs(io_file: Path):
    io = torch.load(io_file, weights_only=True)
    weights = torch.load(io_file.with_name(io_file.name.replace("_io.pt", "_weights.pt")), weights_only=True)
    config = io["config"]
    model = iresnet(config["layers"], num_features=config["num_features"], dropout=config["dropout"],
                    input_size=config["input_size"][0])
    assert list(model.state_dict()) == list(io["state_dict_keys"])
    model.load_state_dict(weights)
    model.eval()
    pixels = io["pixels_uint8_values"].float()
    assert torch.allclose(((pixels / 255) - 0.5) / 0.5, io["x"])
    with torch.no_grad():
        out = model(io["x"])
    assert (out - io["expected_embedding"]).abs().max() <= 1e-4
    assert (F.normalize(out, dim=1) - io["expected_embedding_l2_normalized"]).abs().max() <= 1e-4


@pytest.mark.parametrize("manifest", discover("iresnet", "manifest_iresnet*.tsv"))
def test_state_dict_layout_matches_manifest(manifest: Path):
    arch = _arch_for_manifest(manifest)
    if arch is None:
        pytest.skip(f"no architecture known for {manifest.name}")
    with torch.device("meta"):
        model = iresnet(arch)
    expected = [tuple(line.split("\t")) for line in manifest.read_text().splitlines() if line]
    actual = [(key, str(tuple(value.shape)), str(value.dtype).removeprefix("torch."))
              for key, value in model.state_dict().items()]
    assert actual == expected


def test_builder_accepts_names_and_layer_lists():
    for name, layers in ARCH_LAYERS.items():
        with torch.device("meta"):
            model = iresnet(name)
        assert [len(getattr(model, f"layer{i}")) for i in range(1, 5)] == list(layers)
    tiny = iresnet([1, 2, 1, 1], num_features=32, base_width=8)
    assert tiny.fc.in_features == 64 * 7 * 7 and tiny.features.num_features == 32
    assert tiny(torch.zeros(2, 3, 112, 112)).shape == (2, 32)
    assert iresnet([1, 1, 1, 1], base_width=8, input_size=64).fc.in_features == 64 * 4 * 4
    with pytest.raises(ValueError, match="unknown iresnet arch"):
        iresnet("iresnet101")


def test_cosface_and_arcface_match_reference():
    io_file = reference_dir() / "iresnet" / "cosface_io.pt"
    if not io_file.is_file():
        pytest.skip(f"{io_file} not available")
    io = torch.load(io_file, weights_only=True)
    in_features, classes = io["kernel"].shape  # (in, out): every size comes from the fixture
    assert io["embeddings"].shape[1] == in_features
    heads = {"cosface": (io["m"], "expected_cosface_logits_"), "arcface": (0.5, "expected_arcface_m0.5_logits_")}
    for kind, (margin, prefix) in heads.items():
        head = MarginHead(in_features, classes, io["s"], margin, kind)
        assert head.kernel.shape == io["kernel"].shape
        with torch.no_grad():
            head.kernel.copy_(io["kernel"])
            for labels in ("labels_with_ignore", "labels_valid"):
                logits = head(io["embeddings"], io[labels])
                assert (logits - io[prefix + labels]).abs().max() <= 1e-4, (kind, labels)
    cosface = MarginHead(in_features, classes, io["s"], io["m"])
    with torch.no_grad():
        cosface.kernel.copy_(io["kernel"])
        valid = io["labels_valid"]
        loss = F.cross_entropy(cosface(io["embeddings"], valid), valid)
        assert abs(float(loss) - float(io["expected_cosface_cross_entropy_labels_valid"])) <= 1e-4
        twice = cosface(F.normalize(io["embeddings"], dim=1), valid)
        assert (twice - io["expected_cosface_logits_labels_valid_from_F_normalize"]).abs().max() <= 1e-4


def test_margin_applies_only_at_valid_labels():
    torch.manual_seed(0)
    head = MarginHead(8, 5, s=10.0, m=0.3)
    embeddings = torch.randn(3, 8)
    plain = 10.0 * (F.normalize(embeddings, dim=1) @ F.normalize(head.kernel, dim=0))
    logits = head(embeddings, torch.tensor([2, -1, 0]))
    difference = (plain - logits).detach()
    expected = torch.zeros(3, 5)
    expected[0, 2] = expected[2, 0] = 3.0
    assert torch.allclose(difference, expected, atol=1e-5)


def test_load_backbone_strips_dataparallel_prefix(tmp_path):
    model = iresnet([1, 1, 1, 1], num_features=16, base_width=8)
    path = tmp_path / "backbone.pth"
    torch.save({f"module.{k}": v for k, v in model.state_dict().items()}, path)
    loaded = load_backbone(path, [1, 1, 1, 1], 16, base_width=8)
    assert not loaded.training
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value)


def test_missing_weights_message_names_source_and_path(tmp_path):
    path = tmp_path / "weights" / "Elastic_R100_295672backbone.pth"
    with pytest.raises(FileNotFoundError) as info:
        load_backbone(path, "iresnet100", 512)
    message = str(info.value)
    assert "ElasticFace" in message and "github.com/fdbtrs/ElasticFace" in message
    assert "Elastic_R100_295672backbone.pth" in message and str(path) in message


def test_mismatched_checkpoint_names_first_mismatches(tmp_path):
    path = tmp_path / "wrong.pth"
    torch.save(iresnet([1, 1, 1, 1], num_features=16, base_width=8).state_dict(), path)
    with pytest.raises(ValueError) as info:
        load_backbone(path, [1, 1, 1, 1], 32, base_width=8)
    assert "shape of fc.weight" in str(info.value) and "features.weight" in str(info.value)
    with pytest.raises(ValueError, match="missing key layer1.1"):
        load_backbone(path, [2, 1, 1, 1], 16, base_width=8)
