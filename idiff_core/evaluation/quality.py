"""Quality of one synthetic dataset, in the identity embedder's space (the space of its contexts).

- separability: genuine (within-identity) vs impostor (cross-identity) cosine statistics;
- identity consistency: how close each sample's embedding is to the context it was generated from,
  against the same samples compared with another identity's context (the random-context level);
  a released dataset comes without its contexts, so it has no consistency columns;
- leakage: each synthetic identity's highest similarity to any training-set embedding.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..io import load_matrix
from ..runtime import derive_seed
from .leakage import identity_leakage
from .separability import separability_report
from .tables import write_table


@dataclass(frozen=True)
class QualitySettings:
    seed: int
    leakage_threshold: float
    leakage_per_identity: str
    sampler: str | None   # how the samples were drawn, recorded in the separability row (None: released)
    sampling_steps: int | None
    guidance_scale: float | None


def sample_identities(names: list[str]) -> np.ndarray:
    """The identity of each sample: its parent folder (`.../<identity>/<j>`)."""
    return np.array([name.split("/")[-2] for name in names])


def identity_consistency(embeddings: np.ndarray, identities: np.ndarray, context_ids: list[str],
                         contexts: np.ndarray, seed: int, chunk: int = 4096) -> dict[str, float]:
    """How near each sample's (L2-normalised) embedding lies to its own context, against the other contexts.

    - consistency_mean/std: cosine with its own context;
    - random_context_mean/std: cosine with one seeded other identity's context, the level of chance;
    - context_auc: the fraction of other contexts farther from the sample than its own (ties count
      half), averaged over samples: 1 when every sample is nearest its own context, 0.5 by chance;
    - context_rank1: the fraction of samples whose nearest context is their own (chance 1/#contexts).
    """
    contexts = contexts / np.linalg.norm(contexts, axis=1, keepdims=True)
    row_of = {name: i for i, name in enumerate(context_ids)}
    own = np.array([row_of[i] for i in identities])
    rng = np.random.default_rng(derive_seed(seed, "consistency"))
    other = (own + rng.integers(1, len(context_ids), size=own.size)) % len(context_ids)
    own_cos = np.sum(embeddings * contexts[own], axis=1)
    other_cos = np.sum(embeddings * contexts[other], axis=1)
    farther, nearest = np.empty(len(own)), np.empty(len(own), dtype=bool)
    for start in range(0, len(own), chunk):  # samples x contexts in bounded pieces (paper: 500k x 10k)
        scores, mine = embeddings[start:start + chunk] @ contexts.T, own[start:start + chunk]
        own_score = scores[np.arange(len(mine)), mine][:, None]  # from the same product, so ties are exact
        farther[start:start + chunk] = (scores < own_score).sum(1) + 0.5 * ((scores == own_score).sum(1) - 1)
        nearest[start:start + chunk] = scores.argmax(1) == mine
    return {"consistency_mean": float(own_cos.mean()), "consistency_std": float(own_cos.std()),
            "random_context_mean": float(other_cos.mean()), "random_context_std": float(other_cos.std()),
            "context_auc": float(np.mean(farther / max(1, len(contexts) - 1))),
            "context_rank1": float(nearest.mean()), "context_count": len(contexts)}


def synthetic_quality(samples_npz: str | os.PathLike, contexts_npz: str | os.PathLike | None,
                      training_npz: str | os.PathLike, dataset: str, separability_csv: str | os.PathLike,
                      leakage_csv: str | os.PathLike, identities_csv: str | os.PathLike,
                      settings: QualitySettings) -> None:
    """Write a dataset's separability row (with identity consistency when its contexts are given),
    its leakage row and its per-identity leakage table."""
    names, embeddings, _ = load_matrix(samples_npz)
    identities = sample_identities(names)
    train_names, train, _ = load_matrix(training_npz)

    report = separability_report(embeddings, identities, settings.seed)
    separability = {"dataset": dataset, "sampler": settings.sampler, "sampling_steps": settings.sampling_steps,
                    "guidance_scale": settings.guidance_scale,
                    **{k: v for k, v in report.items() if np.ndim(v) == 0}}
    if contexts_npz is not None:
        context_ids, contexts, _ = load_matrix(contexts_npz)
        separability.update(identity_consistency(embeddings, identities, context_ids, contexts, settings.seed))
    write_table(pd.DataFrame([separability]), separability_csv)

    per_identity, summary = identity_leakage(embeddings, identities, train, settings.leakage_threshold,
                                             train_names, settings.leakage_per_identity)
    write_table(per_identity, identities_csv)
    write_table(pd.DataFrame([{"dataset": dataset, **summary}]), leakage_csv)
    consistency = (f", consistency {separability['consistency_mean']:.3f} (random context "
                   f"{separability['random_context_mean']:.3f}, AUC {separability['context_auc']:.3f}, rank-1 "
                   f"{separability['context_rank1']:.3f})" if contexts_npz is not None else "")
    print(f"[quality] {dataset}: EER {separability['eer']:.4f}{consistency}, leakage max {summary['max']:.3f}")
