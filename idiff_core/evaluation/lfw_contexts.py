"""The paper's LFW-context experiment: LFW embeddings as identity contexts of the conditional generator.

Every image of the (possibly subsampled) LFW pairs is embedded (the identity embedder, as training
contexts), its embedding conditions `variations_per_image` generated images, and those are embedded
the same way. Cosine scores on LFW's pairs (a, b), split genuine / impostor by the pair label:

* real_real: a vs b (the benchmark's own difficulty in the embedder's space);
* real_variation: a vs every variation of b, and b vs every variation of a;
* variation_variation: every variation of a vs every variation of b;
* real_own_variation: each image vs its own variations (genuine only: how well the identity is kept).

If variations of a pair's images score like the real pair, the generator kept the identity.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd
import torch

from ..data.benchmarks import LfwPair, lfw_image_path, read_lfw_pairs
from ..embeddings import EmbeddingSettings, embed_images
from ..generation import GeneratorSpec, SamplerSettings
from ..io import atomic_path, load_matrix, read_rgb, write_image_grid
from ..runtime import derive_seed
from ..sampling import image_seed
from ..vectors import l2_normalize
from .plots import score_histograms
from .separability import eer_stats
from .tables import write_table

COMPARISONS = ("real_real", "real_variation", "variation_variation", "real_own_variation")


@dataclass(frozen=True)
class LfwContextSettings:
    seed: int
    variations_per_image: int
    pairs_per_class: int | None  # genuine and impostor pairs each (a seeded subset); None: every pair
    grid_rows: int
    sampler: SamplerSettings
    embedder: EmbeddingSettings

    def __post_init__(self) -> None:
        if self.variations_per_image < 1:
            raise ValueError("evaluation.lfw_contexts.variations_per_image must be >= 1")
        if self.pairs_per_class is not None and self.pairs_per_class < 1:
            raise ValueError("evaluation.lfw_contexts.pairs_per_class must be >= 1 or null (every pair)")


def image_key(name: str, idx: int) -> str:
    """An LFW image's name in the embeddings file (`<Name>/<Name>_<idx:04d>`, as `extract_embeddings` names it)."""
    return f"{name}/{name}_{int(idx):04d}"


def select_pairs(pairs: list[LfwPair], per_class: int | None, seed: int) -> list[LfwPair]:
    """All pairs, or a seeded subset of `per_class` genuine and `per_class` impostor pairs (file order kept)."""
    if per_class is None:
        return pairs
    rng = np.random.default_rng(derive_seed(seed, "lfw_contexts_pairs"))
    chosen = []
    for same in (True, False):
        rows = [i for i, p in enumerate(pairs) if p.issame == same]
        if len(rows) < per_class:
            raise ValueError(f"{per_class} {'genuine' if same else 'impostor'} pairs requested, "
                             f"the pairs file has {len(rows)}")
        chosen.extend(rng.choice(rows, size=per_class, replace=False).tolist())
    return [pairs[i] for i in sorted(chosen)]


def pair_scores(real: np.ndarray, variations: np.ndarray, first: np.ndarray, second: np.ndarray,
                issame: np.ndarray) -> dict[str, np.ndarray]:
    """Cosine score sets (`<comparison>_genuine` / `_impostor`) from unit embeddings.

    `real` is (U, d), `variations` (U, V, d); pair p is images (first[p], second[p]) with label issame[p].
    """
    real = real.astype(np.float64)
    variations = variations.astype(np.float64)
    rr = np.einsum("pd,pd->p", real[first], real[second])
    # (P, 2V): a vs variations of b, then b vs variations of a
    rv = np.concatenate([np.einsum("pd,pvd->pv", real[first], variations[second]),
                         np.einsum("pd,pvd->pv", real[second], variations[first])], axis=1)
    vv = np.einsum("pkd,pld->pkl", variations[first], variations[second]).reshape(len(first), -1)
    scores = {}
    for name, values in (("real_real", rr[:, None]), ("real_variation", rv), ("variation_variation", vv)):
        scores[f"{name}_genuine"] = values[issame].ravel()
        scores[f"{name}_impostor"] = values[~issame].ravel()
    scores["real_own_variation_genuine"] = np.einsum("ud,uvd->uv", real, variations).ravel()
    return scores


def score_statistics(scores: Mapping[str, np.ndarray]) -> pd.DataFrame:
    """One row per comparison: counts, means and stds of both classes, and their separability (EER,
    FMR100/FMR1000, AUC, d', FDR; NaN for the genuine-only comparison)."""
    rows = []
    for name in COMPARISONS:
        genuine = scores[f"{name}_genuine"]
        impostor = scores.get(f"{name}_impostor", np.zeros(0))
        row = {"comparison": name, "n_genuine": genuine.size, "genuine_mean": float(genuine.mean()),
               "genuine_std": float(genuine.std()), "n_impostor": impostor.size,
               "impostor_mean": float(impostor.mean()) if impostor.size else np.nan,
               "impostor_std": float(impostor.std()) if impostor.size else np.nan}
        stats = eer_stats(genuine, impostor) if impostor.size else {}
        for key, column in (("eer", "eer"), ("fmr100", "fmr100"), ("fmr1000", "fmr1000"), ("auc", "auc"),
                            ("decidability", "d_prime"), ("FDR", "fdr")):
            row[column] = float(stats[key]) if stats else np.nan
        rows.append(row)
    return pd.DataFrame(rows)


@dataclass(frozen=True)
class LfwFiles:
    """The benchmark as the experiment reads it: the images' identity embeddings, the images, pairs.txt."""

    embeddings: Path
    images: Path
    pairs: Path


@dataclass(frozen=True)
class LfwContextOutputs:
    """The experiment's files: statistics CSV, score arrays (.npz), score histogram, variations grid."""

    table: Path
    scores: Path
    histogram: Path
    grid: Path


def lfw_context_experiment(lfw: LfwFiles, generator: GeneratorSpec, backbone: str | os.PathLike, name: str,
                           settings: LfwContextSettings, outputs: LfwContextOutputs, device: str) -> pd.DataFrame:
    """Generate variations of every pair image's identity with generator `name`, score the three
    distributions, and write the statistics, the scores, a histogram and a grid (real image | variations)."""
    pairs = select_pairs(read_lfw_pairs(lfw.pairs)[0], settings.pairs_per_class, settings.seed)
    keys: dict[str, int] = {}
    first, second = [], []
    for pair in pairs:
        for side, person, idx in ((first, pair.name1, pair.idx1), (second, pair.name2, pair.idx2)):
            side.append(keys.setdefault(image_key(person, idx), len(keys)))
    first, second = np.array(first), np.array(second)
    issame = np.array([p.issame for p in pairs], dtype=bool)
    real = _embeddings_of(lfw, list(keys))

    pipeline = generator.load(device)
    if not pipeline.is_conditional:
        raise ValueError(f"{generator.checkpoint}: the LFW-context experiment needs a context-CONDITIONAL generator")
    v = settings.variations_per_image
    seeds = [image_seed(settings.seed, key, j) for key in keys for j in range(v)]
    images = pipeline(torch.from_numpy(real).repeat_interleave(v, dim=0), seeds, settings.sampler)
    embedder = settings.embedder
    model = embedder.backbone.load(backbone).to(device)
    variations = embed_images(model, images, embedder.batch_size, device, embedder.flip_sum).reshape(len(keys), v, -1)

    scores = pair_scores(real, variations, first, second, issame)
    stats = score_statistics(scores)
    for column, (key, value) in enumerate({"generator": name, "pairs": issame.size, "images": len(keys),
                                           "variations_per_image": v}.items()):
        stats.insert(column, key, value)
    write_table(stats, outputs.table)
    with atomic_path(outputs.scores) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, first=first, second=second, issame=issame, **scores)
    score_histograms({c.replace("_", "-"): {label: scores[f"{c}_{label}"] for label in ("genuine", "impostor")
                                            if f"{c}_{label}" in scores} for c in COMPARISONS},
                     outputs.histogram, f"LFW identities as contexts of {name}", bins=50)
    shown = list(keys)[:settings.grid_rows]
    write_image_grid([[read_rgb(lfw_image_path(lfw.images, *_split_key(k)))] + list(images[i * v:(i + 1) * v])
                     for i, k in enumerate(shown)], outputs.grid)
    for row in stats.itertuples():
        print(f"[lfw-contexts] {name} {row.comparison}: genuine {row.genuine_mean:.3f} +- {row.genuine_std:.3f}"
              f", impostor {row.impostor_mean:.3f} +- {row.impostor_std:.3f}, EER {row.eer:.4f}")
    return stats


def _embeddings_of(lfw: LfwFiles, keys: list[str]) -> np.ndarray:
    """The unit embeddings of the named pair images, in `keys` order."""
    names, matrix, _ = load_matrix(lfw.embeddings)
    row_of = {n: i for i, n in enumerate(names)}
    missing = [k for k in keys if k not in row_of]
    if missing:
        raise ValueError(f"{lfw.embeddings} lacks the embeddings of {len(missing)} pair image(s), e.g. "
                         f"{missing[:3]}: was it extracted from the same LFW folder as {lfw.pairs}?")
    return l2_normalize(matrix[[row_of[k] for k in keys]], np.float32, refuse_zero=True)


def _split_key(key: str) -> tuple[str, int]:
    name, stem = key.split("/")
    return name, int(stem.rsplit("_", 1)[1])
