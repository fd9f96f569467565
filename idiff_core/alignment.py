"""Face alignment as in the IDiff-Face release: MTCNN landmarks, similarity warp onto the ArcFace template.

Each image is searched by facenet-pytorch's MTCNN (batched `detect`, never `mtcnn(batch)`, which crashes
under numpy 2 when an image has no face); the face whose box centre is nearest the image centre is
mapped by a least-squares similarity transform of its 5 landmarks onto the 112x112 ArcFace template.
An image without a face is resized to 112 (the paper's fallback) or dropped, as the settings say.

facenet-pytorch is imported by `make_detector` alone: it imports torchvision, which loads
torch._dynamo (~4 s per job), and the manifest helpers here are also used by jobs that detect nothing.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from idiff_core.io import UnreadableImage, atomic_path, link_or_copy, list_images, read_rgb, write_png
from idiff_core.resume import StateFolder, file_key, settings_key
from idiff_core.progress import progress, step_size
from idiff_core.runtime import resolve_device, set_threads

if TYPE_CHECKING:
    from facenet_pytorch import MTCNN

ALIGNED_SIZE = 112
# ArcFace 112x112 template (left eye, right eye, nose, left mouth corner, right mouth corner), x, y.
ARCFACE_TEMPLATE = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                             [41.5493, 92.3655], [70.7299, 92.2041]], dtype=np.float64)
FAILURE_POLICIES = ("resize", "drop")
MANIFEST_COLUMNS = ("path", "identity", "status", "n_faces", "prob", "error")
WRITTEN = ("aligned", "resized")  # statuses that write an output image
JOURNAL_NAME = ".align_journal.jsonl"
# Largest pyramid level a CPU detector call may search, in pixels: MTCNN first upscales by
# 12 / min_face_size, so one 250 px photo at min_face_size 1 is 9 Mpx (~7 s and ~1 GB on two cores).
CPU_PYRAMID_PIXELS = 8_000_000


@dataclass(frozen=True)
class AlignSettings:
    """Detector and failure policy of the alignment stage (config subtree `alignment`)."""

    min_face_size: int
    thresholds: Sequence[float]
    factor: float
    batch_size: int
    on_failure: str

    def __post_init__(self) -> None:
        if self.min_face_size < 1:
            raise ValueError(f"alignment.min_face_size must be >= 1 px, got {self.min_face_size}")
        if len(self.thresholds) != 3 or not all(0.0 <= t <= 1.0 for t in self.thresholds):
            raise ValueError(f"alignment.thresholds must be 3 probabilities (P-, R-, O-net), got {self.thresholds}")
        if not 0.0 < self.factor < 1.0:
            raise ValueError(f"alignment.factor (pyramid scale step) must be in (0, 1), got {self.factor}")
        if self.batch_size < 1:
            raise ValueError(f"alignment.batch_size must be >= 1, got {self.batch_size}")
        if self.on_failure not in FAILURE_POLICIES:
            raise ValueError(f"alignment.on_failure must be one of {FAILURE_POLICIES}, got {self.on_failure!r}")


@dataclass
class AlignResult:
    """What alignment made of one image: the 112x112 output (None when dropped) and its evidence."""

    status: str  # aligned | resized | dropped
    image: np.ndarray | None  # 112x112x3 uint8
    boxes: np.ndarray  # (n, 4) x1, y1, x2, y2, float32, largest first
    probs: np.ndarray  # (n,)
    landmarks_all: np.ndarray  # (n, 5, 2) x, y
    chosen: int  # index of the face used, -1 when none
    matrix: np.ndarray | None  # (2, 3) similarity transform, image -> template
    error: str = ""

    @property
    def n_faces(self) -> int:
        return len(self.boxes)

    @property
    def prob(self) -> float:
        return float(self.probs[self.chosen]) if self.chosen >= 0 else float("nan")

    @property
    def landmarks(self) -> np.ndarray | None:
        return self.landmarks_all[self.chosen] if self.chosen >= 0 else None


def make_detector(settings: AlignSettings, device: torch.device | str = "cpu") -> MTCNN:
    """MTCNN with the release's constructor choices (all faces kept, no post-processing, largest first)."""
    from facenet_pytorch import MTCNN

    return MTCNN(keep_all=True, post_process=False, select_largest=True, min_face_size=settings.min_face_size,
                 thresholds=list(settings.thresholds), factor=settings.factor,
                 device=resolve_device(str(device))).eval()


def detector_input(image: np.ndarray) -> np.ndarray:
    """uint8 RGB -> float32 0..255 the way the release built it (to_tensor, then x255: not exactly x)."""
    return image.astype(np.float32) / np.float32(255.0) * np.float32(255.0)


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares rotation + uniform scale + translation mapping src points onto dst (Umeyama 1991).

    Returns the 2x3 float64 matrix M with dst ~ M @ [x, y, 1]. Point statistics are computed in float32
    and the matrix in float64, as the release did (float32 landmarks and template): this reproduces
    its matrices bit for bit.
    """
    src = np.asarray(src, dtype=np.float32)
    dst = np.asarray(dst, dtype=np.float32)
    src_mean, dst_mean = src.mean(axis=0), dst.mean(axis=0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    covariance = dst_c.T @ src_c / len(src)
    signs = np.ones(2, dtype=np.float64)
    if np.linalg.det(covariance) < 0:  # a reflection would fit better: take the best rotation instead
        signs[-1] = -1.0
    u, singular, vt = np.linalg.svd(covariance)
    rotation = u @ np.diag(signs) @ vt
    src_var = src_c.var(axis=0).sum()
    if src_var == 0:
        raise ValueError("similarity transform needs at least two distinct landmarks")
    scale = 1.0 / src_var * (singular @ signs)
    matrix = np.empty((2, 3), dtype=np.float64)
    matrix[:, 2] = dst_mean - scale * (rotation @ src_mean)
    matrix[:, :2] = rotation * scale
    return matrix


def to_uint8(image: np.ndarray) -> np.ndarray:
    """float 0..255 -> uint8 as torchvision's save_image(x / 255) does: trunc(clamp(v + 0.5))."""
    scaled = image.astype(np.float32) / np.float32(255.0) * np.float32(255.0) + np.float32(0.5)
    return np.clip(scaled, 0.0, 255.0).astype(np.uint8)


def warp_to_template(image: np.ndarray, landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Warp float32 0..255 `image` so `landmarks` land on the ArcFace template: (112x112x3 float32, M)."""
    matrix = similarity_transform(landmarks, ARCFACE_TEMPLATE)
    warped = cv2.warpAffine(image.astype(np.float32), matrix, (ALIGNED_SIZE, ALIGNED_SIZE),
                            flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return warped, matrix


def resize_fallback(image: np.ndarray) -> np.ndarray:
    """The release's no-face fallback: bilinear resize of the whole image to 112, no antialias (float32)."""
    tensor = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)).permute(2, 0, 1)[None]
    resized = F.interpolate(tensor, size=(ALIGNED_SIZE, ALIGNED_SIZE), mode="bilinear", align_corners=False,
                            antialias=False)
    return resized[0].permute(1, 2, 0).numpy()


def nearest_to_centre(boxes: np.ndarray, height: int, width: int) -> int:
    """Index of the box whose centre is nearest (squared distance) to (width // 2, height // 2)."""
    centres = np.stack([(boxes[:, 0] + boxes[:, 2]) / 2.0, (boxes[:, 1] + boxes[:, 3]) / 2.0], axis=1)
    offsets = ((centres - np.array([width // 2, height // 2], dtype=np.float64)) ** 2).sum(axis=1)
    return int(np.argmin(offsets))


_NO_FACE = (np.zeros((0, 4), np.float32), np.zeros((0,), np.float32), np.zeros((0, 5, 2), np.float32))


def _detect(detector: MTCNN, tiles: np.ndarray) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per tile (boxes, probs, landmarks) as float32 arrays, from one batched `detect` call.

    facenet-pytorch 2.5.3 returns object arrays for batches (None where no face): made plain float32.
    """
    boxes, probs, points = detector.detect(torch.from_numpy(tiles), landmarks=True)
    return [_NO_FACE if box is None else (np.asarray(box, np.float32).reshape(-1, 4),
                                          np.asarray(prob, np.float32).reshape(-1),
                                          np.asarray(point, np.float32).reshape(-1, 5, 2))
            for box, prob, point in zip(boxes, probs, points)]


def _finish(tile: np.ndarray, detection: tuple[np.ndarray, np.ndarray, np.ndarray], on_failure: str,
            error: str = "") -> AlignResult:
    """Turn one tile's detections into an aligned, resized or dropped result."""
    boxes, probs, landmarks_all = detection
    if len(boxes):
        chosen = nearest_to_centre(boxes, tile.shape[0], tile.shape[1])
        warped, matrix = warp_to_template(tile, landmarks_all[chosen])
        return AlignResult("aligned", to_uint8(warped), boxes, probs, landmarks_all, chosen, matrix, error)
    if on_failure == "resize":
        return AlignResult("resized", to_uint8(resize_fallback(tile)), boxes, probs, landmarks_all, -1, None, error)
    return AlignResult("dropped", None, boxes, probs, landmarks_all, -1, None, error)


def detector_batch(settings: AlignSettings, height: int, width: int, device: torch.device) -> int:
    """Images of one size per detector call: `batch_size`, on the CPU only as many as keep the largest
    pyramid level under CPU_PYRAMID_PIXELS, so a call takes seconds, not minutes and gigabytes."""
    first_level = height * width * (12.0 / settings.min_face_size) ** 2
    return step_size(settings.batch_size, device, int(CPU_PYRAMID_PIXELS // first_level))


def align_images(images: list[np.ndarray], settings: AlignSettings, detector: MTCNN, *,
                 bar: tqdm | None = None) -> list[AlignResult]:
    """Align HxWx3 uint8 RGB images; same-size images share detector batches (`detector_batch`);
    results in input order. `bar`, if given, advances after each detector call.

    A batch the detector fails on is retried image by image; an image it still fails on is treated as
    face-less (with the error recorded), so one odd image never stops the rest.
    """
    results: list[AlignResult | None] = [None] * len(images)
    by_size: dict[tuple[int, int], list[int]] = {}
    for index, image in enumerate(images):
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"image {index}: expected HxWx3 uint8 RGB, got {image.shape} {image.dtype}")
        by_size.setdefault(image.shape[:2], []).append(index)
    for (height, width), indices in by_size.items():
        step = detector_batch(settings, height, width, detector.device)
        for start in range(0, len(indices), step):
            chunk = indices[start:start + step]
            tiles = np.stack([detector_input(images[i]) for i in chunk])
            try:
                detections = [(d, "") for d in _detect(detector, tiles)]
            except Exception:  # noqa: BLE001 - isolate the image that breaks the detector
                detections = []
                for tile in tiles:
                    try:
                        detections.append((_detect(detector, tile[None])[0], ""))
                    except Exception as err:  # noqa: BLE001
                        detections.append((_NO_FACE, f"detector failed: {type(err).__name__}: {err}"))
            for i, tile, (detection, error) in zip(chunk, tiles, detections):
                results[i] = _finish(tile, detection, settings.on_failure, error)
            if bar is not None:
                bar.update(len(chunk))
    return results  # type: ignore[return-value]


def _state_key(settings: AlignSettings) -> dict[str, str]:
    """The settings that change outputs (not batch_size): a resumed run never reuses outputs of others."""
    values = dataclasses.asdict(settings) | {"thresholds": list(settings.thresholds)}
    del values["batch_size"]
    return {"settings": settings_key(values)}


def _load_journal(journal: Path, in_dir: Path, relatives: set[str], out_dir: Path) -> dict[str, dict]:
    """Records of finished images from an earlier run: made from an input of the same content (a rerun
    upstream rewrites the inputs, and their old alignments must not be reused), output still on disk."""
    records: dict[str, dict] = {}
    if not journal.exists():
        return records
    keys: dict[str, str] = {}  # each input's digest, read once however often the journal names it
    with open(journal, encoding="utf-8") as fh:
        for line in fh:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:  # a line cut short by a kill
                continue
            path = record.get("path")
            if path in relatives and path not in keys:
                keys[path] = file_key(in_dir / path)
            if path not in keys or record.get("key") != keys[path]:
                continue
            has_output = record["status"] in WRITTEN
            if has_output and not (out_dir / output_name(record["path"])).exists():
                continue
            records[record["path"]] = record
    return records


def output_name(relative: str) -> str:
    """Relative output path of an input image: same tree, `.png`."""
    return Path(relative).with_suffix(".png").as_posix()


def _record(relative: str, key: str, status: str, n_faces: int, prob: float, error: str) -> dict:
    """One journal line (also a manifest row: the manifest ignores `key`)."""
    return {"path": relative, "identity": Path(relative).parent.name, "status": status,
            "n_faces": n_faces, "prob": None if np.isnan(prob) else round(prob, 6), "error": error,
            "key": key}


def write_manifest(path: str | os.PathLike, records: list[dict]) -> None:
    """Per-image alignment manifest CSV (MANIFEST_COLUMNS), sorted by path, written atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=MANIFEST_COLUMNS, extrasaction="ignore")
            writer.writeheader()
            for record in sorted(records, key=lambda r: r["path"]):
                writer.writerow({**record, "prob": "" if record["prob"] is None else record["prob"]})


def read_manifest(path: str | os.PathLike) -> list[dict]:
    """Rows of an alignment manifest as dicts (n_faces int, prob float or nan)."""
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    missing = set(MANIFEST_COLUMNS) - set(rows[0] if rows else MANIFEST_COLUMNS)
    if missing:
        raise ValueError(f"{path} is not an alignment manifest: missing columns {sorted(missing)}")
    for row in rows:
        row["n_faces"] = int(row["n_faces"])
        row["prob"] = float(row["prob"]) if row["prob"] else float("nan")
    return rows


def align_folder(in_dir: str | os.PathLike, out_dir: str | os.PathLike, manifest_csv: str | os.PathLike,
                 settings: AlignSettings, *, state_dir: str | os.PathLike, threads: int, device: str,
                 only: Sequence[str | os.PathLike] | None = None) -> list[dict]:
    """Align every image under `in_dir` (or only those `only` lists, as paths relative to `in_dir`)
    into `out_dir` (same tree, `.png`) and write the manifest.

    Resumable: images are aligned into the folder of these settings under `state_dir` and listed in its
    `.align_journal.jsonl` (one JSON line per image with its input's digest, appended after its output
    is written), so a rerun after a kill skips them; the
    workflow deletes an unfinished job's outputs, never its state. At the end the aligned images are
    published into `out_dir` (hard links where possible). Unreadable files are recorded and skipped.
    Returns the manifest records.
    """
    in_dir, out_dir = Path(in_dir), Path(out_dir)
    if not in_dir.is_dir():
        raise FileNotFoundError(f"alignment input folder {in_dir} does not exist")
    set_threads(threads)
    relatives = [p.relative_to(in_dir).as_posix() for p in list_images(in_dir)]
    if only is not None:
        chosen = {Path(p).as_posix() for p in only}
        missing = sorted(chosen.difference(relatives))
        if missing:
            raise FileNotFoundError(f"{len(missing)} image(s) to align are not in {in_dir} (first: {missing[:3]})")
        relatives = [r for r in relatives if r in chosen]
    outputs: dict[str, str] = {}
    for relative in relatives:
        clash = outputs.setdefault(output_name(relative), relative)
        if clash != relative:
            raise ValueError(f"{clash} and {relative} in {in_dir} would both be written to {output_name(relative)}")
    # an image is done when aligned with these settings from an input of this content
    work = StateFolder(state_dir, _state_key(settings), "alignment").open()
    journal = work / JOURNAL_NAME
    done = _load_journal(journal, in_dir, set(relatives), work)
    todo = [r for r in relatives if r not in done]
    detector = make_detector(settings, device) if todo else None
    with open(journal, "a", encoding="utf-8") as log, \
            progress(total=len(relatives), desc="align", unit="img") as bar:
        bar.update(len(relatives) - len(todo))
        for start in range(0, len(todo), settings.batch_size):
            chunk = todo[start:start + settings.batch_size]
            records, readable, images = [], [], []
            for relative in chunk:
                try:
                    images.append(read_rgb(in_dir / relative))
                    readable.append(relative)
                except UnreadableImage as err:
                    records.append(_record(relative, file_key(in_dir / relative), "unreadable", 0, float("nan"),
                                           str(err)))
                    bar.update(1)
            for relative, result in zip(readable, align_images(images, settings, detector, bar=bar)):
                if result.image is not None:
                    write_png(work / output_name(relative), result.image)
                records.append(_record(relative, file_key(in_dir / relative), result.status, result.n_faces,
                                       result.prob, result.error))
            for record in records:
                if record["status"] not in WRITTEN:  # an output left by a run with other settings must go
                    (work / output_name(record["path"])).unlink(missing_ok=True)
                log.write(json.dumps(record) + "\n")
                done[record["path"]] = record
            log.flush()
            os.fsync(log.fileno())
    records = [done[r] for r in relatives]
    written = {output_name(r["path"]) for r in records if r["status"] in WRITTEN}
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in out_dir.rglob("*.png"):
        if stale.relative_to(out_dir).as_posix() not in written:
            stale.unlink()
    for name in sorted(written):
        link_or_copy(work / name, out_dir / name)
    write_manifest(manifest_csv, records)
    return records


def measure_alignment(images: list[np.ndarray], true_landmarks: np.ndarray,
                      settings_variants: list[AlignSettings], device: str = "cpu") -> list[dict]:
    """Speed (images/s, end to end: detection, warp, quantisation) and landmark error of each variant.

    CPU seconds per image (all threads) are reported too: wall-clock rates on a shared machine mislead.
    Errors compare the chosen face's landmarks with `true_landmarks` (N, 5, 2), in px and in units of
    the true inter-ocular distance; they cover detected images only (`detection_rate` says how many).
    """
    true_landmarks = np.asarray(true_landmarks, dtype=np.float64)
    if true_landmarks.shape != (len(images), 5, 2):
        raise ValueError(f"true_landmarks must have shape ({len(images)}, 5, 2), got {true_landmarks.shape}")
    inter_ocular = np.linalg.norm(true_landmarks[:, 0] - true_landmarks[:, 1], axis=1)
    rows = []
    for settings in settings_variants:
        detector = make_detector(settings, device)
        align_images(images[:1], settings, detector)  # warm-up, not timed
        start, cpu_start = time.perf_counter(), time.process_time()
        results = align_images(images, settings, detector)
        seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
        found = [i for i, r in enumerate(results) if r.status == "aligned"]
        errors = np.array([np.linalg.norm(results[i].landmarks - true_landmarks[i], axis=1).mean() for i in found])
        normalised = errors / inter_ocular[found] if found else errors
        rows.append({
            "min_face_size": settings.min_face_size, "thresholds": list(settings.thresholds),
            "factor": settings.factor, "batch_size": settings.batch_size, "images": len(images),
            "seconds": seconds, "images_per_s": len(images) / seconds,
            "cpu_seconds_per_image": cpu_seconds / len(images),
            "detection_rate": len(found) / len(images),
            "landmark_error_px_mean": float(errors.mean()) if found else float("nan"),
            "landmark_error_px_median": float(np.median(errors)) if found else float("nan"),
            "landmark_error_px_max": float(errors.max()) if found else float("nan"),
            "landmark_error_iod_mean": float(normalised.mean()) if found else float("nan"),
        })
    return rows
