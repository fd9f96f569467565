"""Job start-up cost: every workflow job is a fresh Python process, so module imports are paid per job."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from torch import nn

from idiff_core.runtime import cpu_channels_last


@pytest.mark.parametrize("module", ["idiff_core.sampling", "idiff_core.assembly", "idiff_core.training.fr"])
def test_stages_without_face_detection_or_randaugment_do_not_import_torchvision(module):
    """torchvision loads torch._dynamo (~4 s per job): only MTCNN and the RandAugment ops may import it."""
    code = f"import sys, {module}; print('torchvision' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_cpu_channels_last_keeps_values_and_names():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.GroupNorm(2, 8), nn.SiLU(), nn.Conv2d(8, 4, 1))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    x = torch.randn(2, 3, 12, 12)
    expected = net(x)
    assert cpu_channels_last(net, torch.device("cpu")) is net
    assert net[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert net.state_dict().keys() == before.keys()
    assert all(torch.equal(net.state_dict()[k], v) for k, v in before.items())
    torch.testing.assert_close(net(x), expected, rtol=1e-5, atol=1e-5)
