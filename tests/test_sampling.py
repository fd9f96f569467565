"""Sampling is reproducible, shard-invariant and resumable; contexts are what they claim to be."""

from __future__ import annotations

import csv
import dataclasses
import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from idiff_core.autoencoder import decode_latents
from idiff_core.checkpoint import save_state
from idiff_core.contexts import (ContextSettings, TwoStageSource, context_ids, make_contexts, real_contexts,
                                 uniform_contexts, write_contexts)
from idiff_core.embeddings import EmbeddingSettings
from idiff_core.diffusion.schedule import DiffusionSchedule, ddpm_checkpoint_state
from idiff_core.generation import GeneratorSpec, SamplerSettings
from idiff_core.io import load_matrix, save_matrix
from idiff_core.models.iresnet import iresnet
from idiff_core.models.unet import UNet, UNetConfig
from idiff_core.models.vq import VQConfig, VQDecoder
from idiff_core.sampling import SamplingSettings, identity_units, sample_shard, shard_units

UNET = dict(input_channels=3, initial_channels=32, channel_multipliers=[1, 2], is_attention=[False, True],
            attention_heads=-1, attention_head_channels=16, n_blocks_per_resolution=1, context_input_channels=512,
            context_channels=32, condition_type="CA", is_context_conditional=True, context_dropout_probability=0.25)
VQ = VQConfig(ch=32, ch_mult=[1, 1], num_res_blocks=1, attn_resolutions=[], z_channels=3, double_z=False,
              resolution=16, in_channels=3, out_ch=3, dropout=0.0, n_embed=16, embed_dim=3)
IMAGE_SIZE = 16


@pytest.fixture(scope="module")
def generator_files(tmp_path_factory) -> dict:
    """A tiny random UNet (released checkpoint layout), a tiny decoder and 5 uniform contexts."""
    root = tmp_path_factory.mktemp("generator")
    torch.manual_seed(0)
    unet = UNet(UNetConfig(**UNET))
    for p in unet.parameters():  # the zero-initialised layers would make every sample the same
        p.data.add_(0.02 * torch.randn_like(p))
    schedule = DiffusionSchedule.create(50, "linear")
    save_state(root / "ema.ckpt", ddpm_checkpoint_state(unet, schedule))
    save_state(root / "decoder.pt", VQDecoder(VQ).state_dict())
    settings = ContextSettings(kind="synthetic_uniform", count=5, seed=3, dim=512)
    write_contexts(root / "contexts.npz", uniform_contexts(5, 512, 3), settings, "test")
    return {"generator": GeneratorSpec(root / "ema.ckpt", UNetConfig(**UNET), root / "decoder.pt", VQ, IMAGE_SIZE),
            "contexts": root / "contexts.npz"}


def settings(shards: int, method: str = "ddim", steps: int | None = 4,
             decode_batch_size: int | None = None) -> SamplingSettings:
    return SamplingSettings(sampler=SamplerSettings(method=method, steps=steps, eta=0.5, guidance_scale=None,
                                                    batch_size=4, decode_batch_size=decode_batch_size),
                            images_per_identity=2, identities=5, seed=7, shards=shards)


def run_shards(files: dict, root: Path, sampling: SamplingSettings) -> dict[str, bytes]:
    """Run every shard into `root`; return {identity/j.png: file bytes} over all shards."""
    images = {}
    for shard in range(sampling.shards):
        out = root / f"shard{shard}"
        sample_shard(files["generator"], files["contexts"], out, root / f"shard{shard}.csv",
                     root / "state" / f"shard{shard}", sampling, shard=shard, device="cpu")
        images.update({p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*.png")})
    return images


def read_rgb_bytes(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def test_units_partition_identities_whatever_the_shard_count():
    assert [list(u) for u in identity_units(5, 2, 4)] == [[0, 1], [2, 3], [4]]
    for shards in (1, 2, 3):
        s = settings(shards)
        covered = sorted(i for k in range(shards) for u in shard_units(5, s, k) for i in u)
        assert covered == list(range(5))


def test_same_config_twice_gives_identical_files(generator_files, tmp_path):
    first = run_shards(generator_files, tmp_path / "a", settings(1))
    second = run_shards(generator_files, tmp_path / "b", settings(1))
    assert len(first) == 10 and first == second


def test_one_shard_and_three_shards_give_identical_images(generator_files, tmp_path):
    one = run_shards(generator_files, tmp_path / "one", settings(1))
    three = run_shards(generator_files, tmp_path / "three", settings(3))
    assert one == three
    identities = {name.split("/")[0] for name in one}
    assert identities == set(context_ids(5))
    # images differ between identities and between images of one identity
    assert len(set(one.values())) == len(one)


def test_decoding_in_smaller_chunks_gives_identical_images(generator_files, tmp_path, monkeypatch):
    import idiff_core.generation as generation

    whole = run_shards(generator_files, tmp_path / "whole", settings(1))
    chunks = []

    def recording(decoder, latents, batch_size, device):
        chunks.append(batch_size)
        return decode_latents(decoder, latents, batch_size, device)
    monkeypatch.setattr(generation, "decode_latents", recording)
    chunked = run_shards(generator_files, tmp_path / "chunked", settings(1, decode_batch_size=1))
    assert set(chunks) == {1} and chunked.keys() == whole.keys()
    # the same images; a chunk size may change float summation order, so a pixel may round the other way
    for name in whole:
        diff = np.abs(read_rgb_bytes(chunked[name]).astype(int) - read_rgb_bytes(whole[name]))
        assert diff.max() <= 1 and diff.mean() < 0.01, name


def test_killed_shard_resumes_without_duplicates(generator_files, tmp_path, monkeypatch):
    import idiff_core.sampling as sampling_module

    reference = run_shards(generator_files, tmp_path / "ref", settings(1))
    calls = {"n": 0}
    real_write = sampling_module._write_identity

    def dying_write(folder, images):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt("killed")
        real_write(folder, images)

    monkeypatch.setattr(sampling_module, "_write_identity", dying_write)
    with pytest.raises(KeyboardInterrupt):
        run_shards(generator_files, tmp_path / "resumed", settings(1))
    done = [p.name for p in (tmp_path / "resumed" / "state" / "shard0").glob("*/*") if p.is_dir()]
    assert sorted(done) == ["00000", "00001"]

    monkeypatch.setattr(sampling_module, "_write_identity", real_write)
    resumed = run_shards(generator_files, tmp_path / "resumed", settings(1))
    assert resumed == reference
    rows = list(csv.DictReader(open(tmp_path / "resumed" / "shard0.csv")))
    assert len(rows) == 10 and len({(r["identity"], r["image"]) for r in rows}) == 10


def test_ancestral_ddpm_sampling_runs(generator_files, tmp_path):
    images = run_shards(generator_files, tmp_path, settings(2, method="ddpm", steps=None))
    assert len(images) == 10


def test_too_few_contexts_is_a_clear_error(generator_files, tmp_path):
    too_many = SamplingSettings(sampler=settings(1).sampler, images_per_identity=2, identities=6, seed=0, shards=1)
    with pytest.raises(ValueError, match="holds 5 contexts but 6 identities"):
        sample_shard(generator_files["generator"], generator_files["contexts"], tmp_path / "o", tmp_path / "o.csv",
                     tmp_path / "s", too_many, shard=0, device="cpu")


def test_uniform_contexts_are_seeded_unit_vectors():
    a, b, c = uniform_contexts(100, 512, 0), uniform_contexts(100, 512, 0), uniform_contexts(100, 512, 1)
    assert a.dtype == np.float32 and a.shape == (100, 512)
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, rtol=1e-6)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    # roughly isotropic: mean vector near zero, pairwise cosines near zero
    assert np.abs(a.mean(axis=0)).max() < 0.05 and np.abs((a @ a.T)[np.triu_indices(100, 1)]).mean() < 0.06


def test_real_contexts_are_a_seeded_subset(tmp_path):
    matrix = np.random.default_rng(0).normal(size=(20, 8)).astype(np.float32)
    save_matrix(tmp_path / "e.npz", [f"img{i}" for i in range(20)], matrix)
    names, chosen = real_contexts(tmp_path / "e.npz", 5, seed=1)
    assert len(set(names)) == 5 and real_contexts(tmp_path / "e.npz", 5, seed=1)[0] == names
    rows = [int(n[3:]) for n in names]
    np.testing.assert_allclose(chosen, matrix[rows] / np.linalg.norm(matrix[rows], axis=1, keepdims=True), rtol=1e-6)
    with pytest.raises(ValueError, match="holds only 20"):
        real_contexts(tmp_path / "e.npz", 21, seed=1)


def test_make_contexts_writes_each_kind_with_its_seed_and_source(tmp_path):
    uniform = ContextSettings(kind="synthetic_uniform", count=3, seed=5, dim=512)
    make_contexts(uniform, tmp_path / "c.npz")
    ids, matrix, meta = load_matrix(tmp_path / "c.npz")
    assert ids == ["00000", "00001", "00002"] and np.array_equal(matrix, uniform_contexts(3, 512, 5))
    assert meta["seed"] == 5 and meta["kind"] == "synthetic_uniform" and meta["source"] == "N(0, I), L2-normalised"

    save_matrix(tmp_path / "e.npz", [f"img{i}" for i in range(20)], np.random.default_rng(0).normal(size=(20, 8)))
    real = ContextSettings(kind="real", count=4, seed=1, dim=8)
    make_contexts(real, tmp_path / "r.npz", vectors=tmp_path / "e.npz")
    _, matrix, meta = load_matrix(tmp_path / "r.npz")
    names, chosen = real_contexts(tmp_path / "e.npz", 4, seed=1)
    assert meta["source_names"] == names and np.array_equal(matrix, chosen)
    with pytest.raises(ValueError, match="real contexts need `vectors`"):
        make_contexts(real, tmp_path / "x.npz")

    released = {f"id_{i}": v for i, v in enumerate(np.random.default_rng(1).normal(size=(6, 8)).astype(np.float32))}
    torch.save(released, tmp_path / "random_synthetic_uniform_5000.npy")  # the release's form: a torch.save'd dict
    make_contexts(ContextSettings(kind="file", count=4, seed=0, dim=8), tmp_path / "f.npz",
                  vectors=tmp_path / "random_synthetic_uniform_5000.npy")
    ids, matrix, meta = load_matrix(tmp_path / "f.npz")
    first = np.stack(list(released.values())[:4])
    assert ids == context_ids(4) and meta["source_names"] == ["id_0", "id_1", "id_2", "id_3"]  # the file's order
    np.testing.assert_allclose(matrix, first / np.linalg.norm(first, axis=1, keepdims=True), rtol=1e-6)
    with pytest.raises(ValueError, match="8-d vectors; the context set's dim is 16"):
        make_contexts(ContextSettings(kind="file", count=4, seed=0, dim=16), tmp_path / "x.npz",
                      vectors=tmp_path / "random_synthetic_uniform_5000.npy")
    with pytest.raises(ValueError, match="holds only 6 vectors"):
        make_contexts(ContextSettings(kind="file", count=7, seed=0, dim=8), tmp_path / "x.npz",
                      vectors=tmp_path / "random_synthetic_uniform_5000.npy")
    with pytest.raises(ValueError, match="unknown context kind 'gaussian'"):
        make_contexts(ContextSettings(kind="gaussian", count=3, seed=0, dim=8), tmp_path / "x.npz")


def test_two_stage_contexts_embed_the_unconditional_generators_faces(generator_files, tmp_path):
    torch.manual_seed(1)
    unconditional = UNetConfig(**{**UNET, "is_context_conditional": False, "condition_type": "AdaGN"})
    unet = UNet(unconditional)
    for p in unet.parameters():
        p.data.add_(0.02 * torch.randn_like(p))
    save_state(tmp_path / "uncond.ckpt", ddpm_checkpoint_state(unet, DiffusionSchedule.create(50, "linear")))
    embedder = EmbeddingSettings(arch=[1, 1, 1, 1], num_features=16, base_width=8, input_size=32, batch_size=4,
                                 flip_sum=False)
    save_state(tmp_path / "backbone.pt", iresnet([1, 1, 1, 1], num_features=16, base_width=8, input_size=32).state_dict())
    conditional = generator_files["generator"]
    source = TwoStageSource(dataclasses.replace(conditional, checkpoint=tmp_path / "uncond.ckpt", unet=unconditional),
                            tmp_path / "backbone.pt", embedder,
                            SamplerSettings(method="ddim", steps=2, eta=0.0, guidance_scale=None, batch_size=2))
    settings_ = ContextSettings(kind="two_stage", count=3, seed=0, dim=16)
    for name in ("a.npz", "b.npz"):
        make_contexts(settings_, tmp_path / name, two_stage=source)
    ids, matrix, meta = load_matrix(tmp_path / "a.npz")
    assert ids == context_ids(3) and matrix.shape == (3, 16) and meta["source"].startswith("two-stage: ")
    np.testing.assert_allclose(np.linalg.norm(matrix, axis=1), 1.0, rtol=1e-5)
    assert np.unique(matrix.round(4), axis=0).shape[0] == 3  # three different faces
    assert np.array_equal(matrix, load_matrix(tmp_path / "b.npz")[1])  # seeded
    with pytest.raises(ValueError, match="UNCONDITIONAL"):
        make_contexts(settings_, tmp_path / "c.npz", two_stage=dataclasses.replace(source, generator=conditional))
    with pytest.raises(ValueError, match="two_stage contexts need `two_stage`"):
        make_contexts(settings_, tmp_path / "c.npz")

