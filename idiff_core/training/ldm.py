"""Training of the IDiff-Face latent diffusion model (LDM) on precomputed VQ latents.

The VQ encoder is frozen, so every training image was encoded once, as itself and as its horizontal
flip, into the latents file every generator shares (`latents.encode_latents`, rule encode_latents).
Training only touches the UNet: DDPM epsilon-MSE, Adam, cosine annealing with warm restarts stepped every
iteration, an EMA copy, optional mixed precision, gradient accumulation and data parallelism
(`idiff_core.distributed`, one process per GPU): the global batch is split over the processes.

Resume is exact: each step's batch (which images, which flips, which contexts are dropped) is a
function of (seed, step) alone, and its diffusion noise and the model's dropout draws are seeded from
(seed, step, micro-batch position in the global batch), so a run restarted from a checkpoint produces
the same losses and weights as one that never stopped (bitwise on CPU), and runs with the same
micro-batch size draw the same noise however the global batch is split over processes.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import shutil
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ..autoencoder import codebook_range, decode_latents, load_decoder
from ..checkpoint import load_state, save_state
from ..diffusion.samplers import make_eps_fn, sample
from ..diffusion.schedule import DiffusionSchedule, DiffusionSettings, ddpm_checkpoint_state
from ..distributed import ProcessGroup, process_group
from ..io import atomic_path, load_matrix, write_image_grid
from ..models.unet import UNet, UNetConfig
from ..models.vq import VQConfig
from ..progress import progress
from ..resume import StateFolder, file_key
from ..runtime import derive_seed, set_threads
from ..settings import settings_from_dict
from .ema import ema_decay, make_ema, update_ema
from .latents import examples, load_latents, training_images

PRECISIONS = ("fp32", "bf16", "fp16")
LOSS_COLUMNS = ("step", "loss", "lr", "ema_decay", "seconds", "latents_per_s")
CHECKPOINT_FILE = "checkpoint.pt"
LOSS_FILE = "loss.csv"
PREVIEW_DIR = "previews"
KEPT_DIR = "kept"


# ------------------------------------------------------------------------------------------------
# settings

@dataclasses.dataclass(frozen=True)
class LdmTrainingSettings:
    """Optimisation, logging and checkpointing of the LDM trainer (see the report for each key)."""

    steps: int
    global_batch_size: int
    accumulation_steps: int
    learning_rate: float
    lr_cycle_steps: int
    lr_cycle_mult: int
    ema_power: float
    ema_cap: float
    precision: str
    random_flip: bool
    context_drop_probability: float
    seed: int
    checkpoint_every: int
    keep_steps: list[int]
    preview_every: int
    preview_count: int
    preview_sampling_steps: int


@dataclasses.dataclass(frozen=True)
class LdmSettings:
    """The UNet (the released config's names), the autoencoder's model config (to load the decoder
    file for previews), the diffusion process and the training settings."""

    unet: UNetConfig
    autoencoder: VQConfig
    diffusion: DiffusionSettings
    training: LdmTrainingSettings


def ldm_settings(values: Mapping[str, Any]) -> LdmSettings:
    """Build `LdmSettings` from `{unet: {...}, autoencoder: {...}, diffusion: {...}, training: {...}}`."""
    return settings_from_dict(LdmSettings, values, "ldm")


def _check_settings(tr: LdmTrainingSettings, world: int) -> None:
    problems = []
    if tr.precision not in PRECISIONS:
        problems.append(f"precision must be one of {PRECISIONS}, got {tr.precision!r}")
    for name in ("steps", "global_batch_size", "accumulation_steps", "learning_rate", "lr_cycle_steps",
                 "lr_cycle_mult", "checkpoint_every"):
        if not getattr(tr, name) > 0:
            problems.append(f"{name} must be > 0, got {getattr(tr, name)}")
    if tr.global_batch_size % (world * tr.accumulation_steps):
        problems.append(f"global_batch_size {tr.global_batch_size} must be divisible by processes ({world}) x "
                        f"accumulation_steps ({tr.accumulation_steps})")
    if not 0.0 <= tr.context_drop_probability < 1.0:
        problems.append(f"context_drop_probability must be in [0, 1), got {tr.context_drop_probability}")
    if not 0.0 <= tr.ema_cap < 1.0:
        problems.append(f"ema_cap must be in [0, 1), got {tr.ema_cap}")
    if tr.preview_every < 0 or (tr.preview_every and (tr.preview_count < 1 or tr.preview_sampling_steps < 1)):
        problems.append("preview_every must be >= 0 (0 = no previews); with previews, preview_count and "
                        "preview_sampling_steps must be >= 1")
    if problems:
        raise ValueError("invalid LDM training settings: " + "; ".join(problems))


def _log(message: str) -> None:
    print(f"[ldm] {message}", file=sys.stderr, flush=True)


class NonFiniteLoss(RuntimeError):
    """The training loss became NaN or infinite: the run stops instead of corrupting its checkpoints."""


# ------------------------------------------------------------------------------------------------
# data: images matched to embeddings

@dataclasses.dataclass
class TrainingSet:
    """Training images (name = file stem, sorted) and, for conditional models, their (N, 512) contexts."""

    names: list[str]
    paths: list[Path]
    contexts: torch.Tensor | None


def load_training_set(image_dir: str | os.PathLike, embeddings_npz: str | os.PathLike | None) -> TrainingSet:
    """List the flat image folder and match every image to its embedding row by name.

    Every image must have an embedding and every embedding an image: a mismatch means the embeddings
    were computed for another folder, and training on a subset would silently change the data.
    """
    root = Path(image_dir)
    names, paths = training_images(root)
    if embeddings_npz is None:
        _log(f"training set: {len(names)} images from {root} (unconditional, no embeddings)")
        return TrainingSet(names, paths, None)
    emb_names, matrix, _ = load_matrix(embeddings_npz)
    row_of = {name: i for i, name in enumerate(emb_names)}
    if len(row_of) != len(emb_names):
        raise ValueError(f"{embeddings_npz} lists some names more than once; recompute the embeddings")
    without_embedding = [n for n in names if n not in row_of]
    image_set = set(names)
    without_image = [n for n in emb_names if n not in image_set]
    if without_embedding or without_image:
        raise ValueError(
            f"images and embeddings do not match: {root} has {len(names)} images, {embeddings_npz} has "
            f"{len(emb_names)} embeddings; {len(without_embedding)} images have no embedding "
            f"({examples(without_embedding)}) and {len(without_image)} embeddings have no image "
            f"({examples(without_image)}). Recompute the embeddings for exactly this image folder.")
    contexts = torch.from_numpy(matrix[[row_of[n] for n in names]])
    if not torch.isfinite(contexts).all():
        bad = [names[i] for i in torch.nonzero(~torch.isfinite(contexts).all(dim=1)).flatten().tolist()]
        raise ValueError(f"{embeddings_npz} has non-finite values for {examples(bad)}")
    _log(f"training set: {len(names)} images matched to {len(emb_names)} embeddings")
    return TrainingSet(names, paths, contexts)


@functools.lru_cache(maxsize=4)
def _epoch_order(n_items: int, seed: int, epoch: int) -> torch.Tensor:
    return torch.randperm(n_items, generator=torch.Generator().manual_seed(derive_seed(seed, "ldm-epoch", epoch)))


def batch_for_step(step: int, n_items: int, global_batch: int, seed: int, random_flip: bool,
                   drop_probability: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The global batch of optimizer step `step`: (item indices, flip flags, whole-context drop flags).

    Items are drawn without replacement through a seeded permutation per epoch, and the positions of
    step s are [s*B, (s+1)*B) of the endless sequence of epochs: a function of the step alone, which
    is what makes resume exact and the data independent of how the batch is split over processes.
    """
    positions = torch.arange(step * global_batch, (step + 1) * global_batch)
    epochs = positions // n_items
    indices = torch.empty(global_batch, dtype=torch.long)
    for epoch in epochs.unique().tolist():
        chosen = epochs == epoch
        indices[chosen] = _epoch_order(n_items, seed, epoch)[positions[chosen] % n_items]
    gen = torch.Generator().manual_seed(derive_seed(seed, "ldm-batch", step))
    flips = torch.rand(global_batch, generator=gen) < 0.5
    drops = torch.rand(global_batch, generator=gen) < drop_probability
    return indices, flips & random_flip, drops


# ------------------------------------------------------------------------------------------------
# one training process: model, EMA, optimizer, lr schedule, grad scaler

def _autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    if precision == "fp32":
        return None
    if device.type != "cuda":
        _log(f"precision {precision} requested on {device}: training in fp32 (mixed precision is CUDA-only here)")
        return None
    return torch.bfloat16 if precision == "bf16" else torch.float16


class _Trainer:
    """The state a training process updates each step, and the step itself."""

    def __init__(self, unet_config: UNetConfig, schedule: DiffusionSchedule, *, learning_rate: float,
                 lr_cycle_steps: int, lr_cycle_mult: int, ema_power: float, ema_cap: float, precision: str,
                 init_seed: int, device: torch.device, world: int):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(init_seed)
            self.model = UNet(unet_config)
        self.model.to(device).train()
        self.ema = make_ema(self.model)
        self.schedule = schedule.to(device)
        self.device = device
        self.ddp = DistributedDataParallel(self.model, device_ids=[device] if device.type == "cuda" else None) \
            if world > 1 else None
        self.world = world
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=learning_rate)
        self.lr_schedule = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(
            self.optimizer, T_0=lr_cycle_steps, T_mult=lr_cycle_mult)
        self.autocast_dtype = _autocast_dtype(precision, device)
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.autocast_dtype == torch.float16)
        self.ema_power, self.ema_cap = ema_power, ema_cap

    def accumulate(self, micro_batches: Sequence[tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]],
                   seeds: Sequence[int]) -> float:
        """Forward and backward over the micro-batches; returns the batch's mean loss over all processes.

        `seeds[i]` seeds micro-batch i's diffusion noise and the model's dropout draws.
        """
        self.optimizer.zero_grad(set_to_none=True)
        net = self.ddp or self.model
        total = torch.zeros((), device=self.device)
        for i, ((x0, context, drop_mask), seed) in enumerate(zip(micro_batches, seeds)):
            last = i == len(micro_batches) - 1
            sync = nullcontext() if (self.ddp is None or last) else self.ddp.no_sync()
            torch.manual_seed(derive_seed(seed, "dropout"))
            generator = torch.Generator().manual_seed(seed)
            with sync:
                with torch.autocast(self.device.type, dtype=self.autocast_dtype or torch.float32,
                                    enabled=self.autocast_dtype is not None):
                    loss = self.schedule.training_loss(net, x0, context, generator=generator, dropout_mask=drop_mask)
                self.scaler.scale(loss / len(micro_batches)).backward()
            total += loss.detach().float()
        total /= len(micro_batches)
        if self.world > 1:
            dist.all_reduce(total)
            total /= self.world
        return float(total)

    def apply(self, step: int) -> tuple[float, float]:
        """Optimizer, lr-schedule and EMA updates of optimizer step `step`; returns (lr used, EMA decay)."""
        lr = self.lr_schedule.get_last_lr()[0]
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.lr_schedule.step()
        decay = ema_decay(step, self.ema_power, self.ema_cap)
        update_ema(self.ema, self.model, decay)
        return lr, decay

    def state(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "ema": self.ema.state_dict(),
                "optimizer": self.optimizer.state_dict(), "lr_schedule": self.lr_schedule.state_dict(),
                "scaler": self.scaler.state_dict()}

    def load(self, state: Mapping[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.ema.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.lr_schedule.load_state_dict(state["lr_schedule"])
        if state["scaler"]:  # empty when saved by a disabled scaler (fp32, bf16, or fp16 on CPU)
            self.scaler.load_state_dict(state["scaler"])


def _make_schedule(diffusion: DiffusionSettings) -> DiffusionSchedule:
    return DiffusionSchedule.create(diffusion.timesteps, diffusion.schedule)


def measure_ldm_throughput(unet_config: UNetConfig, batch_size: int, steps: int,
                           device: str | torch.device, precision: str = "fp32",
                           latent_size: int = 32) -> dict[str, Any]:
    """Latents/s of the trainer's real optimizer step (loss, backward, Adam, lr schedule, EMA),
    timed over `steps` steps after one warm-up step, on random latents and contexts.

    It includes the optimizer, the EMA update and mixed precision, i.e. what a training step costs.
    """
    device = torch.device(device)
    trainer = _Trainer(unet_config, _make_schedule(DiffusionSettings(1000, "linear")), learning_rate=1e-4,
                       lr_cycle_steps=10_000, lr_cycle_mult=2, ema_power=0.75, ema_cap=0.9999,
                       precision=precision, init_seed=0, device=device, world=1)
    gen = torch.Generator().manual_seed(0)
    x0 = torch.randn(batch_size, unet_config.input_channels, latent_size, latent_size, generator=gen).to(device)
    context = None
    if unet_config.is_context_conditional:
        context = nn.functional.normalize(torch.randn(batch_size, unet_config.context_input_channels,
                                                      generator=gen), dim=1).to(device)

    def one_step(step: int) -> None:
        trainer.accumulate([(x0, context, None)], [step])
        trainer.apply(step)

    one_step(0)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for step in range(1, steps + 1):
        one_step(step)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elapsed = time.perf_counter() - start
    return {"device": str(device), "precision": precision, "batch_size": batch_size, "steps": steps,
            "latent_size": latent_size,
            "parameters": sum(p.numel() for p in trainer.model.parameters()), "threads": torch.get_num_threads(),
            "seconds_per_step": elapsed / steps, "latents_per_s": batch_size * steps / elapsed}


# ------------------------------------------------------------------------------------------------
# logging, previews, checkpoints

class _LossLog:
    """`loss.csv` in the state dir; on resume, rows of steps that will be redone are dropped first."""

    def __init__(self, path: Path, start_step: int):
        self.path = path
        kept = []
        if start_step > 0 and path.exists():
            rows = [line.split(",") for line in path.read_text().splitlines()[1:]]
            kept = [",".join(r) for r in rows if len(r) == len(LOSS_COLUMNS) and int(r[0]) < start_step]
        with atomic_path(path) as tmp:
            tmp.write_text("\n".join([",".join(LOSS_COLUMNS), *kept]) + "\n")
        self.handle = open(path, "a")

    def write(self, step: int, loss: float, lr: float, decay: float, seconds: float, rate: float) -> None:
        self.handle.write(f"{step},{loss!r},{lr!r},{decay!r},{seconds:.3f},{rate:.2f}\n")
        self.handle.flush()

    def close(self) -> None:
        self.handle.close()


class _Preview:
    """DDIM samples of the EMA model for fixed noise and fixed training contexts, decoded to a grid.

    Clean-latent predictions are clipped to the codebook's range (`clip_eps`), so the grid shows
    what the model has learnt from the first previews on rather than its early large-t error.
    """

    def __init__(self, decoder_path: str | os.PathLike, autoencoder: VQConfig, contexts: torch.Tensor | None,
                 count: int, latent_shape: Sequence[int], sampling_steps: int, seed: int, device: torch.device):
        self.decoder = load_decoder(decoder_path, autoencoder)
        self.x0_range = codebook_range(self.decoder)
        self.contexts = None if contexts is None else contexts[:count].to(device)
        count = count if contexts is None else len(self.contexts)
        self.x_T = torch.randn((count, *latent_shape),
                               generator=torch.Generator().manual_seed(derive_seed(seed, "ldm-preview"))).to(device)
        self.sampling_steps, self.device = sampling_steps, device

    @torch.no_grad()
    def write(self, path: Path, ema: nn.Module, schedule: DiffusionSchedule) -> None:
        latents = sample(make_eps_fn(ema, self.contexts), self.x_T, schedule, method="ddim",
                         steps=self.sampling_steps, eta=0.0, x0_range=self.x0_range)
        images = list(decode_latents(self.decoder, latents, batch_size=len(latents), device=self.device))
        write_image_grid([images[i:i + 8] for i in range(0, len(images), 8)], path)


def _state_key(settings: LdmSettings, data_key: str, contexts_key: str) -> dict[str, Any]:
    """What a checkpoint must agree on to be resumed by these settings and data (the latents' key and
    the embeddings file's digest, which a retrained embedder changes)."""
    tr = settings.training
    return {"unet": dataclasses.asdict(settings.unet), "diffusion": dataclasses.asdict(settings.diffusion),
            "data": data_key, "contexts": contexts_key, "seed": tr.seed, "global_batch_size": tr.global_batch_size,
            "random_flip": tr.random_flip, "context_drop_probability": tr.context_drop_probability,
            # the lr schedule's state (base lr, cycle) is restored from the checkpoint, so a change
            # would be silently ignored: refuse it instead
            "learning_rate": tr.learning_rate, "lr_cycle_steps": tr.lr_cycle_steps, "lr_cycle_mult": tr.lr_cycle_mult}


def _resume(trainer: _Trainer, work: Path) -> tuple[int, float]:
    """Load the latest checkpoint of these settings and data if there is one: (steps done, training
    seconds so far)."""
    path = work / CHECKPOINT_FILE
    if not path.exists():
        return 0, 0.0
    state = load_state(path, map_location=trainer.device)
    trainer.load(state)
    _log(f"resumed from {path} at step {state['step']}")
    return int(state["step"]), float(state["seconds"])


# ------------------------------------------------------------------------------------------------
# the stage

@dataclasses.dataclass(frozen=True)
class LdmOutputs:
    """Where `train_ldm` writes: the EMA and raw weights (released DDPM layout), the loss log, the
    preview grids and the EMA copies of `keep_steps` (`ema_step<N>.ckpt`)."""

    ema: Path
    model: Path
    losses: Path
    previews: Path
    kept: Path

    @classmethod
    def in_folder(cls, folder: str | os.PathLike) -> "LdmOutputs":
        """The workflow's layout: `ema.ckpt`, `model.ckpt`, `loss.csv`, `previews/`, `kept/` in one folder."""
        folder = Path(folder)
        return cls(folder / "ema.ckpt", folder / "model.ckpt", folder / LOSS_FILE, folder / PREVIEW_DIR,
                   folder / KEPT_DIR)


def train_ldm(image_dir: str | os.PathLike, embeddings_npz: str | os.PathLike | None,
              latents_path: str | os.PathLike, decoder_path: str | os.PathLike, outputs: LdmOutputs,
              state_dir: str | os.PathLike, settings: LdmSettings, *, threads: int, device: str) -> dict[str, Any]:
    """Train (or resume training) the LDM on the latents `encode_latents` wrote for `image_dir`; write
    `outputs`.

    Resumable state (checkpoint, loss log, previews) lives in the folder of these settings and data
    under `state_dir` (`resume.StateFolder`), which must outlive failed jobs. Returns a summary: steps, the step it resumed from, last loss, training
    seconds, latents/s of the steps run by this call, number of images.
    """
    set_threads(threads)
    with process_group(device) as procs:
        return _train(Path(image_dir), embeddings_npz, Path(latents_path), Path(decoder_path), outputs,
                      Path(state_dir), settings, procs)


def _micro_batches(step: int, latents: torch.Tensor, contexts: torch.Tensor | None, tr: LdmTrainingSettings,
                   procs: ProcessGroup
                   ) -> tuple[list[tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]], list[int]]:
    """This process's share of step `step`'s global batch, cut into `accumulation_steps` micro-batches
    of (latents, contexts, whole-context drop mask), and the seed of each micro-batch's noise."""
    indices, flips, drops = batch_for_step(step, len(latents), tr.global_batch_size, tr.seed, tr.random_flip,
                                           tr.context_drop_probability)
    share = tr.global_batch_size // procs.world_size
    micro = share // tr.accumulation_steps
    batches, seeds = [], []
    for m in range(tr.accumulation_steps):
        part = slice(procs.rank * share + m * micro, procs.rank * share + (m + 1) * micro)
        idx = indices[part].to(procs.device)
        x0 = latents[idx, flips[part].long().to(procs.device)]
        context = None if contexts is None else contexts[idx]
        drop = drops[part].to(procs.device) if contexts is not None and tr.context_drop_probability > 0 else None
        batches.append((x0, context, drop))
        seeds.append(derive_seed(tr.seed, "ldm-noise", step, procs.rank * tr.accumulation_steps + m))
    return batches, seeds


def _train(image_dir: Path, embeddings_npz: str | os.PathLike | None, latents_path: Path, decoder_path: Path,
           outputs: LdmOutputs, state_dir: Path, settings: LdmSettings, procs: ProcessGroup) -> dict[str, Any]:
    tr = settings.training
    _check_settings(tr, procs.world_size)
    conditional = settings.unet.is_context_conditional
    if conditional and embeddings_npz is None:
        raise ValueError("the UNet is context-conditional (is_context_conditional: true) but no embeddings "
                         "file was given; pass the training embeddings or train an unconditional UNet")
    if not conditional and embeddings_npz is not None:
        raise ValueError("embeddings were given but the UNet is unconditional (is_context_conditional: false)")
    data = load_training_set(image_dir, embeddings_npz)
    latents, data_key = load_latents(latents_path, data.names, data.paths)
    latents = latents.to(procs.device)
    contexts = None if data.contexts is None else data.contexts.to(procs.device)

    trainer = _Trainer(settings.unet, _make_schedule(settings.diffusion), learning_rate=tr.learning_rate,
                       lr_cycle_steps=tr.lr_cycle_steps, lr_cycle_mult=tr.lr_cycle_mult, ema_power=tr.ema_power,
                       ema_cap=tr.ema_cap, precision=tr.precision, init_seed=derive_seed(tr.seed, "ldm-init"),
                       device=procs.device, world=procs.world_size)
    folder = StateFolder(state_dir, _state_key(settings, data_key, file_key(embeddings_npz)), "LDM training")
    work = folder.open() if procs.is_main else folder.path
    procs.barrier()
    checkpoint = work / CHECKPOINT_FILE
    start, seconds = _resume(trainer, work)
    saved_step = start
    log = _LossLog(work / LOSS_FILE, start) if procs.is_main else None
    preview = None
    if procs.is_main and tr.preview_every:
        preview = _Preview(decoder_path, settings.autoencoder, contexts, tr.preview_count, latents.shape[2:],
                           tr.preview_sampling_steps, tr.seed, procs.device)

    n_items = len(data.names)
    loss, session_latents, session_seconds = float("nan"), 0, 0.0
    bar = (progress(total=tr.steps - start, desc=f"LDM steps {start}->{tr.steps}", unit="step")
           if procs.is_main else None)
    try:
        for step in range(start, tr.steps):
            began = time.perf_counter()
            loss = trainer.accumulate(*_micro_batches(step, latents, contexts, tr, procs))
            if not math.isfinite(loss):
                last = f"{checkpoint} (step {saved_step})" if saved_step else "none yet"
                raise NonFiniteLoss(f"training loss is {loss} at step {step}; stopped before updating the weights. "
                                    f"Last good checkpoint: {last}. Lower the learning rate or use fp32/bf16 "
                                    f"precision, then rerun to resume from that checkpoint.")
            lr, decay = trainer.apply(step)
            step_seconds = time.perf_counter() - began
            rate = tr.global_batch_size / step_seconds
            session_latents, session_seconds = session_latents + tr.global_batch_size, session_seconds + step_seconds
            done = step + 1
            if procs.is_main:
                log.write(step, loss, lr, decay, seconds + step_seconds, rate)
                if preview is not None and done % tr.preview_every == 0:
                    preview.write(work / PREVIEW_DIR / f"step_{done:07d}.png", trainer.ema, trainer.schedule)
                if done in tr.keep_steps:
                    save_state(work / KEPT_DIR / f"ema_step{done}.ckpt",
                               ddpm_checkpoint_state(trainer.ema, trainer.schedule))
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}", latents_per_s=f"{rate:.1f}", refresh=False)
            seconds += time.perf_counter() - began
            if done % tr.checkpoint_every == 0 or done == tr.steps:
                if procs.is_main:
                    save_state(checkpoint, {"step": done, "seconds": seconds, **trainer.state()})
                saved_step = done
                procs.barrier()
    finally:
        if procs.is_main:
            bar.close()
            log.close()

    if procs.is_main:
        _write_outputs(outputs, work, trainer)
    procs.barrier()
    return {"steps": tr.steps, "resumed_from": start, "last_loss": loss, "seconds": seconds,
            "latents_per_s": session_latents / session_seconds if session_seconds else 0.0, "images": n_items}


def _write_outputs(outputs: LdmOutputs, work: Path, trainer: _Trainer) -> None:
    """The released-layout checkpoints, the loss log, the previews and the kept EMA copies."""
    for folder in (outputs.ema.parent, outputs.model.parent, outputs.previews, outputs.kept):
        folder.mkdir(parents=True, exist_ok=True)  # the folders exist even when empty (declared outputs)
    save_state(outputs.model, ddpm_checkpoint_state(trainer.model, trainer.schedule))
    save_state(outputs.ema, ddpm_checkpoint_state(trainer.ema, trainer.schedule))
    copies = [(work / LOSS_FILE, outputs.losses)]
    copies += [(p, outputs.previews / p.name) for p in sorted((work / PREVIEW_DIR).glob("*.png"))]
    copies += [(p, outputs.kept / p.name) for p in sorted((work / KEPT_DIR).glob("*.ckpt"))]
    for source, target in copies:
        with atomic_path(target) as tmp:
            shutil.copyfile(source, tmp)
