"""Training steps at every small network shape the project trains, each in its own process.

oneDNN picks CPU kernels by vector unit (AVX2, AVX-512, ...); a kernel that crashes on one of them
kills the whole pytest process. Running each shape in a subprocess makes such a crash fail one test
that names the shape. Shapes come from the shipped configs (default, smoke) and the tests' tiny
models, so a new smallest width is covered as soon as a config uses it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
TEST_FR_MODEL = {"arch": [1, 1, 1, 1], "num_features": 16, "base_width": 8, "input_size": 112}  # test_fr_training
TEST_AUTOENCODER = {"model": {"ch": 32, "ch_mult": [1, 1, 1], "num_res_blocks": 0, "attn_resolutions": [],
                              "z_channels": 3, "double_z": False, "resolution": 16, "in_channels": 3, "out_ch": 3,
                              "dropout": 0.0, "n_embed": 16, "embed_dim": 3},
                    "crop_size": 8}  # test_autoencoder's TINY_MODEL / TINY_TRAIN


def _config(name: str) -> dict:
    return yaml.safe_load((REPO / "config" / name).read_text())


def _fr_shapes() -> dict[str, dict]:
    default = _config("config.yaml")
    return {"tests": TEST_FR_MODEL, "default-embedder": default["embedder"]["model"], "default-fr": default["fr"]["model"]}


def _autoencoder_shapes() -> dict[str, dict]:
    default = _config("config.yaml")["autoencoder"]
    smoke = _config("smoke.yaml")["autoencoder"]["train"]
    default_shape = {"model": default["model"], "crop_size": default["train"]["crop_size"]}
    return {"tests": TEST_AUTOENCODER, "default": default_shape,
            "smoke": {**default_shape, "batch_size": smoke["batch_size"]}}


FR_STEP = """
import json, sys, torch
from idiff_core.settings import settings_from_dict
from idiff_core.training.fr import FRTrainingSettings, build_models, build_optimizer, train_step
shape = json.loads(sys.argv[1])
train = {"seed": 0, "dropout": 0.0, "head": "cosface", "margin_s": 64.0, "margin_m": 0.35, "width": None,
         "depth": None, "val_identities": 0, "batch_size": 2, "base_lr": 0.1, "momentum": 0.9,
         "weight_decay": 5e-4, "grad_clip_norm": 5.0, "lr_schedule": "step", "lr_decay_factor": 0.1,
         "plateau_patience": 1, "early_stop_patience": 1, "lr_milestones": [1], "max_epochs": 1,
         "randaugment": False, "randaugment_num_ops": 1, "randaugment_magnitude_bins": 31,
         "randaugment_max_magnitude": 16, "mixed_precision": False, "num_workers": 0, "checkpoint_every_steps": 0}
settings = settings_from_dict(FRTrainingSettings, {**train, **shape})
torch.manual_seed(0)
backbone, head = build_models(settings, num_classes=3)
optimizer = build_optimizer(backbone, head, settings, global_batch=2)
scaler = torch.amp.GradScaler("cpu", enabled=False)
images = torch.randn(2, 3, settings.input_size, settings.input_size)
for _ in range(2):
    loss, _ = train_step(backbone, head, optimizer, scaler, images, torch.tensor([0, 2]), 5.0, autocast=False)
assert torch.isfinite(torch.tensor(loss)), loss
print("ok", loss)
"""

AUTOENCODER_STEP = """
import json, sys, tempfile
from pathlib import Path
import numpy as np
from idiff_core.autoencoder import AutoencoderTrainSettings, train_autoencoder
from idiff_core.io import write_png
from idiff_core.settings import settings_from_dict
shape = json.loads(sys.argv[1])
side = shape["model"]["resolution"]
train = {"steps": 2, "batch_size": shape.get("batch_size", 2), "crop_size": shape["crop_size"], "lr": 1e-3,
         "lr_final": 1e-4, "adam_betas": [0.9, 0.99], "seed": 0, "checkpoint_every": 2, "l1_weight": 1.0,
         "mse_weight": 1.0, "codebook_weight": 1.0, "commitment_beta": 0.25, "dead_code_reinit_every": 1,
         "holdout_images": 1}
settings = settings_from_dict(AutoencoderTrainSettings, {**train, "model": shape["model"]})
with tempfile.TemporaryDirectory() as tmp:
    faces = Path(tmp) / "faces"
    faces.mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        write_png(faces / f"{i:05d}.png", rng.integers(0, 256, (side, side, 3), dtype=np.uint8))
    metrics = train_autoencoder(faces, Path(tmp) / "model.ckpt", Path(tmp) / "loss.csv", Path(tmp) / "state",
                                settings, threads=2, device="cpu")
print("ok", metrics)
"""


def _run_step(code: str, shape: dict) -> None:
    result = subprocess.run([sys.executable, "-c", code, json.dumps(shape)], capture_output=True, text=True,
                            timeout=300, cwd=REPO)
    assert result.returncode == 0, (f"training step crashed (exit {result.returncode}) for {shape}:\n"
                                    f"{result.stderr[-3000:]}")
    assert result.stdout.startswith("ok"), result.stdout


@pytest.mark.parametrize("name", list(_fr_shapes()))
def test_fr_training_step_runs_at_every_small_shape(name):
    _run_step(FR_STEP, _fr_shapes()[name])


@pytest.mark.parametrize("name", list(_autoencoder_shapes()))
def test_autoencoder_training_step_runs_at_every_small_shape(name):
    _run_step(AUTOENCODER_STEP, _autoencoder_shapes()[name])
