"""Do the samples look like the faces the generator learned from? Face detection and colour.

The detection rate is MTCNN's (from the assembled dataset's summary). Colour is compared in CIELAB,
where each image is summarised by its mean lightness L*, its mean a* (green-red) and b* (blue-yellow)
and its mean chroma (colourfulness, |(a*, b*)| per pixel): an autoencoder or generator that loses
colour shows as chroma far below the training faces', one that loses contrast as a narrow L* spread.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
import pandas as pd

from ..io import list_images, read_rgb
from ..runtime import derive_seed
from .tables import write_table

COLOUR_STATISTICS = ("lightness", "a", "b", "chroma")


def image_colour(image: np.ndarray) -> np.ndarray:
    """Mean L* (0-100), a*, b* and chroma of one RGB uint8 image."""
    lab = cv2.cvtColor(image.astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB).reshape(-1, 3)
    chroma = np.hypot(lab[:, 1], lab[:, 2])
    return np.array([lab[:, 0].mean(), lab[:, 1].mean(), lab[:, 2].mean(), chroma.mean()])


def colour_summary(paths: Sequence[str | os.PathLike], prefix: str) -> dict[str, float]:
    """Mean and sd over images of each per-image colour statistic, keyed `<prefix>_<statistic>_{mean,sd}`."""
    if not paths:
        raise ValueError(f"no images to summarise for {prefix}")
    values = np.stack([image_colour(read_rgb(p)) for p in paths])
    row: dict[str, float] = {f"{prefix}_images": len(paths)}
    for name, column in zip(COLOUR_STATISTICS, values.T):
        row[f"{prefix}_{name}_mean"] = float(column.mean())
        row[f"{prefix}_{name}_sd"] = float(column.std())
    return row


def sample_appearance(sample_dirs: Sequence[str | os.PathLike], training_dir: str | os.PathLike,
                      dataset_summary: str | os.PathLike, dataset: str, training_images: int, seed: int,
                      out_csv: str | os.PathLike) -> pd.DataFrame:
    """One row: the dataset's MTCNN detection rate and the colour of its samples against the training faces'.

    Every sample counts; the training faces are a seeded subset of `training_images` (FFHQ has 70k),
    the same for every dataset, so that the rows of one run compare against the same faces.
    """
    samples = [p for d in sample_dirs for p in list_images(d)]
    training = list_images(training_dir)
    if len(training) > training_images:
        rng = np.random.default_rng(derive_seed(seed, "appearance"))
        training = [training[i] for i in sorted(rng.choice(len(training), training_images, replace=False))]
    summary = json.loads(Path(dataset_summary).read_text())
    row = {"dataset": dataset, "detection_rate": summary["detection_rate"],
           **colour_summary(samples, "samples"), **colour_summary(training, "training")}
    table = pd.DataFrame([row])
    write_table(table, out_csv)
    return table
