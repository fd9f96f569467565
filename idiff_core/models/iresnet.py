"""IResNet face-recognition backbones, state-dict compatible with insightface / ElasticFace.

Key names, order and shapes follow the published checkpoints (e.g. ElasticFace's
`Elastic_R100_295672backbone.pth`), so those weights load by key and our trained backbones load in
insightface-style code. `base_width` and `input_size` only exist to allow small, fast stand-ins; at
their defaults (64, 112) the network is exactly the published one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from ..checkpoint import state_dict_mismatches, strip_wrapper_prefix

ARCH_LAYERS: dict[str, tuple[int, int, int, int]] = {
    "iresnet18": (2, 2, 2, 2),
    "iresnet34": (3, 4, 6, 3),
    "iresnet50": (3, 4, 14, 3),
    "iresnet100": (3, 13, 30, 3),
    "iresnet200": (3, 24, 60, 3),
}

ELASTICFACE_WEIGHTS = "Elastic_R100_295672backbone.pth"
BN_EPS = 1e-5


def _conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


class IBasicBlock(nn.Module):
    """BN -> conv -> BN -> PReLU -> strided conv -> BN, plus the shortcut; no activation after the sum."""

    def __init__(self, inplanes: int, planes: int, stride: int, downsample: nn.Module | None):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(inplanes, eps=BN_EPS)
        self.conv1 = _conv3x3(inplanes, planes)
        self.bn2 = nn.BatchNorm2d(planes, eps=BN_EPS)
        self.prelu = nn.PReLU(planes)
        self.conv2 = _conv3x3(planes, planes, stride)
        self.bn3 = nn.BatchNorm2d(planes, eps=BN_EPS)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        shortcut = x if self.downsample is None else self.downsample(x)
        return out + shortcut


class IResNet(nn.Module):
    """Stem, four stages of IBasicBlocks (first block of each strides by 2), BN, dropout, fc, BN1d.

    The output is the raw `features` BatchNorm1d output; callers L2-normalise it.
    """

    def __init__(self, layers: Sequence[int], num_features: int = 512, dropout: float = 0.0,
                 base_width: int = 64, input_size: int = 112):
        super().__init__()
        if len(layers) != 4 or any(int(n) < 1 for n in layers):
            raise ValueError(f"iresnet needs four positive block counts, got {list(layers)}")
        widths = [base_width * 2 ** i for i in range(4)]
        self.input_size = input_size  # the image side the network reads (its fc layer depends on it)
        self.conv1 = _conv3x3(3, base_width)
        self.bn1 = nn.BatchNorm2d(base_width, eps=BN_EPS)
        self.prelu = nn.PReLU(base_width)
        inplanes = base_width
        for index, (planes, blocks) in enumerate(zip(widths, layers), start=1):
            setattr(self, f"layer{index}", self._make_layer(inplanes, planes, int(blocks)))
            inplanes = planes
        self.bn2 = nn.BatchNorm2d(inplanes, eps=BN_EPS)
        self.dropout = nn.Dropout(p=dropout)
        spatial = input_size
        for _ in range(4):
            spatial = (spatial + 1) // 2  # each stage's stride-2 3x3 conv with padding 1
        self.fc = nn.Linear(inplanes * spatial * spatial, num_features)
        self.features = nn.BatchNorm1d(num_features, eps=BN_EPS)
        self._init_weights()

    @staticmethod
    def _make_layer(inplanes: int, planes: int, blocks: int) -> nn.Sequential:
        downsample = nn.Sequential(nn.Conv2d(inplanes, planes, kernel_size=1, stride=2, bias=False),
                                   nn.BatchNorm2d(planes, eps=BN_EPS))
        modules = [IBasicBlock(inplanes, planes, 2, downsample)]
        modules += [IBasicBlock(planes, planes, 1, None) for _ in range(blocks - 1)]
        return nn.Sequential(*modules)

    def _init_weights(self) -> None:
        """insightface's initialisation: convs N(0, 0.1), BN weight 1 and bias 0; none for meta (shape-only) models."""
        if self.conv1.weight.is_meta:
            return
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, 0.0, 0.1)
            elif isinstance(module, (nn.BatchNorm2d, nn.BatchNorm1d)):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.prelu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = torch.flatten(self.bn2(x), 1)
        return self.features(self.fc(self.dropout(x)))


def arch_layers(arch: str | Sequence[int]) -> tuple[int, ...]:
    """Block counts for a named architecture (`iresnet50`) or a layer list given directly."""
    if isinstance(arch, str):
        if arch not in ARCH_LAYERS:
            raise ValueError(f"unknown iresnet arch '{arch}'; use one of {sorted(ARCH_LAYERS)} or a list "
                             f"of four block counts")
        return ARCH_LAYERS[arch]
    return tuple(int(n) for n in arch)


def iresnet(arch: str | Sequence[int], num_features: int = 512, dropout: float = 0.0, base_width: int = 64,
            input_size: int = 112) -> IResNet:
    """Build any iresnet: `iresnet("iresnet100")` is ElasticFace's backbone, `iresnet([1, 1, 1, 1])` a tiny one."""
    return IResNet(arch_layers(arch), num_features=num_features, dropout=dropout, base_width=base_width,
                   input_size=input_size)


def load_backbone(path: str | os.PathLike, arch: str | Sequence[int], num_features: int = 512, *,
                  base_width: int = 64, input_size: int = 112) -> IResNet:
    """Load a published (or our) iresnet checkpoint, a plain state dict, into an eval-mode model on CPU."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"face-recognition backbone weights not found at {path}. The paper's embedder is ElasticFace-Arc "
            f"({ELASTICFACE_WEIGHTS}) from the ElasticFace project (https://github.com/fdbtrs/ElasticFace; "
            f"its README links the pretrained models, which need a browser to download). Download it and "
            f"put the file at {path} (the configured backbone path), or point the configuration at your copy.")
    state_dict = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state_dict, dict):
        raise ValueError(f"{path} does not hold a plain state dict (found {type(state_dict).__name__})")
    state_dict, _ = strip_wrapper_prefix(state_dict)
    model = iresnet(arch, num_features=num_features, base_width=base_width, input_size=input_size)
    problems = state_dict_mismatches(model.state_dict(), state_dict)
    if problems:
        shown = "\n  ".join(problems)
        raise ValueError(f"{path} does not match iresnet arch={arch} num_features={num_features} "
                         f"base_width={base_width} input_size={input_size}:\n  {shown}")
    model.load_state_dict(state_dict)
    return model.eval()


@dataclass(frozen=True)
class BackboneSpec:
    """Which iresnet a backbone file holds and the image side it reads (the published ones: 112)."""

    arch: str | list[int]
    num_features: int
    base_width: int
    input_size: int

    def load(self, path: str | os.PathLike) -> IResNet:
        """The backbone at `path`, checked against this spec (see `load_backbone`)."""
        return load_backbone(path, self.arch, self.num_features, base_width=self.base_width,
                             input_size=self.input_size)
