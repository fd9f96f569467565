"""Job start-up cost: every workflow job is a fresh Python process, so module imports are paid per job."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize("module", ["idiff_core.sampling", "idiff_core.assembly", "idiff_core.training.fr"])
def test_stages_without_face_detection_or_randaugment_do_not_import_torchvision(module):
    """torchvision loads torch._dynamo (~4 s per job): only MTCNN and the RandAugment ops may import it."""
    code = f"import sys, {module}; print('torchvision' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"

