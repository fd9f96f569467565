"""FR training: data split, augmentation, a tiny end-to-end run, and kill-and-resume equivalence."""

from __future__ import annotations

import csv
import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from idiff_core.augment import RANDAUGMENT_OPS, RandAugmentSpec, augment_face, draw_ops, op_magnitude
from idiff_core.checkpoint import load_state
from idiff_core.io import write_png
from idiff_core.models.iresnet import iresnet
from idiff_core.settings import settings_from_dict
from idiff_core.training.fr import (STATE_FILE, FaceTrainingSet, FRTrainingSettings, build_validation,
                                    images_read, measure_fr_throughput, split_identities, train_fr)

TINY = {
    "seed": 3, "arch": [1, 1, 1, 1], "num_features": 16, "base_width": 8, "input_size": 112, "dropout": 0.4, "head": "cosface",
    "margin_s": 64.0, "margin_m": 0.35, "width": None, "depth": 3, "val_identities": 4, "batch_size": 2,
    "base_lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4, "grad_clip_norm": 5.0, "lr_schedule": "plateau",
    "lr_decay_factor": 0.1, "plateau_patience": 4, "early_stop_patience": 6, "lr_milestones": [22, 30, 35],
    "max_epochs": 2, "randaugment": True, "randaugment_num_ops": 4, "randaugment_magnitude_bins": 31,
    "randaugment_max_magnitude": 16, "mixed_precision": True, "num_workers": 0, "checkpoint_every_steps": 2,
}


def make_face_folder(root: Path, identities: int, images: int, size: int = 32) -> Path:
    """An ImageFolder of coloured shapes: one colour and blob position per identity, noisy per image."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size]
    for identity in range(identities):
        colour = rng.integers(40, 216, size=3)
        cy, cx = rng.integers(size // 4, 3 * size // 4, size=2)
        for index in range(images):
            blob = ((yy - cy) ** 2 + (xx - cx) ** 2 < (size // 4) ** 2)[..., None]
            image = np.where(blob, colour, 255 - colour) + rng.normal(0, 12, (size, size, 3))
            write_png(root / f"id{identity:03d}" / f"{index:02d}.png", np.clip(image, 0, 255).astype(np.uint8))
    return root


def tiny_settings(**changes) -> FRTrainingSettings:
    return settings_from_dict(FRTrainingSettings, {**TINY, **changes})


def read_metrics(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


# ---------------------------------------------------------------------------------------- data split

def test_split_holds_out_last_identities_and_limits_width_depth(tmp_path):
    root = make_face_folder(tmp_path / "data", identities=6, images=4, size=8)
    train, val = split_identities(root, width=3, depth=2, val_identities=2)
    assert train.identities == ["id000", "id001", "id002"] and val.identities == ["id004", "id005"]
    assert [p.name for p in train.paths] == ["00.png", "01.png"] * 3 and train.labels == [0, 0, 1, 1, 2, 2]
    assert set(train.identities).isdisjoint(val.identities)
    with pytest.raises(ValueError, match="only 4 left"):
        split_identities(root, width=5, depth=None, val_identities=2)
    assert [p.as_posix() for p in images_read(root, width=1, depth=2, val_identities=1)] == [
        "id000/00.png", "id000/01.png", "id005/00.png", "id005/01.png"]


def test_preloaded_faces_give_the_same_samples_as_read_per_epoch(tmp_path):
    train, _ = split_identities(make_face_folder(tmp_path / "data", identities=3, images=2), None, None, 0)
    spec = RandAugmentSpec(4, 31, 16)
    preloaded = FaceTrainingSet(train, 5, spec, input_size=24)
    read = FaceTrainingSet(train, 5, spec, input_size=24, preload_bytes=0)
    assert preloaded.faces is not None and read.faces is None
    for epoch in (0, 1):
        preloaded.epoch = read.epoch = epoch
        for i in range(len(train.paths)):
            (a, label_a), (b, label_b) = preloaded[i], read[i]
            assert torch.equal(a, b) and label_a == label_b
    assert torch.equal(preloaded.faces[0], FaceTrainingSet(train, 5, spec, 24).faces[0])  # augmentation copies


def test_validation_pairs_are_balanced_and_seeded(tmp_path):
    root = make_face_folder(tmp_path / "data", identities=5, images=3, size=8)
    _, val = split_identities(root, width=None, depth=None, val_identities=4)
    pairs = build_validation(val, seed=1, input_size=112)
    labels = np.repeat(np.arange(4), 3)
    assert pairs.pixels.shape == (12, 112, 112, 3) and pairs.issame.sum() == 12 and len(pairs.issame) == 24
    assert np.array_equal(labels[pairs.first] == labels[pairs.second], pairs.issame)
    assert np.array_equal(pairs.issame[::2], np.ones(12, bool))  # interleaved: every fold holds both kinds
    with pytest.raises(ValueError, match="10 genuine pairs"):
        build_validation(split_identities(root, width=None, depth=None, val_identities=3)[1], seed=1, input_size=112)
    again = build_validation(val, seed=1, input_size=112)
    assert np.array_equal(again.first, pairs.first) and np.array_equal(again.second, pairs.second)


# -------------------------------------------------------------------------------------- augmentation

def test_randaugment_draws_per_op_magnitudes_and_is_seeded():
    spec = RandAugmentSpec(num_ops=4, num_bins=31, max_magnitude=16)
    draws = [draw_ops(spec, torch.Generator().manual_seed(s), 112, 112) for s in range(200)]
    assert all(len(ops) == 4 for ops in draws)
    rotations = [abs(m) for ops in draws for op, m in ops if op == "Rotate"]
    allowed = {op_magnitude("Rotate", b, 31, 112, 112) for b in range(1, 17)}
    assert rotations and all(any(abs(r - a) < 1e-9 for a in allowed) for r in rotations)
    assert len({round(r, 6) for r in rotations}) > 4  # magnitudes vary (torchvision's would be one value)
    assert max(rotations) <= 30.0 * 16 / 30 + 1e-9 and min(rotations) >= 1.0 - 1e-9
    signed = [m for ops in draws for op, m in ops if op == "ShearX"]
    assert min(signed) < 0 < max(signed)
    within_image = [{m for op, m in ops if op not in ("Identity", "AutoContrast", "Equalize")} for ops in draws]
    assert any(len(ms) > 1 for ms in within_image)
    assert {op for ops in draws for op, _ in ops} == set(RANDAUGMENT_OPS)
    image = torch.randint(0, 256, (3, 112, 112), dtype=torch.uint8)
    first = augment_face(image, torch.Generator().manual_seed(7), spec)
    assert torch.equal(first, augment_face(image, torch.Generator().manual_seed(7), spec))
    assert first.dtype == torch.uint8 and first.shape == image.shape
    others = [augment_face(image, torch.Generator().manual_seed(s), spec) for s in range(8, 12)]
    assert any(not torch.equal(first, other) for other in others)


def test_flip_only_augmentation_flips_half_the_time():
    image = torch.arange(3 * 4 * 5, dtype=torch.uint8).reshape(3, 4, 5)
    flipped = [not torch.equal(augment_face(image, torch.Generator().manual_seed(s), None), image) for s in range(400)]
    assert 0.4 < np.mean(flipped) < 0.6


# ----------------------------------------------------------------------------------------- training

def test_tiny_training_writes_backbone_and_metrics(tmp_path):
    root = make_face_folder(tmp_path / "data", identities=7, images=4)
    backbone_path, metrics = tmp_path / "backbone.pt", tmp_path / "metrics.csv"
    train_fr(root, backbone_path, metrics, tmp_path / "state", tiny_settings(), threads=1, device="cpu")
    rows = read_metrics(metrics)
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert list(rows[0]) == ["epoch", "lr", "train_loss", "train_accuracy", "val_accuracy", "seconds",
                             "images_per_second"]
    assert float(rows[0]["lr"]) == pytest.approx(0.1 / 512 * 2)
    assert all(0.0 <= float(r["val_accuracy"]) <= 1.0 and float(r["images_per_second"]) > 0 for r in rows)
    state = torch.load(backbone_path, weights_only=True)
    reference = iresnet([1, 1, 1, 1], num_features=16, base_width=8).state_dict()
    assert list(state) == list(reference) and all(state[k].shape == reference[k].shape for k in reference)
    assert torch.equal(state["features.weight"], torch.ones(16))  # frozen at 1


def test_killed_run_resumes_and_matches_uninterrupted(tmp_path):
    root = make_face_folder(tmp_path / "data", identities=7, images=3)
    settings = tiny_settings(lr_schedule="step", lr_milestones=[1], randaugment=False)
    # 3 training identities x 3 images / batch 2 = 4 steps per epoch (one image left over);
    # mid-epoch checkpoints after global steps 2 and 6 (= epoch 2, step 2)
    train_fr(root, tmp_path / "a.pt", tmp_path / "a.csv", tmp_path / "state_a", settings, threads=1, device="cpu")

    class Killed(RuntimeError):
        pass

    def kill_at_epoch2_step3(epoch: int, step: int) -> None:
        if (epoch, step) == (1, 3):
            raise Killed

    with pytest.raises(Killed):
        train_fr(root, tmp_path / "b.pt", tmp_path / "b.csv", tmp_path / "state_b", settings, threads=1,
                 device="cpu", on_step=kill_at_epoch2_step3)
    [state_file] = (tmp_path / "state_b").glob(f"*/{STATE_FILE}")  # the folder of these settings and images
    saved = load_state(state_file)["counters"]
    assert (saved["epoch"], saved["step_in_epoch"], saved["global_step"]) == (1, 2, 6)
    assert not (tmp_path / "b.pt").exists()
    calls: list[tuple[int, int]] = []
    train_fr(root, tmp_path / "b.pt", tmp_path / "b.csv", tmp_path / "state_b", settings, threads=1, device="cpu",
             on_step=lambda epoch, step: calls.append((epoch, step)))
    assert calls == [(1, 3), (1, 4)]  # continues after the mid-epoch checkpoint, not from the epoch start
    a, b = torch.load(tmp_path / "a.pt", weights_only=True), torch.load(tmp_path / "b.pt", weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)
    # byte for byte too: torch.save must not record the random name of the temporary file it wrote
    assert (tmp_path / "a.pt").read_bytes() == (tmp_path / "b.pt").read_bytes()
    drop_timing = lambda rows: [{k: v for k, v in r.items() if k not in ("seconds", "images_per_second")} for r in rows]
    assert drop_timing(read_metrics(tmp_path / "a.csv")) == drop_timing(read_metrics(tmp_path / "b.csv"))


def test_a_state_of_other_settings_is_not_resumed(tmp_path, capsys):
    """A config change reruns the rule: the earlier configuration's state must not block or leak into it."""
    root = make_face_folder(tmp_path / "data", identities=7, images=3)
    settings = tiny_settings(lr_schedule="step", lr_milestones=[1], randaugment=False, max_epochs=1)
    train_fr(root, tmp_path / "a.pt", tmp_path / "a.csv", tmp_path / "state", settings, threads=1, device="cpu")
    calls: list[tuple[int, int]] = []
    changed = dataclasses.replace(settings, margin_m=0.5)
    train_fr(root, tmp_path / "b.pt", tmp_path / "b.csv", tmp_path / "state", changed, threads=1, device="cpu",
             on_step=lambda epoch, step: calls.append((epoch, step)))
    assert calls[0] == (0, 1) and "(other margin_m)" in capsys.readouterr().err
    train_fr(root, tmp_path / "c.pt", tmp_path / "c.csv", tmp_path / "fresh", changed, threads=1, device="cpu")
    b, c = torch.load(tmp_path / "b.pt", weights_only=True), torch.load(tmp_path / "c.pt", weights_only=True)
    assert all(torch.equal(b[k], c[k]) for k in b)


def test_a_state_of_other_images_is_not_resumed(tmp_path, capsys):
    """A rerun upstream rewrites the faces under the same names: the finished state of the old faces
    must not be taken as this run's result."""
    root = make_face_folder(tmp_path / "data", identities=7, images=3)
    settings = tiny_settings(lr_schedule="step", lr_milestones=[1], randaugment=False, max_epochs=1)
    train_fr(root, tmp_path / "a.pt", tmp_path / "a.csv", tmp_path / "state", settings, threads=1, device="cpu")
    write_png(root / "id000" / "00.png", np.zeros((40, 40, 3), dtype=np.uint8))  # new size: a new file for sure
    calls: list[tuple[int, int]] = []
    train_fr(root, tmp_path / "b.pt", tmp_path / "b.csv", tmp_path / "state", settings, threads=1, device="cpu",
             on_step=lambda epoch, step: calls.append((epoch, step)))
    assert calls[0] == (0, 1) and "(other images)" in capsys.readouterr().err


def test_a_copied_results_folder_resumes(tmp_path):
    """A plain copy (new modification times, another place) holds the same images: its state is reused."""
    root = make_face_folder(tmp_path / "run" / "data", identities=7, images=3)
    settings = tiny_settings(lr_schedule="step", lr_milestones=[1], randaugment=False, max_epochs=1)
    train_fr(root, tmp_path / "a.pt", tmp_path / "a.csv", tmp_path / "run" / "state", settings, threads=1,
             device="cpu")
    shutil.copytree(tmp_path / "run", tmp_path / "copy", copy_function=shutil.copyfile)
    calls: list[tuple[int, int]] = []
    train_fr(tmp_path / "copy" / "data", tmp_path / "b.pt", tmp_path / "b.csv", tmp_path / "copy" / "state", settings,
             threads=1, device="cpu", on_step=lambda epoch, step: calls.append((epoch, step)))
    assert calls == []  # the copied state is the finished run: nothing left to train
    assert (tmp_path / "a.pt").read_bytes() == (tmp_path / "b.pt").read_bytes()


def test_plateau_needs_validation_identities(tmp_path):
    root = make_face_folder(tmp_path / "data", identities=3, images=2, size=8)
    with pytest.raises(ValueError, match="val_identities"):
        train_fr(root, tmp_path / "b.pt", tmp_path / "m.csv", tmp_path / "s", tiny_settings(val_identities=0),
                 threads=1, device="cpu")


def test_settings_have_no_defaults_and_reject_unknown_keys():
    assert all(f.default is dataclasses.MISSING for f in dataclasses.fields(FRTrainingSettings))
    with pytest.raises(ValueError, match="unknown"):
        settings_from_dict(FRTrainingSettings, {**TINY, "lr": 0.1})


def test_measure_fr_throughput_reports_images_per_second():
    result = measure_fr_throughput([1, 1, 1, 1], batch_size=2, steps=1, device="cpu", num_classes=10,
                                   base_width=8)
    assert result["images_per_second"] > 0 and result["batch_size"] == 2 and result["steps"] == 1
