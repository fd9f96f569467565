"""The LDM trainer: data matching, the shared latents file, loss log, released-layout outputs, EMA, lr
restarts, exact resume after a kill, and the NaN stop. Tiny VQ autoencoder and UNet, CPU, seconds each."""

from __future__ import annotations

import csv
import hashlib
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from idiff_core.checkpoint import load_state, save_state
from idiff_core.diffusion.schedule import BUFFER_NAMES, DiffusionSchedule, load_ddpm_checkpoint
from idiff_core.io import load_matrix, read_rgb, save_matrix, write_png
from idiff_core.models.unet import UNet, UNetConfig
from idiff_core.models.vq import VQConfig, VQDecoder, VQEncoder
from idiff_core.training import latents, ldm
from idiff_core.training.ema import ema_decay, make_ema, update_ema

N_IMAGES = 10
IMAGE_SIZE = 16  # -> 3 x 8 x 8 latents with the f2 autoencoder below

AUTOENCODER = dict(ch=32, ch_mult=[1, 2], num_res_blocks=1, attn_resolutions=[], z_channels=3, double_z=False,
                   resolution=IMAGE_SIZE, in_channels=3, out_ch=3, dropout=0.0, n_embed=16, embed_dim=3)
UNET_CA = dict(input_channels=3, initial_channels=32, channel_multipliers=[1, 1], is_attention=[False, True],
               attention_heads=-1, attention_head_channels=16, n_blocks_per_resolution=1,
               context_input_channels=512, context_channels=32, condition_type="CA", is_context_conditional=True,
               context_dropout_probability=0.25)
TRAINING = dict(steps=8, global_batch_size=4, accumulation_steps=2, learning_rate=1e-4, lr_cycle_steps=2,
                lr_cycle_mult=2, ema_power=0.75, ema_cap=0.9999, precision="bf16", random_flip=True,
                context_drop_probability=0.2, seed=0, checkpoint_every=4, keep_steps=[4], preview_every=4,
                preview_count=3, preview_sampling_steps=3)


def settings(unet: dict | None = None, **training) -> ldm.LdmSettings:
    return ldm.ldm_settings({"unet": unet or UNET_CA, "autoencoder": AUTOENCODER,
                             "diffusion": {"timesteps": 1000, "schedule": "linear"},
                             "training": {**TRAINING, **training}})


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Path]:
    """Tiny faces-like images, their embeddings, a random tiny VQ encoder/decoder pair and the latents."""
    root = tmp_path_factory.mktemp("ldm_world")
    rng = np.random.default_rng(0)
    names = [f"{i:05d}" for i in range(N_IMAGES)]
    for name in names:
        write_png(root / "images" / f"{name}.png", rng.integers(0, 256, (IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8))
    emb = rng.standard_normal((N_IMAGES, 512)).astype(np.float32)
    save_matrix(root / "emb.npz", names[::-1], (emb / np.linalg.norm(emb, axis=1, keepdims=True))[::-1])
    cfg = VQConfig(**AUTOENCODER)
    torch.manual_seed(0)
    save_state(root / "encoder.pt", VQEncoder(cfg).state_dict())
    save_state(root / "decoder.pt", VQDecoder(cfg).state_dict())
    latents.encode_latents(root / "images", root / "encoder.pt", root / "latents.pt", cfg, 4, threads=1, device="cpu")
    return {"images": root / "images", "emb": root / "emb.npz", "encoder": root / "encoder.pt",
            "decoder": root / "decoder.pt", "latents": root / "latents.pt"}


def run(world, tmp: Path, settings_: ldm.LdmSettings, embeddings: bool = True, state: str = "state") -> dict:
    return ldm.train_ldm(world["images"], world["emb"] if embeddings else None, world["latents"], world["decoder"],
                         ldm.LdmOutputs.in_folder(tmp / "out"), tmp / state, settings_, threads=1, device="cpu")


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def expected_lr(step: int, base: float, t0: int, mult: int) -> float:
    """CosineAnnealingWarmRestarts (eta_min 0), written out: cycles of t0, t0*mult, t0*mult^2, ..."""
    start, length = 0, t0
    while step >= start + length:
        start, length = start + length, length * mult
    return base * (1 + math.cos(math.pi * (step - start) / length)) / 2


def test_short_run_writes_log_checkpoints_and_released_layout(world, tmp_path):
    summary = run(world, tmp_path, settings())
    out, [state] = tmp_path / "out", list((tmp_path / "state").iterdir())  # the folder of these settings and data
    assert summary["steps"] == 8 and summary["images"] == N_IMAGES and math.isfinite(summary["last_loss"])

    rows = read_csv(out / "loss.csv")
    assert list(rows[0]) == list(ldm.LOSS_COLUMNS)
    assert [int(r["step"]) for r in rows] == list(range(8))
    assert all(math.isfinite(float(r["loss"])) and float(r["latents_per_s"]) > 0 for r in rows)
    # lr returns to its base value exactly at the warm restarts T_0 = 2 and T_0 * (1 + T_mult) = 6
    lrs = [float(r["lr"]) for r in rows]
    assert [s for s, lr in enumerate(lrs) if lr == pytest.approx(1e-4, rel=1e-12)] == [0, 2, 6]
    assert lrs == pytest.approx([expected_lr(s, 1e-4, 2, 2) for s in range(8)], rel=1e-9, abs=1e-15)
    assert [float(r["ema_decay"]) for r in rows] == [ema_decay(s, 0.75, 0.9999) for s in range(8)]
    seconds = [float(r["seconds"]) for r in rows]
    assert seconds == sorted(seconds)

    # checkpoints: the resumable state, the kept EMA copy, previews, and the released-layout outputs
    ckpt = load_state(state / "checkpoint.pt")
    assert ckpt["step"] == 8 and {"model", "ema", "optimizer", "lr_schedule", "scaler"} <= set(ckpt)
    assert sorted(p.name for p in (out / "previews").glob("*.png")) == ["step_0000004.png", "step_0000008.png"]
    assert [p.name for p in (out / "kept").iterdir()] == ["ema_step4.ckpt"]
    schedule_ref = DiffusionSchedule.create(1000, "linear")
    for name in ("ema.ckpt", "model.ckpt", "kept/ema_step4.ckpt"):
        raw = torch.load(out / name, map_location="cpu", weights_only=True)
        assert list(raw)[:8] == list(BUFFER_NAMES)
        assert all(k.startswith("eps_model.") for k in list(raw)[8:])
        unet = UNet(UNetConfig(**UNET_CA))
        schedule = load_ddpm_checkpoint(out / name, unet)
        torch.testing.assert_close(schedule.alpha_bars, schedule_ref.alpha_bars, rtol=0, atol=0)
    ema, model = (torch.load(out / n, weights_only=True) for n in ("ema.ckpt", "model.ckpt"))
    assert any(not torch.equal(ema[k], model[k]) for k in model if k.startswith("eps_model."))
    torch.testing.assert_close({k: v for k, v in ckpt["ema"].items()},
                               {k[len("eps_model."):]: v for k, v in ema.items() if k.startswith("eps_model.")})


def test_interrupted_run_resumes_to_identical_losses_and_weights(world, tmp_path, monkeypatch):
    straight = tmp_path / "straight"
    run(world, straight, settings(preview_every=0))

    broken = tmp_path / "broken"
    real_update = ldm.update_ema

    def killed_at_step_6(ema, model, decay):
        if decay == ema_decay(6, 0.75, 0.9999):
            raise KeyboardInterrupt("killed")  # a kill after the step-4 checkpoint, mid-way to the next
        real_update(ema, model, decay)

    monkeypatch.setattr(ldm, "update_ema", killed_at_step_6)
    with pytest.raises(KeyboardInterrupt):
        run(world, broken, settings(preview_every=0))
    [work] = (broken / "state").iterdir()  # the folder of these settings and data
    assert load_state(work / "checkpoint.pt")["step"] == 4
    assert [int(r["step"]) for r in read_csv(work / "loss.csv")][-1] == 6 - 1
    monkeypatch.setattr(ldm, "update_ema", real_update)
    summary = run(world, broken, settings(preview_every=0))
    assert summary["resumed_from"] == 4

    # the loss log is rewritten from the checkpoint on, with exactly the uninterrupted run's values
    straight_rows, resumed_rows = read_csv(straight / "out" / "loss.csv"), read_csv(broken / "out" / "loss.csv")
    assert [int(r["step"]) for r in resumed_rows] == list(range(8))
    for a, b in zip(straight_rows, resumed_rows):
        assert (a["step"], a["loss"], a["lr"], a["ema_decay"]) == (b["step"], b["loss"], b["lr"], b["ema_decay"])
    for name in ("ema.ckpt", "model.ckpt", "kept/ema_step4.ckpt"):
        a, b = (torch.load(d / "out" / name, weights_only=True) for d in (straight, broken))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name


def test_finished_run_rewrites_outputs_without_training(world, tmp_path, monkeypatch):
    run(world, tmp_path, settings(steps=2, checkpoint_every=2, keep_steps=[], preview_every=0))
    before = torch.load(tmp_path / "out" / "ema.ckpt", weights_only=True)
    (tmp_path / "out" / "ema.ckpt").unlink()
    monkeypatch.setattr(ldm._Trainer, "accumulate", lambda *a: pytest.fail("trained again"))
    again = run(world, tmp_path, settings(steps=2, checkpoint_every=2, keep_steps=[], preview_every=0))
    assert again["resumed_from"] == 2
    after = torch.load(tmp_path / "out" / "ema.ckpt", weights_only=True)
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_a_state_dir_of_other_settings_is_not_resumed(world, tmp_path, capsys):
    """A config change reruns the rule: the old run's checkpoint must neither block it nor leak into it."""
    run(world, tmp_path, settings(steps=2, checkpoint_every=2, keep_steps=[], preview_every=0))
    again = run(world, tmp_path, settings(steps=2, checkpoint_every=2, keep_steps=[], preview_every=0, seed=1))
    assert again["resumed_from"] == 0 and "(other seed)" in capsys.readouterr().err
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    run(world, fresh, settings(steps=2, checkpoint_every=2, keep_steps=[], preview_every=0, seed=1))
    a, b = (torch.load(d / "out" / "ema.ckpt", weights_only=True) for d in (tmp_path, fresh))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_state_dir_of_other_embeddings_is_not_resumed(world, tmp_path, capsys):
    """A retrained embedder rewrites the embeddings file: its contexts are new, so training starts over."""
    emb = tmp_path / "emb.npz"
    shutil.copyfile(world["emb"], emb)
    own = {**world, "emb": emb}
    run(own, tmp_path, settings(steps=2, checkpoint_every=2, keep_steps=[], preview_every=0))
    names, matrix, _ = load_matrix(emb)
    save_matrix(emb, names, -matrix)
    again = run(own, tmp_path, settings(steps=2, checkpoint_every=2, keep_steps=[], preview_every=0))
    assert again["resumed_from"] == 0 and "(other contexts)" in capsys.readouterr().err


def test_nan_loss_stops_with_step_and_last_checkpoint(world, tmp_path, monkeypatch):
    real_loss = DiffusionSchedule.training_loss
    calls = {"n": 0}

    def nan_from_step_3(self, *args, **kwargs):
        calls["n"] += 1
        loss = real_loss(self, *args, **kwargs)
        return loss * float("nan") if calls["n"] > 3 * 2 else loss  # 2 micro-batches per step

    monkeypatch.setattr(DiffusionSchedule, "training_loss", nan_from_step_3)
    with pytest.raises(ldm.NonFiniteLoss, match=r"nan at step 3.*checkpoint\.pt \(step 2\)"):
        run(world, tmp_path, settings(checkpoint_every=2, keep_steps=[], preview_every=0))
    [rows] = [read_csv(p) for p in (tmp_path / "state").glob("*/loss.csv")]
    assert [int(r["step"]) for r in rows] == [0, 1, 2]


def test_latents_file_holds_image_and_flip_and_its_sources(world):
    stored = torch.load(world["latents"], map_location="cpu", weights_only=True)
    names, paths = latents.training_images(world["images"])
    encoder_sha256 = hashlib.sha256(world["encoder"].read_bytes()).hexdigest()
    assert stored["names"] == names and stored["encoder_sha256"] == encoder_sha256
    assert stored["key"] == latents.latents_key(encoder_sha256, names, [p.stat().st_size for p in paths])
    assert stored["latents"].shape == (N_IMAGES, 2, 3, IMAGE_SIZE // 2, IMAGE_SIZE // 2)
    encoder = VQEncoder(VQConfig(**AUTOENCODER))
    encoder.load_state_dict(load_state(world["encoder"]))
    image = torch.from_numpy(read_rgb(paths[7])).permute(2, 0, 1).float()[None] / 127.5 - 1
    with torch.no_grad():
        torch.testing.assert_close(stored["latents"][7, 0], encoder(image)[0], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(stored["latents"][7, 1], encoder(image.flip(3))[0], rtol=1e-5, atol=1e-5)


def test_encoding_advances_the_bar_per_cpu_step(world, tmp_path, monkeypatch):
    """encode_batch_size 4 on the CPU: steps of CPU_STEP (2) images, the bar moving after each."""
    updates = []
    real_progress = latents.progress

    def recording(**kwargs):
        bar = real_progress(**kwargs)
        monkeypatch.setattr(bar, "update", lambda n=1: updates.append(n))
        return bar
    monkeypatch.setattr(latents, "progress", recording)
    latents.encode_latents(world["images"], world["encoder"], tmp_path / "l.pt", VQConfig(**AUTOENCODER), 4,
                           threads=1, device="cpu")
    assert updates == [latents.CPU_STEP] * (N_IMAGES // latents.CPU_STEP)
    a, b = (torch.load(p, weights_only=True)["latents"] for p in (tmp_path / "l.pt", world["latents"]))
    assert torch.equal(a, b)  # the same steps: the same bits


def test_latents_of_other_images_are_refused(world, tmp_path):
    """Latents encoded from another folder (or before its images were rewritten) would pair rows with
    the wrong contexts: training stops and names the difference. A plain copy of the folder (new
    modification times, as `cp -r` gives) still fits its latents."""
    images = tmp_path / "images"
    shutil.copytree(world["images"], images, copy_function=shutil.copyfile)
    assert latents.load_latents(world["latents"], *latents.training_images(images))[0].shape[0] == N_IMAGES
    (images / "00009.png").unlink()
    write_png(images / "00003.png", np.zeros((IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8))
    names, _, _ = load_matrix(world["emb"])
    save_matrix(tmp_path / "emb.npz", [n for n in names if n != "00009"], np.zeros((N_IMAGES - 1, 512)) + 0.1)
    with pytest.raises(ValueError, match=r"encoded from other images.*\(10 latents, 9 images\): 1 latents have no "
                                         r"image \(00009\); 1 images differ in size from the encoded ones "
                                         r"\(00003\).*--forcerun encode_latents"):
        ldm.train_ldm(images, tmp_path / "emb.npz", world["latents"], world["decoder"],
                      ldm.LdmOutputs.in_folder(tmp_path / "out"), tmp_path / "state", settings(), threads=1,
                      device="cpu")
    assert not (tmp_path / "out").exists()


def test_embeddings_matched_by_name_and_mismatches_named(world, tmp_path):
    data = ldm.load_training_set(world["images"], world["emb"])  # the npz lists names in reverse order
    names, matrix, _ = load_matrix(world["emb"])
    row = names.index("00003")
    assert data.names[3] == "00003" and torch.equal(data.contexts[3], torch.from_numpy(matrix[row]))

    save_matrix(tmp_path / "bad.npz", names[1:] + ["99999"], np.vstack([matrix[1:], matrix[:1]]))
    with pytest.raises(ValueError, match=r"10 images.*10 embeddings; 1 images have no embedding \(00009\) "
                                         r"and 1 embeddings have no image \(99999\)"):
        ldm.train_ldm(world["images"], tmp_path / "bad.npz", world["latents"], world["decoder"],
                      ldm.LdmOutputs.in_folder(tmp_path / "out"), tmp_path / "state", settings(), threads=1,
                      device="cpu")


def test_unconditional_model_trains_without_embeddings(world, tmp_path):
    uncond = {**UNET_CA, "condition_type": "AdaGN", "is_context_conditional": False,
              "context_dropout_probability": 0.0}
    with pytest.raises(ValueError, match="unconditional"):
        run(world, tmp_path, settings(uncond, steps=2))
    with pytest.raises(ValueError, match="no embeddings"):
        run(world, tmp_path, settings(), embeddings=False)
    summary = run(world, tmp_path, settings(uncond, steps=2, checkpoint_every=2, keep_steps=[], preview_every=2,
                                            context_drop_probability=0.0), embeddings=False)
    assert math.isfinite(summary["last_loss"]) and (tmp_path / "out" / "previews" / "step_0000002.png").is_file()
    load_ddpm_checkpoint(tmp_path / "out" / "ema.ckpt", UNet(UNetConfig(**uncond)))


def test_batches_cover_each_epoch_once_and_depend_on_the_step_only():
    seen = torch.cat([ldm.batch_for_step(s, 10, 4, 0, True, 0.0)[0] for s in range(5)])  # 20 = two epochs
    assert sorted(seen[:10].tolist()) == list(range(10)) and sorted(seen[10:].tolist()) == list(range(10))
    a, b = ldm.batch_for_step(3, 10, 4, 0, True, 0.5), ldm.batch_for_step(3, 10, 4, 0, True, 0.5)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    flips = torch.cat([ldm.batch_for_step(s, 10, 64, 0, True, 0.0)[1] for s in range(20)]).float().mean()
    assert 0.4 < flips < 0.6
    assert not torch.cat([ldm.batch_for_step(s, 10, 64, 0, False, 0.0)[1] for s in range(3)]).any()


def test_ema_decay_follows_the_released_warmup_and_cap():
    assert ema_decay(0, 0.75, 0.9999) == 0.0 and ema_decay(1, 0.75, 0.9999) == 0.0
    assert ema_decay(2, 0.75, 0.9999) == pytest.approx(1 - 2 ** -0.75)
    assert ema_decay(10_001, 0.75, 0.9999) == pytest.approx(1 - 10_001 ** -0.75)
    assert ema_decay(10 ** 7, 0.75, 0.9999) == 0.9999
    model = torch.nn.Linear(3, 2)
    ema = make_ema(model)
    old = [p.detach().clone() for p in ema.parameters()]
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    update_ema(ema, model, 0.9)
    for e, o, p in zip(ema.parameters(), old, model.parameters()):
        torch.testing.assert_close(e, 0.9 * o + 0.1 * p)
    assert not any(p.requires_grad for p in ema.parameters()) and not ema.training


def test_settings_refuse_bad_batch_split(world, tmp_path):
    with pytest.raises(ValueError, match="divisible"):
        run(world, tmp_path, settings(global_batch_size=5))
    with pytest.raises(ValueError, match="missing setting"):
        ldm.ldm_settings({"unet": UNET_CA, "autoencoder": AUTOENCODER,
                          "diffusion": {"timesteps": 1000, "schedule": "linear"},
                          "training": {k: v for k, v in TRAINING.items() if k != "seed"}})


def test_measure_ldm_throughput_reports_a_rate():
    result = ldm.measure_ldm_throughput(UNetConfig(**UNET_CA), batch_size=2, steps=1, device="cpu")
    assert result["latents_per_s"] > 0
    assert result["parameters"] == sum(p.numel() for p in UNet(UNetConfig(**UNET_CA)).parameters())
