"""Margin-based softmax heads (CosFace, ArcFace) as used to train face-recognition backbones.

The class weight is stored as `kernel` laid out (in_features, out_features), transposed with respect
to nn.Linear, as in insightface / ElasticFace, so their head checkpoints load by key.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

MARGIN_KINDS = ("cosface", "arcface")
_ACOS_LIMIT = 1.0 - 1e-7  # keeps acos' gradient finite where a cosine reaches +-1


class MarginHead(nn.Module):
    """Logits `s * cos` with an additive margin at the label column: CosFace `cos - m`, ArcFace `cos(acos + m)`.

    Rows whose label is -1 get no margin (plain scaled cosines).
    """

    def __init__(self, in_features: int, out_features: int, s: float, m: float, kind: str = "cosface"):
        super().__init__()
        if kind not in MARGIN_KINDS:
            raise ValueError(f"unknown margin head '{kind}'; use one of {MARGIN_KINDS}")
        self.s, self.m, self.kind = float(s), float(m), kind
        self.kernel = nn.Parameter(torch.empty(in_features, out_features))
        nn.init.normal_(self.kernel, std=0.01)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        cos = F.normalize(embeddings, dim=1) @ F.normalize(self.kernel, dim=0)
        cos = cos.clamp(-1.0, 1.0)
        rows = torch.nonzero(labels != -1, as_tuple=True)[0]
        cols = labels[rows]
        target = cos[rows, cols]
        if self.kind == "cosface":
            with_margin = target - self.m
        else:
            with_margin = torch.cos(torch.acos(target.clamp(-_ACOS_LIMIT, _ACOS_LIMIT)) + self.m)
        cos = cos.index_put((rows, cols), with_margin)
        return cos * self.s
