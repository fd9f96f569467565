"""The LFW-context experiment: score sets on LFW's pairs, their statistics, and the whole stage on a
tiny random generator, decoder and embedder."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from idiff_core.checkpoint import save_state
from idiff_core.diffusion.schedule import DiffusionSchedule, ddpm_checkpoint_state
from idiff_core.embeddings import EmbeddingSettings, embed_images
from idiff_core.data.benchmarks import LfwPair
from idiff_core.evaluation.lfw_contexts import (COMPARISONS, LfwContextOutputs, LfwContextSettings, LfwFiles, image_key,
                                                lfw_context_experiment, pair_scores, score_statistics, select_pairs)
from idiff_core.generation import GeneratorSpec, SamplerSettings
from idiff_core.io import read_rgb, save_matrix, write_png
from idiff_core.models.iresnet import iresnet, load_backbone
from idiff_core.models.unet import UNet, UNetConfig
from idiff_core.models.vq import VQConfig, VQDecoder
from idiff_core.settings import settings_from_dict

UNET = dict(input_channels=3, initial_channels=32, channel_multipliers=[1, 2], is_attention=[False, True],
            attention_heads=-1, attention_head_channels=16, n_blocks_per_resolution=1, context_input_channels=512,
            context_channels=32, condition_type="CA", is_context_conditional=True, context_dropout_probability=0.25)
VQ = VQConfig(ch=32, ch_mult=[1, 1], num_res_blocks=1, attn_resolutions=[], z_channels=3, double_z=False,
              resolution=16, in_channels=3, out_ch=3, dropout=0.0, n_embed=16, embed_dim=3)
EMBEDDER = {"arch": [1, 1, 1, 1], "num_features": 512, "base_width": 8, "input_size": 112, "batch_size": 8, "flip_sum": False}
SAMPLER = {"method": "ddim", "steps": 3, "eta": 0.0, "guidance_scale": None, "batch_size": 8}
UNCONDITIONAL = {**UNET, "is_context_conditional": False, "condition_type": "AdaGN"}
PEOPLE = ["Ann_A", "Bob_B", "Cy_C", "Di_D"]
PAIRS = "2\t2\nAnn_A 1 2\nBob_B 1 2\nAnn_A 1 Cy_C 1\nBob_B 2 Di_D 1\nCy_C 1 2\nDi_D 1 2\nAnn_A 2 Di_D 2\nBob_B 1 Cy_C 2\n"


def lfw_settings(**overrides) -> LfwContextSettings:
    values = {"seed": 3, "variations_per_image": 2, "pairs_per_class": None, "grid_rows": 3, "sampler": SAMPLER,
              "embedder": EMBEDDER, **overrides}
    return settings_from_dict(LfwContextSettings, values, "evaluation.lfw_contexts")


def test_pair_scores_follow_the_pairs_and_their_labels():
    rng = np.random.default_rng(0)
    unit = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)  # noqa: E731
    real, variations = unit(rng.normal(size=(4, 8))), unit(rng.normal(size=(4, 3, 8)))
    first, second, issame = np.array([0, 1, 0]), np.array([1, 2, 3]), np.array([True, False, True])
    scores = pair_scores(real, variations, first, second, issame)
    np.testing.assert_allclose(scores["real_real_genuine"], [real[0] @ real[1], real[0] @ real[3]])
    np.testing.assert_allclose(scores["real_real_impostor"], [real[1] @ real[2]])
    # pair (1, 2): 1 vs the variations of 2, then 2 vs the variations of 1
    np.testing.assert_allclose(scores["real_variation_impostor"],
                               np.concatenate([variations[2] @ real[1], variations[1] @ real[2]]))
    np.testing.assert_allclose(scores["variation_variation_impostor"], (variations[1] @ variations[2].T).ravel())
    assert scores["real_variation_genuine"].size == 2 * 2 * 3 and scores["variation_variation_genuine"].size == 2 * 9
    np.testing.assert_allclose(scores["real_own_variation_genuine"], np.einsum("ud,uvd->uv", real, variations).ravel())
    assert "real_own_variation_impostor" not in scores


def test_statistics_per_comparison():
    scores = {f"{c}_genuine": np.array([0.8, 0.9, 1.0]) for c in COMPARISONS}
    scores.update({f"{c}_impostor": np.array([0.0, 0.1]) for c in COMPARISONS[:3]})
    scores["real_variation_impostor"] = np.array([0.85, 0.95, 0.0])  # overlapping: EER > 0
    stats = score_statistics(scores).set_index("comparison")
    assert list(stats.index) == list(COMPARISONS)
    assert stats.loc["real_real", "eer"] == 0 and stats.loc["real_real", "genuine_mean"] == pytest.approx(0.9)
    assert stats.loc["real_real", "impostor_std"] == pytest.approx(0.05)
    assert stats.loc["real_variation", "eer"] > 0
    assert stats.loc["real_own_variation", "n_impostor"] == 0
    assert np.isnan(stats.loc["real_own_variation", ["impostor_mean", "eer", "d_prime"]].astype(float)).all()


def test_pair_subset_is_balanced_seeded_and_in_file_order():
    pairs = [LfwPair("A", i, "A", i + 1, True) for i in range(10)] + [LfwPair("A", i, "B", i, False) for i in range(10)]
    chosen = select_pairs(pairs, 3, seed=1)
    assert sum(p.issame for p in chosen) == 3 and len(chosen) == 6
    assert chosen == select_pairs(pairs, 3, seed=1) and chosen != select_pairs(pairs, 3, seed=2)
    assert chosen == sorted(chosen, key=pairs.index)
    assert select_pairs(pairs, None, seed=1) == pairs
    with pytest.raises(ValueError, match="11 genuine pairs requested"):
        select_pairs(pairs, 11, seed=1)


def test_settings_are_checked():
    with pytest.raises(ValueError, match="variations_per_image"):
        lfw_settings(variations_per_image=0)
    with pytest.raises(ValueError, match="missing setting"):
        settings_from_dict(LfwContextSettings, {"seed": 0, "sampler": SAMPLER, "embedder": EMBEDDER})
    nested = lfw_settings()  # sub-mappings become their own settings classes, checked the same way
    assert isinstance(nested.sampler, SamplerSettings) and isinstance(nested.embedder, EmbeddingSettings)
    with pytest.raises(ValueError, match=r"unknown setting\(s\) \['stepz'\] in evaluation.lfw_contexts.sampler"):
        lfw_settings(sampler={**SAMPLER, "stepz": 3})


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict:
    """Tiny LFW-like folder + pairs, a random conditional generator, decoder and 512-d embedder,
    and the LFW embeddings made by that embedder (as extract_embeddings names them)."""
    root = tmp_path_factory.mktemp("lfw_contexts")
    rng = np.random.default_rng(0)
    for person in PEOPLE:
        for idx in (1, 2):
            write_png(root / "lfw" / person / f"{person}_{idx:04d}.png", rng.integers(0, 256, (16, 16, 3), np.uint8))
    (root / "pairs.txt").write_text(PAIRS)
    torch.manual_seed(0)
    unet = UNet(UNetConfig(**UNET))
    for p in unet.parameters():  # zero-initialised layers would ignore the context
        p.data.add_(0.05 * torch.randn_like(p))
    save_state(root / "ema.ckpt", ddpm_checkpoint_state(unet, DiffusionSchedule.create(50, "linear")))
    unconditional = UNet(UNetConfig(**UNCONDITIONAL))
    save_state(root / "uncond.ckpt", ddpm_checkpoint_state(unconditional, DiffusionSchedule.create(50, "linear")))
    save_state(root / "decoder.pt", VQDecoder(VQ).state_dict())
    torch.save(iresnet([1, 1, 1, 1], num_features=512, base_width=8).state_dict(), root / "backbone.pt")
    keys = [image_key(p, i) for p in PEOPLE for i in (1, 2)]
    model = load_backbone(root / "backbone.pt", [1, 1, 1, 1], 512, base_width=8)
    images = np.stack([read_rgb(root / "lfw" / f"{k}.png") for k in keys])
    save_matrix(root / "lfw.npz", keys, embed_images(model, images, 8, "cpu", flip_sum=False))
    return {"root": root}


def run(world: dict, out, settings: LfwContextSettings, generator: str = "ema.ckpt", embeddings: str = "lfw.npz",
        unet: dict = UNET):
    root = world["root"]
    out.mkdir(exist_ok=True)
    return lfw_context_experiment(
        LfwFiles(root / embeddings, root / "lfw", root / "pairs.txt"),
        GeneratorSpec(root / generator, UNetConfig(**unet), root / "decoder.pt", VQ, 16), root / "backbone.pt", "toy",
        settings, LfwContextOutputs(out / "toy.csv", out / "toy_scores.npz", out / "toy_hist.png", out / "toy_grid.png"),
        "cpu")


def test_stage_writes_statistics_scores_and_figures_reproducibly(world, tmp_path):
    stats = run(world, tmp_path / "a", lfw_settings())
    table = pd.read_csv(tmp_path / "a" / "toy.csv").set_index("comparison")
    assert list(table.index) == list(COMPARISONS)
    assert (table["generator"] == "toy").all() and (table["pairs"] == 8).all() and (table["images"] == 8).all()
    # 4 genuine pairs: 1 real-real score each, 2 x 2 real-variation, 2 x 2 variation-variation
    assert table["n_genuine"].tolist() == [4, 16, 16, 16] and table["n_impostor"].tolist()[:3] == [4, 16, 16]
    with np.load(tmp_path / "a" / "toy_scores.npz") as scores:
        assert scores["issame"].tolist() == [True, True, False, False, True, True, False, False]
        real_real = scores["real_real_genuine"].copy()
        variation = scores["variation_variation_impostor"].copy()
    embeddings = np.load(world["root"] / "lfw.npz")["matrix"]
    # pair 1 is Ann_A 1 vs Ann_A 2: rows 0 and 1 of the embeddings
    assert real_real[0] == pytest.approx(float(embeddings[0] @ embeddings[1]), abs=1e-5)
    assert np.all(np.abs(variation) <= 1 + 1e-6) and np.unique(variation).size > 1
    grid = read_rgb(tmp_path / "a" / "toy_grid.png")
    assert grid.shape == (3 * 18 + 2, 3 * 18 + 2, 3)  # 3 rows of real + 2 variations, 16 px + 2 px padding
    assert (tmp_path / "a" / "toy_hist.png").stat().st_size > 0
    pd.testing.assert_frame_equal(stats.reset_index(drop=True), pd.read_csv(tmp_path / "a" / "toy.csv"),
                                  check_dtype=False)

    run(world, tmp_path / "b", lfw_settings())
    assert (tmp_path / "a" / "toy.csv").read_bytes() == (tmp_path / "b" / "toy.csv").read_bytes()
    run(world, tmp_path / "c", lfw_settings(seed=4, pairs_per_class=1, variations_per_image=1))
    subset = pd.read_csv(tmp_path / "c" / "toy.csv")
    assert (subset["pairs"] == 2).all() and subset["n_genuine"].tolist() == [1, 2, 1, subset["images"][0]]


def test_stage_refuses_an_unconditional_generator_and_missing_embeddings(world, tmp_path):
    with pytest.raises(ValueError, match="CONDITIONAL"):
        run(world, tmp_path, lfw_settings(), generator="uncond.ckpt", unet=UNCONDITIONAL)
    root = world["root"]
    names = [image_key(p, i) for p in PEOPLE[:3] for i in (1, 2)]
    save_matrix(root / "partial.npz", names, np.eye(len(names), 512, dtype=np.float32))
    with pytest.raises(ValueError, match=r"lacks the embeddings of 2 pair image\(s\).*Di_D/Di_D_0001"):
        run(world, tmp_path, lfw_settings(), embeddings="partial.npz")
