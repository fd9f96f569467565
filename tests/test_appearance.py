"""Sample appearance: detection rate and CIELAB colour statistics of samples against training faces."""

import json

import numpy as np
import pytest

from idiff_core.evaluation.appearance import image_colour, sample_appearance
from idiff_core.io import write_png


def _flat(rgb, size=8):
    return np.full((size, size, 3), rgb, dtype=np.uint8)


def test_image_colour_follows_lightness_and_colourfulness():
    black, grey, white = (image_colour(_flat(v)) for v in ((0, 0, 0), (128, 128, 128), (255, 255, 255)))
    red, blue = image_colour(_flat((220, 30, 30))), image_colour(_flat((30, 30, 220)))
    assert black[0] < 1 and white[0] > 99 and 40 < grey[0] < 60
    assert max(black[3], grey[3], white[3]) < 1                       # greys have no chroma
    assert red[1] > 40 and red[3] > 40                                 # red: a* > 0
    assert blue[2] < -40 and blue[3] > 40                              # blue: b* < 0


def test_row_compares_samples_with_a_seeded_training_subset(tmp_path):
    for shard in range(2):
        for identity in range(3):
            for j in range(2):
                write_png(tmp_path / f"samples/shard{shard}/{shard}{identity}/{j}.png", _flat((120, 110, 100)))
    rng = np.random.default_rng(0)
    for i in range(30):
        write_png(tmp_path / f"ffhq/{i:05d}.png", rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
    (tmp_path / "summary.json").write_text(json.dumps({"detection_rate": 0.75}))
    run = lambda out: sample_appearance([tmp_path / "samples/shard0", tmp_path / "samples/shard1"], tmp_path / "ffhq",
                                        tmp_path / "summary.json", "toy", 10, 0, tmp_path / out)
    row = run("a.csv").iloc[0]
    assert row["dataset"] == "toy" and row["detection_rate"] == 0.75
    assert row["samples_images"] == 12 and row["training_images"] == 10
    assert row["samples_chroma_sd"] == pytest.approx(0, abs=1e-6)      # identical samples
    assert row["samples_chroma_mean"] < row["training_chroma_mean"]    # brownish grey vs random colours
    run("b.csv")
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()  # the same subset
