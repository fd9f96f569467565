"""UNet denoiser: parity with the original on the small fixtures, paper-size key manifests, CPD."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from idiff_core.diffusion.schedule import DiffusionSchedule, ddpm_checkpoint_state, load_ddpm_checkpoint
from idiff_core.models.unet import UNet, UNetConfig
from refdata import discover, reference_dir

TOL = 1e-5

PAPER = dict(input_channels=3, initial_channels=96, channel_multipliers=[1, 2, 2, 2],
             is_attention=[False, True, True, True], attention_heads=-1, attention_head_channels=32,
             n_blocks_per_resolution=2, context_input_channels=512, context_channels=256,
             n_context_classes=0, learn_empty_context=False)
PAPER_CONFIGS = {
    "unet_cond_ca_cpd25": (dict(PAPER, condition_type="CA", is_context_conditional=True,
                                context_dropout_probability=0.25), 216_341_187),
    "unet_cond_adagn_cpd25": (dict(PAPER, condition_type="AdaGN", is_context_conditional=True,
                                   context_dropout_probability=0.25), 134_595_939),
    "unet_uncond_adagn": (dict(PAPER, condition_type="AdaGN", is_context_conditional=False,
                               context_dropout_probability=0.0), 132_392_163),
}

TINY = dict(input_channels=3, initial_channels=32, channel_multipliers=[1, 2], is_attention=[False, True],
            attention_heads=-1, attention_head_channels=16, n_blocks_per_resolution=1,
            context_input_channels=512, context_channels=32, condition_type="CA",
            is_context_conditional=True, context_dropout_probability=0.25)


def _manifest(unet: torch.nn.Module) -> list[list[str]]:
    return [[key, str(tuple(value.shape)), str(value.dtype).removeprefix("torch.")]
            for key, value in unet.state_dict().items()]


def _read_manifest(path: Path) -> list[list[str]]:
    return [line.rstrip("\n").split("\t") for line in path.read_text().splitlines() if line.strip()]


def _load_fixture(io_path: Path) -> tuple[dict, UNet]:
    io = torch.load(io_path, weights_only=True)
    state = {}
    for name in io["weight_files"]:
        state.update(torch.load(io_path.parent / name, weights_only=True))
    assert list(state) == io["state_dict_keys"]
    unet = UNet(UNetConfig(**io["config"])).eval()
    unet.load_state_dict(state, strict=True)
    return io, unet


@pytest.mark.parametrize("io_path", discover("unet", "unet_*_io.pt"))
def test_unet_matches_original_outputs(io_path):
    io, unet = _load_fixture(io_path)
    assert sum(p.numel() for p in unet.parameters()) == io["parameter_count"]
    context = io.get("context")
    with torch.no_grad():
        checks = {"expected_time_embedding": lambda: unet.time_emb(io["t"]),
                  "expected_context_embedding": lambda: unet.context_emb(context),
                  "expected_out": lambda: unet(io["x"], io["t"], context),
                  "expected_out_context_none": lambda: unet(io["x"], io["t"], None),
                  "expected_out_with_dropout_mask": lambda: unet(io["x"], io["t"], context, io["dropout_mask"])}
        present = [key for key in checks if key in io]
        assert "expected_out" in present
        for key in present:
            diff = (checks[key]() - io[key]).abs().max().item()
            assert diff <= TOL, f"{key}: max |diff| {diff:.3g}"


@pytest.mark.parametrize("io_path", discover("unet", "unet_*_io.pt"))
def test_unet_small_manifest(io_path):
    io = torch.load(io_path, weights_only=True)
    manifest = io_path.parent / io_path.name.replace("_io.pt", ".tsv").replace("unet_", "manifest_unet_", 1)
    if not manifest.exists():
        pytest.skip(f"no manifest {manifest.name}")
    with torch.device("meta"):
        unet = UNet(UNetConfig(**io["config"]))
    assert _manifest(unet) == _read_manifest(manifest)


@pytest.mark.parametrize("name", sorted(PAPER_CONFIGS))
def test_paper_unet_keys_and_parameter_count(name):
    config, n_params = PAPER_CONFIGS[name]
    with torch.device("meta"):
        unet = UNet(UNetConfig(**config))
    assert sum(p.numel() for p in unet.parameters()) == n_params
    bare = reference_dir() / "unet" / f"manifest_{name}.tsv"
    wrapped = reference_dir() / "unet" / f"manifest_{name}__ddpm_checkpoint.tsv"
    if not bare.exists():
        pytest.skip(f"shared manifest {bare} not available")
    assert _manifest(unet) == _read_manifest(bare)
    schedule = DiffusionSchedule.create(1000, "linear")
    expected = [[k, str(tuple(v.shape)), "float32"] for k, v in schedule.buffers().items()]
    expected += [["eps_model." + key, shape, dtype] for key, shape, dtype in _manifest(unet)]
    assert expected == _read_manifest(wrapped)


def test_zero_initialised_layers_and_empty_context():
    torch.manual_seed(0)
    unet = UNet(UNetConfig(**TINY))
    zeroed = [k for k, v in unet.state_dict().items() if not v.any()]
    assert "final.weight" in zeroed and "down.0.res.conv2.weight" in zeroed and "middle.attn.x_proj_out.weight" in zeroed
    assert not unet.state_dict()["down.0.res.conv1.weight"].eq(0).all()
    x, t = torch.randn(2, 3, 8, 8), torch.tensor([3, 900])
    assert torch.equal(unet(x, t), torch.zeros_like(x))  # zero-initialised output layer
    c = unet.embed_context(None, 2)
    assert c.shape == (2, 32) and not c.any()


def _randomise(unet: torch.nn.Module, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in unet.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))


def test_dropout_mask_equals_context_none_rows_and_cpd_only_in_training():
    torch.manual_seed(0)
    unet = UNet(UNetConfig(**TINY))
    _randomise(unet, 1)
    x, t = torch.randn(3, 3, 8, 8), torch.tensor([5, 500, 999])
    context = torch.nn.functional.normalize(torch.randn(3, 512), dim=1)
    mask = torch.tensor([True, False, True])
    with torch.no_grad():
        unet.eval()
        masked, none, full = unet(x, t, context, mask), unet(x, t, None), unet(x, t, context)
        assert torch.allclose(masked[mask], none[mask], atol=1e-6)
        assert torch.allclose(masked[~mask], full[~mask], atol=1e-6)
        assert torch.equal(unet(x, t, context), full)  # eval: no CPD
        unet.train()
        c1, c2 = unet.embed_context(context, 3), unet.embed_context(context, 3)
    projected = unet.context_emb(context)
    dropped = c1 == 0
    assert 0.1 < dropped.float().mean() < 0.4  # p = 0.25, element-wise
    assert not torch.equal(c1, c2)
    assert torch.allclose(c1[~dropped], projected[~dropped] / 0.75, atol=1e-6)


def test_unconditional_unet_ignores_context():
    config = dict(TINY, condition_type="AdaGN", is_context_conditional=False, context_dropout_probability=0.0)
    unet = UNet(UNetConfig(**config)).eval()
    _randomise(unet, 2)
    assert not any(k.startswith("context_emb") for k in unet.state_dict())
    x, t = torch.randn(2, 3, 8, 8), torch.tensor([1, 2])
    with torch.no_grad():
        assert torch.equal(unet(x, t), unet(x, t, torch.randn(2, 512)))


@pytest.mark.parametrize("bad", [dict(condition_type="FiLM"), dict(is_attention=[True]),
                                 dict(learn_empty_context=True), dict(initial_channels=48),
                                 dict(context_dropout_probability=1.0)])
def test_bad_config_is_refused(bad):
    with pytest.raises(ValueError):
        UNet(UNetConfig(**dict(TINY, **bad)))


def test_norm_groups_reach_every_group_norm_and_keep_the_key_layout():
    published, narrow = UNet(UNetConfig(**TINY)), UNet(UNetConfig(**TINY, norm_groups=8))
    groups = lambda model: {m.num_groups for m in model.modules() if isinstance(m, torch.nn.GroupNorm)}
    assert groups(published) == {32} and groups(narrow) == {8}
    assert _manifest(published) == _manifest(narrow)
    with pytest.raises(ValueError, match="norm_groups"):
        UNet(UNetConfig(**TINY, norm_groups=24))


def test_ddpm_checkpoint_round_trip_and_mismatch(tmp_path):
    unet = UNet(UNetConfig(**TINY))
    _randomise(unet, 3)
    schedule = DiffusionSchedule.create(50, "linear")
    state = ddpm_checkpoint_state(unet, schedule)
    assert list(state)[:8] == list(schedule.buffers()) and list(state)[8] == "eps_model.image_proj.weight"
    path = tmp_path / "model.ckpt"
    torch.save(state, path)
    fresh = UNet(UNetConfig(**TINY))
    loaded = load_ddpm_checkpoint(path, fresh)
    assert loaded.n_steps == 50 and torch.equal(loaded.alpha_bars, schedule.alpha_bars)
    assert all(torch.equal(a, b) for a, b in zip(unet.state_dict().values(), fresh.state_dict().values()))
    other = UNet(UNetConfig(**dict(TINY, condition_type="AdaGN")))
    with pytest.raises(ValueError, match="does not fit this UNet config"):
        load_ddpm_checkpoint(path, other)
