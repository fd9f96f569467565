"""The first stage as workflow steps: split a Lightning checkpoint, load the halves, train a small one,
and move images to and from the latent space.

The LDM `ffhq256` checkpoint (inside the latent-diffusion project's `ffhq.zip`) and a checkpoint
written by `train_autoencoder` share one layout, `{'state_dict': {'first_stage_model.<key>': ...}}`,
so one split rule turns either into the encoder and decoder files the rest of the workflow loads.
"""

from __future__ import annotations

import csv
import dataclasses
import importlib
import math
import os
import pickle
import time
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch.nn import functional as F

from .checkpoint import capture_rng, load_state, restore_rng, save_state
from .io import atomic_path, list_images, read_rgb
from .models.vq import VQConfig, VQDecoder, VQEncoder, VQModel
from .progress import progress
from .resume import StateFolder, images_key, settings_key
from .runtime import derive_seed, resolve_device, seed_everything, set_threads

PREFIX = "first_stage_model."
ENCODER_GROUPS = ("encoder.", "quant_conv.")
DECODER_GROUPS = ("decoder.", "quantize.embedding.", "post_quant_conv.")
LOSS_COLUMNS = ("step", "loss", "l1", "mse", "codebook", "commitment", "codes_used", "codes_reset", "seconds")
SOURCE_HINT = ("the LDM autoencoder is the first stage model in the latent-diffusion project's ffhq.zip "
               "(model.ckpt); the workflow's split rule turns it (or a checkpoint from train_autoencoder) "
               "into the encoder and decoder files")


@dataclass
class AutoencoderTrainSettings:
    """Training of the small embedded-world autoencoder (config subtree `autoencoder.train` + `model`)."""

    model: VQConfig
    steps: int
    batch_size: int
    crop_size: int
    lr: float
    lr_final: float
    adam_betas: list[float]
    seed: int
    checkpoint_every: int
    l1_weight: float
    mse_weight: float
    codebook_weight: float
    commitment_beta: float
    dead_code_reinit_every: int
    holdout_images: int

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1 or self.checkpoint_every < 1:
            raise ValueError("autoencoder training needs steps, batch_size and checkpoint_every >= 1")
        if self.crop_size < 1 or self.crop_size % self.model.downsampling:
            raise ValueError(f"autoencoder crop_size must be a positive multiple of the downsampling factor "
                             f"{self.model.downsampling}, got {self.crop_size}")
        if len(self.adam_betas) != 2:
            raise ValueError(f"adam_betas must be two numbers, got {self.adam_betas}")


# ----------------------------------------------------------------------------------------- safe load

class UnsafeCheckpointError(pickle.UnpicklingError):
    """A checkpoint asks to build an object outside the tensor/container allow-list."""


class _Inert:
    """Stands in for a Lightning/OmegaConf class (e.g. a callback type used as a dict key); runs no code."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args = args

    def __setstate__(self, state: Any) -> None:
        self.state = state


_SAFE_GLOBALS = {
    ("collections", "OrderedDict"), ("builtins", "set"), ("builtins", "frozenset"), ("_codecs", "encode"),
    ("torch", "Size"), ("torch", "device"), ("torch._utils", "_rebuild_tensor_v2"),
    ("torch._utils", "_rebuild_parameter"), ("torch._utils", "_rebuild_parameter_with_state"),
    ("numpy", "dtype"), ("numpy", "ndarray"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "scalar"),
}
# Training-framework objects a Lightning checkpoint carries beside the weights; we never need them.
_INERT_NAMESPACES = ("pytorch_lightning.", "lightning.", "lightning_fabric.", "omegaconf.")


class _RestrictedUnpickler(pickle.Unpickler):
    """Builds tensors, containers and numpy values only; never imports or calls anything else."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _SAFE_GLOBALS:
            if module.startswith("numpy.core") and hasattr(np, "_core"):  # numpy 2 renamed numpy.core
                module = module.replace("numpy.core", "numpy._core")
            return getattr(importlib.import_module(module), name)
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        if module == "numpy.dtypes" and name.endswith("DType"):
            return getattr(importlib.import_module(module), name)
        if module.startswith(_INERT_NAMESPACES):
            return type(name, (_Inert,), {"__module__": module})
        raise UnsafeCheckpointError(f"refusing to unpickle '{module}.{name}': not a tensor, container or "
                                    "numpy type (the file may run code when loaded by plain torch.load)")


_RESTRICTED_PICKLE = types.SimpleNamespace(
    __name__="idiff_restricted_pickle", Unpickler=_RestrictedUnpickler,
    load=lambda f, **kwargs: _RestrictedUnpickler(f, **kwargs).load())


def load_checkpoint_safely(path: str | os.PathLike) -> Any:
    """`torch.load(weights_only=True)`, falling back to an allow-list unpickler for Lightning extras."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} not found; {SOURCE_HINT}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        pass
    try:
        return torch.load(path, map_location="cpu", weights_only=False, pickle_module=_RESTRICTED_PICKLE)
    except UnsafeCheckpointError as err:
        raise UnsafeCheckpointError(f"{path}: {err}. Refusing to load it; obtain the checkpoint from a "
                                    "trusted source or re-save its state_dict as plain tensors.") from None


# --------------------------------------------------------------------------------- split and load

def split_checkpoint(ckpt_path: str | os.PathLike, encoder_out: str | os.PathLike,
                     decoder_out: str | os.PathLike) -> None:
    """Write the `first_stage_model.*` weights of a Lightning checkpoint as encoder and decoder files."""
    ckpt = load_checkpoint_safely(ckpt_path)
    state = ckpt.get("state_dict", ckpt) if isinstance(ckpt, Mapping) else None
    if not isinstance(state, Mapping):
        raise ValueError(f"{ckpt_path} holds a {type(ckpt).__name__}, not a checkpoint dict with a state_dict")
    stage = {k[len(PREFIX):]: v for k, v in state.items() if isinstance(k, str) and k.startswith(PREFIX)}
    if not stage:
        top = sorted(str(k) for k in ckpt) if isinstance(ckpt, Mapping) else []
        prefixes = sorted({str(k).split(".")[0] + "." for k in state})
        raise ValueError(f"{ckpt_path} has no '{PREFIX}*' weights (top-level keys {top}; state_dict key "
                         f"prefixes {prefixes}); {SOURCE_HINT}")
    for out, groups in ((encoder_out, ENCODER_GROUPS), (decoder_out, DECODER_GROUPS)):
        part = {k: stage[k].detach().clone() for g in groups for k in stage if k.startswith(g)}
        absent = [g for g in groups if not any(k.startswith(g) for k in part)]
        if absent:
            raise ValueError(f"{ckpt_path}: '{PREFIX}' weights lack the groups {absent} needed for {Path(out).name}")
        save_state(out, part)


def _load_part(cls: type[torch.nn.Module], path: str | os.PathLike, cfg: VQConfig, what: str) -> torch.nn.Module:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} file {path} not found; {SOURCE_HINT}")
    state = load_state(path)
    model = cls(cfg)
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(v.shape)}"
                  for k, v in expected.items() if k in state and tuple(state[k].shape) != tuple(v.shape)]
    if missing or unexpected or mismatched:
        raise ValueError(f"{what} file {path} does not fit the configured autoencoder {dataclasses.asdict(cfg)}: "
                         f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
                         f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}, "
                         f"shape mismatches {mismatched[:5]}; check the autoencoder model settings ({SOURCE_HINT})")
    model.load_state_dict(state, strict=True)
    return model.eval().requires_grad_(False)


def load_encoder(path: str | os.PathLike, model_settings: VQConfig) -> VQEncoder:
    """The split encoder file as an eval-mode `VQEncoder` (strict key and shape check)."""
    return _load_part(VQEncoder, path, model_settings, "encoder")


def load_decoder(path: str | os.PathLike, model_settings: VQConfig) -> VQDecoder:
    """The split decoder file as an eval-mode `VQDecoder` (strict key and shape check)."""
    return _load_part(VQDecoder, path, model_settings, "decoder")


# ------------------------------------------------------------------------------ images <-> latents

def _to_model_range(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 NHWC -> float32 NCHW in [-1, 1]."""
    x = torch.as_tensor(np.asarray(images) if not isinstance(images, torch.Tensor) else images)
    return x.permute(0, 3, 1, 2).float() / 127.5 - 1.0


def _to_uint8(x: torch.Tensor) -> np.ndarray:
    """float NCHW in ~[-1, 1] -> uint8 NHWC (clamp, map to [0, 1], round)."""
    x = ((x.clamp(-1.0, 1.0) + 1.0) / 2.0 * 255.0).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()


def encode_images(encoder: VQEncoder, images: np.ndarray | Sequence[str | os.PathLike], batch_size: int,
                  device: str | torch.device) -> torch.Tensor:
    """Pre-quantisation latents (float32, N x embed_dim x H/f x W/f, on CPU) of uint8 NHWC images or image files."""
    device = resolve_device(device) if isinstance(device, str) else device
    encoder = encoder.to(device).eval()
    is_paths = not isinstance(images, (np.ndarray, torch.Tensor))
    out = []
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            chunk = images[start:start + batch_size]
            if is_paths:
                chunk = np.stack([read_rgb(p) for p in chunk])
            out.append(encoder(_to_model_range(chunk).to(device)).float().cpu())
    if not out:
        raise ValueError("encode_images got no images")
    return torch.cat(out)


def decode_latents(decoder: VQDecoder, latents: torch.Tensor, batch_size: int,
                   device: str | torch.device) -> np.ndarray:
    """uint8 NHWC images of latents (quantised first, as when sampling)."""
    if not len(latents):
        raise ValueError("decode_latents got no latents")
    device = resolve_device(device) if isinstance(device, str) else device
    decoder = decoder.to(device).eval()
    with torch.inference_mode():
        return np.concatenate([_to_uint8(decoder(latents[s:s + batch_size].to(device).float()))
                               for s in range(0, len(latents), batch_size)])


def codebook_range(decoder: VQDecoder) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel (low, high) of the decoder's codebook, shaped (1, C, 1, 1): the box every latent is
    quantised into on decoding, and so where a sampler may clip its clean-latent predictions."""
    codes = decoder.quantize.embedding.weight.detach()
    return codes.min(0).values.view(1, -1, 1, 1), codes.max(0).values.view(1, -1, 1, 1)


# ---------------------------------------------------------------------------------------- training

def _load_image_folder(image_dir: str | os.PathLike, side_multiple: int) -> tuple[list[Path], torch.Tensor]:
    """All images of a folder as one uint8 NHWC tensor; they must share one size divisible by the factor."""
    paths = list_images(image_dir)
    if not paths:
        raise ValueError(f"no images found in {image_dir}")
    arrays = [read_rgb(p) for p in paths]
    shapes = sorted({a.shape for a in arrays})
    if len(shapes) != 1 or shapes[0][0] % side_multiple or shapes[0][1] % side_multiple:
        raise ValueError(f"autoencoder training needs images of one size divisible by {side_multiple}; "
                         f"{image_dir} has sizes {shapes[:5]}")
    return paths, torch.from_numpy(np.stack(arrays))


def _random_crops(images: torch.Tensor, size: int) -> torch.Tensor:
    """One size x size window per uint8 NHWC image, at a position drawn from the global torch generator."""
    n, height, width = images.shape[:3]
    tops = torch.randint(height - size + 1, (n,)).tolist()
    lefts = torch.randint(width - size + 1, (n,)).tolist()
    return torch.stack([image[t:t + size, l:l + size] for image, t, l in zip(images, tops, lefts)])


def _lr_at(settings: AutoencoderTrainSettings, step: int) -> float:
    """Cosine decay from `lr` to `lr_final` over the run."""
    progress_frac = (step - 1) / max(1, settings.steps - 1)
    return settings.lr_final + 0.5 * (settings.lr - settings.lr_final) * (1.0 + math.cos(math.pi * progress_frac))


def _write_loss_csv(path: str | os.PathLike, rows: list[list[float]]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(LOSS_COLUMNS)
        for row in rows:
            writer.writerow([int(row[0])] + [f"{v:.6g}" for v in row[1:6]] + [int(row[6]), int(row[7]), f"{row[8]:.2f}"])


def reconstruction_error(model: VQModel, images: torch.Tensor, batch_size: int, device: torch.device) -> dict[str, float]:
    """Mean squared error (images scaled to [0, 1], after uint8 rounding) and PSNR of quantised reconstructions."""
    model.eval()
    squared, count = 0.0, 0
    with torch.inference_mode():
        for s in range(0, len(images), batch_size):
            chunk = images[s:s + batch_size]
            recon = _to_uint8(model(_to_model_range(chunk).to(device)).reconstruction)
            diff = (recon.astype(np.float64) - chunk.numpy().astype(np.float64)) / 255.0
            squared += float((diff ** 2).sum())
            count += diff.size
    mse = squared / count
    return {"images": len(images), "mse": mse, "psnr_db": 10.0 * math.log10(1.0 / max(mse, 1e-12))}


def train_autoencoder(image_dir: str | os.PathLike, out_ckpt: str | os.PathLike, loss_csv: str | os.PathLike,
                      state_dir: str | os.PathLike, settings: AutoencoderTrainSettings, *, threads: int,
                      device: str) -> dict[str, float]:
    """Train a VQ autoencoder on a folder of faces; write it as a Lightning-layout checkpoint.

    Each step trains on a random `crop_size` window of every batch image (the network is convolutional,
    so it then encodes and decodes whole images; small crops make a step several times cheaper).
    Loss: weighted L1 + MSE reconstruction, codebook and commitment terms (no perceptual/GAN terms,
    which would need downloads). The codebook is seeded from the first batch's latents, and codes
    unused for `dead_code_reinit_every` steps are re-seeded from the current batch's latents. Resumes from `state_dir` after a kill, bit-identically on CPU. Returns the
    reconstruction error on `holdout_images` images never trained on (also stored in the checkpoint).
    """
    set_threads(threads)
    dev = resolve_device(device)
    cfg = settings.model
    paths, images = _load_image_folder(image_dir, cfg.downsampling)
    if settings.crop_size > min(images.shape[1:3]):
        raise ValueError(f"autoencoder crop_size {settings.crop_size} exceeds the {images.shape[1]}x{images.shape[2]} "
                         f"images of {image_dir}; use at most the image side (which means no crop)")
    if len(images) <= settings.holdout_images:
        raise ValueError(f"{image_dir} has {len(images)} images; need more than holdout_images={settings.holdout_images}")
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(derive_seed(settings.seed, "ae-holdout")))
    holdout, train = images[order[:settings.holdout_images]], images[order[settings.holdout_images:]]

    seed_everything(derive_seed(settings.seed, "autoencoder"))
    model = VQModel(cfg).to(dev)
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.lr, betas=tuple(settings.adam_betas))
    usage = torch.zeros(cfg.n_embed, dtype=torch.long)
    rows: list[list[float]] = []
    step, seconds_before = 0, 0.0
    key = {"settings": settings_key(settings), "images": images_key(image_dir, paths)}
    state_path = StateFolder(state_dir, key, "autoencoder").open() / "autoencoder_state.pt"
    if state_path.is_file():
        state = load_state(state_path)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        usage, rows, step, seconds_before = state["usage"], state["rows"], state["step"], state["seconds"]
        restore_rng(state["rng"])

    start_time = time.monotonic()
    bar = progress(total=settings.steps, desc="autoencoder", unit="step")
    bar.update(step)
    model.train()
    while step < settings.steps:
        step += 1
        for group in optimizer.param_groups:
            group["lr"] = _lr_at(settings, step)
        batch = _random_crops(train[torch.randint(len(train), (settings.batch_size,))], settings.crop_size)
        flip = torch.rand(settings.batch_size) < 0.5
        batch[flip] = batch[flip].flip(2)
        x = _to_model_range(batch).to(dev)
        out = model(x)
        l1 = F.l1_loss(out.reconstruction, x)
        mse = F.mse_loss(out.reconstruction, x)
        loss = (settings.l1_weight * l1 + settings.mse_weight * mse + settings.codebook_weight * out.codebook_loss
                + settings.commitment_beta * out.commitment_loss)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

        usage += torch.bincount(out.indices.flatten().cpu(), minlength=cfg.n_embed)
        reset = 0
        # step 1 seeds the codebook from data; later, codes unused since the last check are re-seeded
        if settings.dead_code_reinit_every and (step == 1 or step % settings.dead_code_reinit_every == 0):
            dead = (usage == 0).nonzero().flatten()
            reset = len(dead)
            if reset:
                latents = out.latent.detach().permute(0, 2, 3, 1).reshape(-1, cfg.embed_dim)
                with torch.no_grad():
                    model.quantize.embedding.weight[dead.to(dev)] = latents[torch.randint(len(latents), (reset,)).to(dev)]
            usage.zero_()
        seconds = seconds_before + time.monotonic() - start_time
        rows.append([step, loss.item(), l1.item(), mse.item(), out.codebook_loss.item(), out.commitment_loss.item(),
                     len(out.indices.unique()), reset, seconds])
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.4f}", codes=rows[-1][6], refresh=False)

        if step % settings.checkpoint_every == 0 or step == settings.steps:
            save_state(state_path, {"model": model.state_dict(),
                                    "optimizer": optimizer.state_dict(), "usage": usage, "rows": rows,
                                    "step": step, "seconds": seconds, "rng": capture_rng()})
            _write_loss_csv(loss_csv, rows)
    bar.close()

    metrics = reconstruction_error(model, holdout, settings.batch_size, dev) if len(holdout) else {}
    save_state(out_ckpt, {"state_dict": {PREFIX + k: v.detach().cpu() for k, v in model.state_dict().items()},
                          "epoch": 0, "global_step": step, "holdout_reconstruction": metrics})
    _write_loss_csv(loss_csv, rows)
    return metrics
