"""First-stage steps: checkpoint split (and its safe loading), strict loading, a tiny training run with
kill/resume, and images <-> latents."""

import csv
import os
import pickle
import sys
import types

import numpy as np
import pytest
import torch

import idiff_core.autoencoder as ae
from idiff_core.io import read_rgb, write_png
from idiff_core.settings import settings_from_dict
from refdata import discover

TINY_MODEL = dict(ch=32, ch_mult=[1, 1, 1], num_res_blocks=0, attn_resolutions=[], z_channels=3, double_z=False,
                  resolution=16, in_channels=3, out_ch=3, dropout=0.0, n_embed=16, embed_dim=3)
TINY_TRAIN = dict(model=TINY_MODEL, steps=6, batch_size=3, crop_size=8, lr=1e-3, lr_final=1e-4, adam_betas=[0.5, 0.9], seed=3,
                  checkpoint_every=2, l1_weight=1.0, mse_weight=0.5, codebook_weight=1.0, commitment_beta=0.25,
                  dead_code_reinit_every=2, holdout_images=2)


def _io_config(io: dict) -> ae.VQConfig:
    return ae.VQConfig(**io["config"]["ddconfig"], n_embed=io["config"]["n_embed"], embed_dim=io["config"]["embed_dim"])


@pytest.mark.parametrize("io_path", discover("vq", "vq_*_io.pt"))
def test_split_fake_ldm_checkpoint(io_path, tmp_path):
    io = torch.load(io_path, weights_only=True)
    ckpt = io_path.with_name(io_path.name.replace("_io.pt", "_fake_ldm.ckpt"))
    ae.split_checkpoint(ckpt, tmp_path / "enc.pt", tmp_path / "dec.pt")
    assert list(torch.load(tmp_path / "enc.pt", weights_only=True)) == io["expected_encoder_file_keys"]
    assert list(torch.load(tmp_path / "dec.pt", weights_only=True)) == io["expected_decoder_file_keys"]
    cfg = _io_config(io)
    encoder, decoder = ae.load_encoder(tmp_path / "enc.pt", cfg), ae.load_decoder(tmp_path / "dec.pt", cfg)
    with torch.no_grad():
        assert (encoder(io["x"]) - io["expected_encoder_out"]).abs().max() <= 2e-5
        assert (decoder(io["latent2"]) - io["expected_decoder_out2"]).abs().max() <= 5e-5


def _first_stage_state(prefix: str = ae.PREFIX) -> dict:
    model = ae.VQModel(ae.VQConfig(**TINY_MODEL))
    return {prefix + k: v for k, v in model.state_dict().items()}


def test_split_without_first_stage_weights_names_what_it_found(tmp_path):
    path = tmp_path / "other.ckpt"
    torch.save({"state_dict": {"cond_stage_model.first_stage_model.x": torch.zeros(2), "betas": torch.zeros(3)}}, path)
    with pytest.raises(ValueError, match=r"no 'first_stage_model\.\*' weights.*'betas\.', 'cond_stage_model\.'"):
        ae.split_checkpoint(path, tmp_path / "enc.pt", tmp_path / "dec.pt")
    assert not (tmp_path / "enc.pt").exists()


class _Payload:
    """A pickle that runs a shell command when loaded with plain pickle."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_malicious_checkpoint_is_refused_without_running(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": _first_stage_state(), "callbacks": _Payload(marker)}, path)
    with pytest.raises(ae.UnsafeCheckpointError, match="refusing"):
        ae.split_checkpoint(path, tmp_path / "enc.pt", tmp_path / "dec.pt")
    assert not marker.exists()
    assert not (tmp_path / "enc.pt").exists()


def test_lightning_extras_do_not_block_the_split(tmp_path, monkeypatch):
    """Old Lightning keys callback states by the callback CLASS, which weights_only refuses."""
    cls = type("ModelCheckpoint", (), {"__module__": "pytorch_lightning.callbacks.model_checkpoint"})
    for name in ("pytorch_lightning", "pytorch_lightning.callbacks", "pytorch_lightning.callbacks.model_checkpoint"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    sys.modules["pytorch_lightning.callbacks.model_checkpoint"].ModelCheckpoint = cls
    state = _first_stage_state()
    path = tmp_path / "lightning.ckpt"
    torch.save({"state_dict": state, "callbacks": {cls: {"best_model_score": torch.tensor(0.5)}},
                "optimizer_states": [{"state": {}, "param_groups": [{"lr": 1e-4, "betas": (0.5, 0.9)}]}]}, path)
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        torch.load(path, weights_only=True)
    monkeypatch.delitem(sys.modules, "pytorch_lightning.callbacks.model_checkpoint")  # loading must not need it
    ae.split_checkpoint(path, tmp_path / "enc.pt", tmp_path / "dec.pt")
    encoder = ae.load_encoder(tmp_path / "enc.pt", ae.VQConfig(**TINY_MODEL))
    assert torch.equal(encoder.quant_conv.weight, state[ae.PREFIX + "quant_conv.weight"])


def test_load_reports_missing_file_and_wrong_config(tmp_path):
    with pytest.raises(FileNotFoundError, match="ffhq.zip"):
        ae.load_decoder(tmp_path / "absent.pt", ae.VQConfig(**TINY_MODEL))
    path = tmp_path / "tiny.ckpt"
    torch.save({"state_dict": _first_stage_state()}, path)
    ae.split_checkpoint(path, tmp_path / "enc.pt", tmp_path / "dec.pt")
    with pytest.raises(ValueError, match=r"quantize\.embedding\.weight: file \(16, 3\) vs model \(32, 3\)"):
        ae.load_decoder(tmp_path / "dec.pt", ae.VQConfig(**{**TINY_MODEL, "n_embed": 32}))


def _faces(folder, count=10, side=16):
    """Smooth random colour blobs: a stand-in for faces that a tiny autoencoder can fit."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:side, 0:side] / side
    for i in range(count):
        cx, cy = rng.uniform(0.3, 0.7, 2)
        blob = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) * 12)[..., None]
        image = (rng.uniform(0, 255, 3) * blob + rng.uniform(0, 255, 3) * (1 - blob)).astype(np.uint8)
        write_png(folder / f"{i:03d}.png", image)
    return folder


def _train(tmp_path, run: str, images):
    settings = settings_from_dict(ae.AutoencoderTrainSettings, TINY_TRAIN)
    out = tmp_path / run
    metrics = ae.train_autoencoder(images, out / "ae.ckpt", out / "loss.csv", out / "state", settings,
                                   threads=1, device="cpu")
    with open(out / "loss.csv") as fh:
        rows = list(csv.DictReader(fh))
    return out, metrics, rows


def test_train_kill_resume_split_and_roundtrip(tmp_path, monkeypatch):
    images = _faces(tmp_path / "faces")
    straight, metrics, rows = _train(tmp_path, "straight", images)
    assert [int(r["step"]) for r in rows] == list(range(1, 7))
    assert set(rows[0]) == set(ae.LOSS_COLUMNS)
    assert metrics["images"] == 2 and 0 < metrics["mse"] < 1 and metrics["psnr_db"] > 0

    # kill during step 5 (after the step-4 save), then rerun: it continues from step 4
    real_lr_at, calls = ae._lr_at, []

    def killed_at_step_5(settings, step):
        calls.append(step)
        if step == 5:
            raise KeyboardInterrupt("simulated kill")
        return real_lr_at(settings, step)

    monkeypatch.setattr(ae, "_lr_at", killed_at_step_5)
    with pytest.raises(KeyboardInterrupt):
        _train(tmp_path, "resumed", images)
    assert calls == [1, 2, 3, 4, 5] and not (tmp_path / "resumed" / "ae.ckpt").exists()
    calls.clear()
    monkeypatch.setattr(ae, "_lr_at", lambda settings, step: calls.append(step) or real_lr_at(settings, step))
    resumed, resumed_metrics, resumed_rows = _train(tmp_path, "resumed", images)
    assert calls == [5, 6]
    a = torch.load(straight / "ae.ckpt", weights_only=True)
    b = torch.load(resumed / "ae.ckpt", weights_only=True)
    assert a["global_step"] == b["global_step"] == 6 and list(a["state_dict"]) == list(b["state_dict"])
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in rows]
    assert strip == [{k: v for k, v in r.items() if k != "seconds"} for r in resumed_rows]
    assert resumed_metrics == metrics

    # the trained checkpoint goes through the same split rule as the LDM one
    ae.split_checkpoint(straight / "ae.ckpt", tmp_path / "enc.pt", tmp_path / "dec.pt")
    cfg = ae.VQConfig(**TINY_MODEL)
    encoder, decoder = ae.load_encoder(tmp_path / "enc.pt", cfg), ae.load_decoder(tmp_path / "dec.pt", cfg)
    paths = sorted(images.glob("*.png"))[:5]
    pixels = np.stack([read_rgb(p) for p in paths])
    latents = ae.encode_images(encoder, pixels, batch_size=2, device="cpu")
    assert latents.dtype == torch.float32 and latents.shape == (5, 3, 4, 4)
    assert torch.equal(latents, ae.encode_images(encoder, paths, batch_size=2, device="cpu"))
    decoded = ae.decode_latents(decoder, latents, batch_size=2, device="cpu")
    assert decoded.dtype == np.uint8 and decoded.shape == (5, 16, 16, 3)
    with torch.no_grad():
        # same chunks as decode_latents: conv kernels may round differently for other batch sizes
        direct = torch.cat([decoder(chunk) for chunk in latents.split(2)])
        direct = direct.clamp(-1, 1).add(1).div(2).mul(255).round().to(torch.uint8).permute(0, 2, 3, 1)
    assert np.array_equal(decoded, direct.numpy())

    # the sampler's clipping box is the codebook's per-channel extent
    low, high = ae.codebook_range(decoder)
    codes = decoder.quantize.embedding.weight.detach()
    assert low.shape == high.shape == (1, 3, 1, 1)
    assert torch.equal(low.flatten(), codes.min(0).values) and torch.equal(high.flatten(), codes.max(0).values)

    # faces rewritten upstream under the same names: the finished state is not reused
    write_png(images / "000.png", np.zeros((16, 16, 3), dtype=np.uint8))
    calls.clear()
    _train(tmp_path, "resumed", images)
    assert calls == [1, 2, 3, 4, 5, 6]


def test_random_crops_are_seeded_windows_of_each_image():
    yy, xx = torch.meshgrid(torch.arange(16), torch.arange(12), indexing="ij")
    images = torch.stack([(n * 10000 + yy * 100 + xx)[..., None].expand(16, 12, 3) for n in range(5)])
    torch.manual_seed(0)
    crops = ae._random_crops(images, 8)
    torch.manual_seed(0)
    assert crops.shape == (5, 8, 8, 3) and torch.equal(crops, ae._random_crops(images, 8))
    corners = [(int(c[0, 0, 0]) // 100 % 100, int(c[0, 0, 0]) % 100) for c in crops]
    assert all(torch.equal(c, image[t:t + 8, l:l + 8]) for c, image, (t, l) in zip(crops, images, corners))
    assert len(set(corners)) > 1
    assert torch.equal(ae._random_crops(images[:, :12], 12), images[:, :12])  # crop of the full size = no crop


@pytest.mark.parametrize("crop, message", [(6, "multiple of the downsampling factor 4"), (20, "exceeds the 16x16 images")])
def test_training_refuses_bad_crop_size(tmp_path, crop, message):
    folder = _faces(tmp_path / "faces", count=4)
    with pytest.raises(ValueError, match=message):
        settings = settings_from_dict(ae.AutoencoderTrainSettings, {**TINY_TRAIN, "crop_size": crop})
        ae.train_autoencoder(folder, tmp_path / "ae.ckpt", tmp_path / "loss.csv", tmp_path / "state", settings,
                             threads=1, device="cpu")


def test_training_refuses_mixed_image_sizes(tmp_path):
    folder = _faces(tmp_path / "faces", count=4)
    write_png(folder / "odd.png", np.zeros((18, 16, 3), np.uint8))
    settings = settings_from_dict(ae.AutoencoderTrainSettings, TINY_TRAIN)
    with pytest.raises(ValueError, match="one size divisible by 4"):
        ae.train_autoencoder(folder, tmp_path / "ae.ckpt", tmp_path / "loss.csv", tmp_path / "state", settings,
                             threads=1, device="cpu")
