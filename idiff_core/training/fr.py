"""Face-recognition training on an ImageFolder (the paper's USynthFace setup: iresnet + CosFace).

Resumable at step granularity: the full training state (model, head, optimizer, scheduler, AMP
scaler, counters, best backbone, RNG) is saved atomically to `state_dir` after every epoch and every
`checkpoint_every_steps` steps, and a restart continues from it. On CPU a resumed run reproduces an
uninterrupted one exactly: batches come from a seeded per-epoch permutation (skipped up to the
resume step), each sample's augmentation from a generator seeded by (seed, epoch, sample index),
and dropout from the global RNG that is checkpointed.

Validation shares no identity with the test benchmarks: the LAST `val_identities` identity folders
(in sorted order) are held out; training identities are the first `width` of the rest. Pairs are all
genuine pairs plus as many seeded random impostor pairs, scored by the insightface 10-fold protocol
on flip-sum embeddings. Multi-GPU (`idiff_core.distributed`): `batch_size` is per process, the
global batch is batch_size x processes and the lr scales with it; each rank takes its slice of
every global batch, and rank 0 alone validates, checkpoints and writes.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from ..augment import RandAugmentSpec, augment_face
from ..checkpoint import capture_rng, load_state, restore_rng, save_state
from ..config import MIN_VAL_GENUINE_PAIRS, MIN_VAL_IDENTITIES
from ..distributed import ProcessGroup, process_group
from ..embeddings import INPUT_SIZE, embed_images, resize_pixels
from ..io import atomic_path, list_images, read_rgb
from ..models.heads import MarginHead
from ..models.iresnet import iresnet
from ..progress import progress
from ..resume import StateFolder, images_key
from ..runtime import derive_seed, resolve_device, seed_everything, set_threads

STATE_FILE = "fr_state.pt"
PRELOAD_BYTES = 1 << 30  # training sets up to 1 GiB of decoded faces are held in memory (see FaceTrainingSet)
METRICS_COLUMNS = ("epoch", "lr", "train_loss", "train_accuracy", "val_accuracy", "seconds", "images_per_second")


@dataclass
class FRTrainingSettings:
    """Every knob of FR training; the report lists meanings, tiny values and the paper's values."""

    seed: int
    arch: str | list[int]
    num_features: int
    base_width: int
    input_size: int
    dropout: float
    head: str
    margin_s: float
    margin_m: float
    width: int | None
    depth: int | None
    val_identities: int
    batch_size: int
    base_lr: float
    momentum: float
    weight_decay: float
    grad_clip_norm: float
    lr_schedule: str
    lr_decay_factor: float
    plateau_patience: int
    early_stop_patience: int
    lr_milestones: list[int]
    max_epochs: int
    randaugment: bool
    randaugment_num_ops: int
    randaugment_magnitude_bins: int
    randaugment_max_magnitude: int
    mixed_precision: bool
    num_workers: int
    checkpoint_every_steps: int


# ----------------------------------------------------------------------------------------------- data

@dataclass
class FaceSplit:
    """Images and their integer identity labels (0..n_identities-1 in sorted identity order)."""

    identities: list[str]
    paths: list[Path]
    labels: list[int]


def split_identities(train_dir: str | os.PathLike, width: int | None, depth: int | None,
                     val_identities: int) -> tuple[FaceSplit, FaceSplit]:
    """Hold out the last `val_identities` identities; train on the first `width` of the others, `depth` images each."""
    root = Path(train_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"training folder {root} does not exist")
    folders = sorted((p for p in root.iterdir() if p.is_dir()), key=lambda p: p.name)
    per_identity = [(f.name, list_images(f, recursive=False)[:depth]) for f in folders]
    empty = [name for name, images in per_identity if not images]
    if empty:
        raise ValueError(f"{len(empty)} identity folder(s) of {root} hold no images (first: {empty[:5]}); "
                         f"remove them")
    if val_identities < 0 or val_identities >= len(per_identity):
        raise ValueError(f"val_identities={val_identities} must be >= 0 and leave training identities; "
                         f"{root} has {len(per_identity)} identity folders")
    available = per_identity[:len(per_identity) - val_identities]
    if width is not None and width > len(available):
        raise ValueError(f"width={width} identities requested but {root} has only {len(available)} left after "
                         f"holding out val_identities={val_identities}; lower width (or set it to null = all)")
    train = available[:width] if width is not None else available
    val = per_identity[len(per_identity) - val_identities:] if val_identities else []
    return _as_split(train), _as_split(val)


def images_read(train_dir: str | os.PathLike, width: int | None, depth: int | None,
                val_identities: int) -> list[Path]:
    """The images FR training on `train_dir` reads (its training and validation identities), as paths
    relative to `train_dir`: what needs aligning when a real set feeds only an FR model."""
    train, val = split_identities(train_dir, width, depth, val_identities)
    return [path.relative_to(train_dir) for path in train.paths + val.paths]


def _as_split(per_identity: list[tuple[str, list[Path]]]) -> FaceSplit:
    paths = [p for _, images in per_identity for p in images]
    labels = [label for label, (_, images) in enumerate(per_identity) for _ in images]
    return FaceSplit([name for name, _ in per_identity], paths, labels)


def read_face(path: Path, size: int) -> torch.Tensor:
    """An image as uint8 CHW at the network's input side (aligned faces are 112x112)."""
    image = torch.from_numpy(read_rgb(path)).permute(2, 0, 1)
    if image.shape[1:] == (size, size):
        return image
    return resize_pixels(image[None].float(), size)[0].round().clamp(0, 255).to(torch.uint8)


class FaceTrainingSet(Dataset):
    """Flip (+ optional RandAugment) per sample, seeded by (seed, epoch, index); returns [-1, 1] CHW and label.

    A set whose decoded faces fit in `preload_bytes` is decoded once, up front: decoding and resizing
    a face every epoch is ~25 % of a CPU training step at the embedded default's sizes.
    """

    def __init__(self, split: FaceSplit, seed: int, randaugment: RandAugmentSpec | None, input_size: int,
                 preload_bytes: int = PRELOAD_BYTES):
        self.split, self.seed, self.randaugment, self.input_size = split, seed, randaugment, input_size
        self.epoch = 0
        fits = len(split.paths) * 3 * input_size ** 2 <= preload_bytes
        self.faces = torch.stack([read_face(p, input_size) for p in split.paths]) if fits and split.paths else None

    def __len__(self) -> int:
        return len(self.split.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        generator = torch.Generator().manual_seed(derive_seed(self.seed, "augment", self.epoch, index))
        face = self.faces[index] if self.faces is not None else read_face(self.split.paths[index], self.input_size)
        image = augment_face(face, generator, self.randaugment)
        return (image.float() / 255.0 - 0.5) / 0.5, self.split.labels[index]


class ResumableSampler(Sampler[int]):
    """A seeded permutation per epoch cut into global batches; yields this rank's slice from `start_step` on."""

    def __init__(self, size: int, batch_size: int, seed: int, rank: int, world_size: int):
        self.size, self.batch_size, self.seed = size, batch_size, seed
        self.rank, self.world_size = rank, world_size
        self.steps_per_epoch = size // (batch_size * world_size)
        self.epoch, self.start_step = 0, 0

    def set_position(self, epoch: int, start_step: int) -> None:
        self.epoch, self.start_step = epoch, start_step

    def __len__(self) -> int:
        return (self.steps_per_epoch - self.start_step) * self.batch_size

    def __iter__(self):
        generator = torch.Generator().manual_seed(derive_seed(self.seed, "shuffle", self.epoch))
        order = torch.randperm(self.size, generator=generator).tolist()
        global_batch = self.batch_size * self.world_size
        for step in range(self.start_step, self.steps_per_epoch):
            first = step * global_batch + self.rank * self.batch_size
            yield from order[first:first + self.batch_size]


# ----------------------------------------------------------------------------------------- validation

@dataclass
class ValidationSet:
    """Held-out faces (uint8 NHWC) and the verification pairs over them."""

    pixels: np.ndarray
    first: np.ndarray
    second: np.ndarray
    issame: np.ndarray


def build_validation(split: FaceSplit, seed: int, input_size: int) -> ValidationSet | None:
    """All genuine pairs plus as many seeded random impostor pairs, shuffled, then interleaved
    (genuine, impostor, genuine, ...) so every contiguous protocol fold holds both kinds."""
    if not split.paths:
        return None
    labels = np.asarray(split.labels)
    genuine = [(i, j) for label in np.unique(labels) for idx in [np.flatnonzero(labels == label)]
               for a, i in enumerate(idx) for j in idx[a + 1:]]
    if len(split.identities) < MIN_VAL_IDENTITIES or len(genuine) < MIN_VAL_GENUINE_PAIRS:
        raise ValueError(f"validation needs >= {MIN_VAL_IDENTITIES} identities and >= {MIN_VAL_GENUINE_PAIRS} "
                         f"genuine pairs (each of the 10 folds needs both kinds); got {len(split.identities)} identities, {len(genuine)} genuine pairs: "
                         f"raise val_identities or depth")
    rng = np.random.default_rng(derive_seed(seed, "validation_pairs"))
    impostor: list[tuple[int, int]] = []
    while len(impostor) < len(genuine):
        a, b = rng.integers(0, len(labels), size=(2, 2 * len(genuine)))
        keep = labels[a] != labels[b]
        impostor += list(zip(a[keep].tolist(), b[keep].tolist()))
    genuine_pairs = np.asarray(genuine, dtype=np.int64)[rng.permutation(len(genuine))]
    impostor_pairs = np.asarray(impostor[:len(genuine)], dtype=np.int64)
    pairs = np.stack([genuine_pairs, impostor_pairs], axis=1).reshape(-1, 2)
    issame = np.tile([True, False], len(genuine))
    pixels = np.stack([read_face(p, input_size).permute(1, 2, 0).numpy() for p in split.paths])
    return ValidationSet(pixels, pairs[:, 0], pairs[:, 1], issame)


def validation_accuracy(backbone: nn.Module, val: ValidationSet, batch_size: int, device: torch.device) -> float:
    """Mean 10-fold verification accuracy of flip-sum embeddings on the held-out pairs."""
    from ..evaluation.verification import verification_metrics

    embeddings = embed_images(backbone, val.pixels, batch_size, device, flip_sum=True)
    metrics = verification_metrics(embeddings[val.first], embeddings[val.second], val.issame)
    return float(metrics["accuracy_mean"])


# ------------------------------------------------------------------------------------------- training

def build_models(settings: FRTrainingSettings, num_classes: int) -> tuple[nn.Module, MarginHead]:
    """The backbone (final BN1d weight fixed at 1) and the margin head."""
    backbone = iresnet(settings.arch, num_features=settings.num_features, dropout=settings.dropout,
                       base_width=settings.base_width, input_size=settings.input_size)
    backbone.features.weight.requires_grad_(False)
    head = MarginHead(settings.num_features, num_classes, settings.margin_s, settings.margin_m, settings.head)
    return backbone, head


def build_optimizer(backbone: nn.Module, head: nn.Module, settings: FRTrainingSettings,
                    global_batch: int) -> torch.optim.SGD:
    """SGD with lr = base_lr / 512 x global batch (the linear scaling rule of the paper's setup)."""
    params = [p for p in list(backbone.parameters()) + list(head.parameters()) if p.requires_grad]
    return torch.optim.SGD(params, lr=settings.base_lr / 512 * global_batch, momentum=settings.momentum,
                           weight_decay=settings.weight_decay)


def build_scheduler(optimizer: torch.optim.Optimizer, settings: FRTrainingSettings):
    if settings.lr_schedule == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=settings.lr_decay_factor,
                                                          patience=settings.plateau_patience)
    if settings.lr_schedule == "step":
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(settings.lr_milestones),
                                                    gamma=settings.lr_decay_factor)
    raise ValueError(f"lr_schedule must be 'plateau' or 'step', got '{settings.lr_schedule}'")


def train_step(backbone: nn.Module, head: nn.Module, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
               images: torch.Tensor, labels: torch.Tensor, grad_clip_norm: float, autocast: bool) -> tuple[float, int]:
    """One SGD step (AMP-aware, gradient norm clipped); returns (loss, correctly classified count)."""
    with torch.autocast(device_type=images.device.type, dtype=torch.float16, enabled=autocast):
        embeddings = backbone(images)
    logits = head(F.normalize(embeddings.float(), dim=1), labels)
    loss = F.cross_entropy(logits, labels)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)
    params = [p for group in optimizer.param_groups for p in group["params"]]
    nn.utils.clip_grad_norm_(params, grad_clip_norm)
    scaler.step(optimizer)
    scaler.update()
    return float(loss.detach()), int((logits.detach().argmax(dim=1) == labels).sum())


def _write_metrics(path: str | os.PathLike, rows: list[dict[str, Any]]) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=METRICS_COLUMNS)
            writer.writeheader()
            writer.writerows(rows)


# Settings that may change between a kill and the resume without changing what is trained.
_RESUMABLE_CHANGES = {"num_workers", "checkpoint_every_steps", "max_epochs", "early_stop_patience"}


class FRRun:
    """One training run's models, optimiser and counters, with checkpointing to `state_path`.

    `counters` is plain data (numbers, lists, the best backbone's tensors), saved as-is in the state.
    The state folder is keyed on the settings that shape training, the images (`images_key` of the
    training and validation images) and the global batch.
    """

    def __init__(self, settings: FRTrainingSettings, train_split: FaceSplit, data_key: str, device: torch.device,
                 global_batch: int, state_dir: Path, is_main: bool):
        self.settings, self.device, self.is_main = settings, device, is_main
        seed_everything(derive_seed(settings.seed, "fr_training"))
        self.backbone, self.head = build_models(settings, len(train_split.identities))
        self.backbone.to(device)
        self.head.to(device)
        self.optimizer = build_optimizer(self.backbone, self.head, settings, global_batch)
        self.scheduler = build_scheduler(self.optimizer, settings)
        self.autocast = settings.mixed_precision and device.type == "cuda"
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.autocast)
        key = {**{k: v for k, v in dataclasses.asdict(settings).items() if k not in _RESUMABLE_CHANGES},
               "identities": len(train_split.identities), "images": data_key,
               "global_batch": global_batch}  # = batch_size x processes: the lr and batches follow it
        folder = StateFolder(state_dir, key, "FR training")
        self.state_path = (folder.open() if is_main else folder.path) / STATE_FILE
        self.counters: dict[str, Any] = {
            "epoch": 0, "step_in_epoch": 0, "global_step": 0, "best_accuracy": -math.inf, "best_backbone": None,
            "epochs_without_gain": 0, "finished": False, "history": [],
            "loss_sum": 0.0, "correct": 0, "seen": 0, "seconds": 0.0, "train_seconds": 0.0,
        }

    def restore(self) -> None:
        """Continue from the saved state of these settings and images, if any."""
        if not self.state_path.is_file():
            return
        saved = load_state(self.state_path)
        self.backbone.load_state_dict(saved["backbone"])
        self.head.load_state_dict(saved["head"])
        self.optimizer.load_state_dict(saved["optimizer"])
        self.scheduler.load_state_dict(saved["scheduler"])
        self.scaler.load_state_dict(saved["scaler"])
        restore_rng(saved["rng"])
        self.counters.update(saved["counters"])
        if self.is_main:
            print(f"resuming FR training from {self.state_path}: epoch {self.counters['epoch'] + 1}, "
                  f"step {self.counters['step_in_epoch']}", file=sys.stderr)

    def save(self) -> None:
        if self.is_main:
            save_state(self.state_path, {
                "backbone": self.backbone.state_dict(), "head": self.head.state_dict(),
                "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict(), "rng": capture_rng(), "counters": self.counters})

    @property
    def done(self) -> bool:
        return self.counters["finished"] or self.counters["epoch"] >= self.settings.max_epochs

    def record_step(self, loss: float, correct: int, batch: int, seconds: float) -> None:
        c = self.counters
        c["loss_sum"] += loss * batch
        c["correct"] += correct
        c["seen"] += batch
        c["train_seconds"] += seconds
        c["seconds"] += seconds
        c["step_in_epoch"] += 1
        c["global_step"] += 1

    def end_epoch(self, accuracy: float, lr: float, seconds: float, world_size: int) -> dict[str, Any]:
        """Step the schedule, keep the best backbone, decide early stopping; returns the epoch's metrics row."""
        c = self.counters
        if self.settings.lr_schedule == "plateau":
            self.scheduler.step(accuracy)
        else:
            self.scheduler.step()
        if math.isnan(accuracy) or accuracy > c["best_accuracy"]:  # no validation: the last epoch is kept
            c["best_accuracy"] = -math.inf if math.isnan(accuracy) else accuracy
            c["best_backbone"] = {k: v.detach().cpu().clone() for k, v in self.backbone.state_dict().items()}
            c["epochs_without_gain"] = 0
        else:
            c["epochs_without_gain"] += 1
        row = {"epoch": c["epoch"] + 1, "lr": lr, "train_loss": c["loss_sum"] / max(c["seen"], 1),
               "train_accuracy": c["correct"] / max(c["seen"], 1), "val_accuracy": accuracy,
               "seconds": round(c["seconds"] + seconds, 3),
               "images_per_second": round(c["seen"] * world_size / max(c["train_seconds"], 1e-9), 2)}
        c["history"].append(row)
        c.update(epoch=c["epoch"] + 1, step_in_epoch=0, loss_sum=0.0, correct=0, seen=0, seconds=0.0,
                 train_seconds=0.0)
        if self.settings.lr_schedule == "plateau" and c["epochs_without_gain"] >= self.settings.early_stop_patience:
            c["finished"] = True
        return row


def train_fr(train_dir: str | os.PathLike, out_backbone: str | os.PathLike, metrics_csv: str | os.PathLike,
             state_dir: str | os.PathLike, settings: FRTrainingSettings, *, threads: int, device: str,
             on_step: Callable[[int, int], None] | None = None) -> None:
    """Train an FR backbone on `train_dir`; write the best backbone's plain state dict and the metrics CSV.

    Resumes from the state of these settings and images under `state_dir` (`resume.StateFolder`) when
    present. `on_step(epoch, step_in_epoch)` is called after
    every optimizer step and any checkpoint it triggered (for monitoring and tests).
    """
    set_threads(threads)
    if settings.lr_schedule == "plateau" and settings.val_identities == 0:
        raise ValueError("lr_schedule 'plateau' needs validation accuracy: set val_identities > 0 or use 'step'")
    if settings.max_epochs < 1:
        raise ValueError(f"max_epochs must be >= 1, got {settings.max_epochs}")
    with process_group(device) as group:
        _train_in_group(train_dir, out_backbone, metrics_csv, state_dir, settings, group, on_step)


def _train_in_group(train_dir: str | os.PathLike, out_backbone: str | os.PathLike, metrics_csv: str | os.PathLike,
                    state_dir: str | os.PathLike, settings: FRTrainingSettings, group: ProcessGroup,
                    on_step: Callable[[int, int], None] | None) -> None:
    """`train_fr`'s work as one process of `group` (all processes run it; rank 0 writes)."""
    torch_device = group.device
    train_split, val_split = split_identities(train_dir, settings.width, settings.depth, settings.val_identities)
    randaugment = (RandAugmentSpec(settings.randaugment_num_ops, settings.randaugment_magnitude_bins,
                                   settings.randaugment_max_magnitude) if settings.randaugment else None)
    dataset = FaceTrainingSet(train_split, settings.seed, randaugment, settings.input_size)
    sampler = ResumableSampler(len(dataset), settings.batch_size, settings.seed, group.rank, group.world_size)
    global_batch = settings.batch_size * group.world_size
    if sampler.steps_per_epoch == 0:
        raise ValueError(f"{len(dataset)} training images are fewer than one global batch ({global_batch}); "
                         f"lower batch_size")
    val = build_validation(val_split, settings.seed, settings.input_size) if group.is_main else None
    run = FRRun(settings, train_split, images_key(train_dir, train_split.paths + val_split.paths), torch_device,
                global_batch, Path(state_dir), group.is_main)
    run.restore()
    backbone, head = run.backbone, run.head
    if group.world_size > 1:
        ids = [torch_device.index] if torch_device.type == "cuda" else None
        backbone = nn.parallel.DistributedDataParallel(backbone, device_ids=ids)
        head = nn.parallel.DistributedDataParallel(head, device_ids=ids)

    counters = run.counters
    while not run.done:
        epoch = counters["epoch"]
        dataset.epoch = epoch
        sampler.set_position(epoch, counters["step_in_epoch"])
        loader = DataLoader(dataset, batch_size=settings.batch_size, sampler=sampler, drop_last=True,
                            num_workers=settings.num_workers, pin_memory=torch_device.type == "cuda",
                            generator=torch.Generator().manual_seed(derive_seed(settings.seed, "loader", epoch)))
        backbone.train()
        head.train()
        lr = run.optimizer.param_groups[0]["lr"]
        tick = time.perf_counter()
        with progress(total=len(sampler) * group.world_size, desc=f"FR epoch {epoch + 1}", unit="img") as bar:
            for images, labels in loader:
                # dropout masks: per step and rank (ranks must differ; a resumed run must repeat them)
                torch.manual_seed(derive_seed(settings.seed, "dropout", counters["global_step"], group.rank))
                loss, correct = train_step(backbone, head, run.optimizer, run.scaler,
                                           images.to(torch_device, non_blocking=True),
                                           labels.to(torch_device, non_blocking=True),
                                           settings.grad_clip_norm, run.autocast)
                run.record_step(loss, correct, len(labels), time.perf_counter() - tick)  # loading + step
                bar.update(global_batch)
                bar.set_postfix(loss=f"{loss:.3f}", refresh=False)
                every = settings.checkpoint_every_steps
                if every > 0 and counters["global_step"] % every == 0 \
                        and counters["step_in_epoch"] < sampler.steps_per_epoch:
                    run.save()
                if on_step is not None:
                    on_step(epoch, counters["step_in_epoch"])
                tick = time.perf_counter()

        tick = time.perf_counter()
        accuracy = validation_accuracy(run.backbone, val, settings.batch_size, torch_device) if val else math.nan
        if group.world_size > 1:
            shared = torch.tensor([accuracy], dtype=torch.float64, device=torch_device)
            dist.broadcast(shared, src=0)
            accuracy = float(shared)
        row = run.end_epoch(accuracy, lr, time.perf_counter() - tick, group.world_size)
        if group.is_main:
            _write_metrics(metrics_csv, counters["history"])
            print(f"FR epoch {row['epoch']}: loss {row['train_loss']:.4f}, val accuracy {accuracy:.4f}, "
                  f"best {counters['best_accuracy']:.4f}, {row['images_per_second']} img/s", file=sys.stderr)
        run.save()

    if group.is_main:
        save_state(out_backbone, counters["best_backbone"])
        _write_metrics(metrics_csv, counters["history"])


def measure_fr_throughput(arch: str | list[int], batch_size: int, steps: int, device: str = "cpu", *,
                          num_classes: int = 1000, base_width: int = 64, input_size: int = INPUT_SIZE) -> dict[str, Any]:
    """Training images/s of `arch` at `input_size` with the paper's head and optimiser (one warm-up step untimed)."""
    torch_device = resolve_device(device)
    torch.manual_seed(0)
    backbone = iresnet(arch, dropout=0.4, base_width=base_width, input_size=input_size).to(torch_device)
    backbone.features.weight.requires_grad_(False)
    head = MarginHead(512, num_classes, 64.0, 0.35).to(torch_device)
    optimizer = torch.optim.SGD([p for p in list(backbone.parameters()) + list(head.parameters()) if p.requires_grad],
                                lr=0.1 / 512 * batch_size, momentum=0.9, weight_decay=5e-4)
    autocast = torch_device.type == "cuda"
    scaler = torch.amp.GradScaler(torch_device.type, enabled=autocast)
    images = torch.randn(batch_size, 3, input_size, input_size, device=torch_device)
    labels = torch.randint(num_classes, (batch_size,), device=torch_device)
    backbone.train()
    train_step(backbone, head, optimizer, scaler, images, labels, 5.0, autocast)
    if torch_device.type == "cuda":
        torch.cuda.synchronize(torch_device)
    start = time.perf_counter()
    for _ in range(steps):
        train_step(backbone, head, optimizer, scaler, images, labels, 5.0, autocast)
    if torch_device.type == "cuda":
        torch.cuda.synchronize(torch_device)
    seconds = time.perf_counter() - start
    return {"arch": arch if isinstance(arch, str) else list(arch), "base_width": base_width, "input_size": input_size,
            "batch_size": batch_size, "steps": steps,
            "device": str(torch_device), "threads": torch.get_num_threads(), "mixed_precision": autocast,
            "seconds": seconds, "seconds_per_step": seconds / steps, "images_per_second": batch_size * steps / seconds}
