"""VQ-f4 first stage: numerical parity with the reference fixtures and the paper config's key manifests."""

from pathlib import Path

import pytest
import torch

from idiff_core.models.vq import VQConfig, VQDecoder, VQEncoder, VQModel
from refdata import discover

PAPER = dict(ch=128, ch_mult=[1, 2, 4], num_res_blocks=2, attn_resolutions=[], z_channels=3, double_z=False,
             resolution=256, in_channels=3, out_ch=3, dropout=0.0, n_embed=8192, embed_dim=3)
PREFIX = "first_stage_model."


def _config(io: dict) -> VQConfig:
    return VQConfig(**io["config"]["ddconfig"], n_embed=io["config"]["n_embed"], embed_dim=io["config"]["embed_dim"])


def _fixture_weights(io_path: Path) -> dict:
    """The first-stage weights of the fake LDM checkpoint that accompanies an `*_io.pt` fixture."""
    ckpt = io_path.with_name(io_path.name.replace("_io.pt", "_fake_ldm.ckpt"))
    state = torch.load(ckpt, weights_only=True)["state_dict"]
    return {k[len(PREFIX):]: v for k, v in state.items() if k.startswith(PREFIX)}


def _part(model: torch.nn.Module, weights: dict) -> torch.nn.Module:
    model.load_state_dict({k: weights[k] for k in model.state_dict()}, strict=True)
    return model.eval()


@pytest.mark.parametrize("io_path", discover("vq", "vq_*_io.pt"))
def test_parity_with_reference(io_path):
    io = torch.load(io_path, weights_only=True)
    cfg, weights = _config(io), _fixture_weights(io_path)
    encoder, decoder = _part(VQEncoder(cfg), weights), _part(VQDecoder(cfg), weights)
    with torch.no_grad():
        assert (encoder(io["x"]) - io["expected_encoder_out"]).abs().max() <= 2e-5
        for latent, suffix in ((io["expected_encoder_out"], ""), (io["latent2"], "2")):
            q = decoder.quantize(latent)
            assert torch.equal(q.indices, io[f"expected_indices{suffix}"])
            assert (q.straight_through - io[f"expected_quantized{suffix}"]).abs().max() <= 1e-6
            assert (decoder(latent) - io[f"expected_decoder_out{suffix}"]).abs().max() <= 5e-5
        unquantised = decoder(io["expected_encoder_out"], force_not_quantize=True)
        assert (unquantised - io["expected_decoder_out_force_not_quantize"]).abs().max() <= 5e-5
        # the training model is the same network: encode -> quantise -> decode in one pass
        full = VQModel(cfg)
        full.load_state_dict(weights, strict=True)
        out = full.eval()(io["x"])
        assert torch.equal(out.indices, io["expected_indices"])
        assert (out.reconstruction - io["expected_decoder_out"]).abs().max() <= 5e-5


def _manifest(path: Path) -> list[tuple[str, str]]:
    return [tuple(line.split("\t")[:2]) for line in path.read_text().splitlines() if line]


def _listing(model: torch.nn.Module, prefix: str = "") -> list[tuple[str, str]]:
    return [(prefix + k, str(tuple(v.shape))) for k, v in model.state_dict().items()]


@pytest.fixture(scope="module")
def paper_models():
    """The paper config's three views, on the meta device (shapes only, no memory)."""
    cfg = VQConfig(**PAPER)
    with torch.device("meta"):
        return VQModel(cfg), VQEncoder(cfg), VQDecoder(cfg)


def test_paper_config_matches_manifests(ref, paper_models):
    full, encoder, decoder = paper_models
    vq = ref / "vq"
    assert _listing(full, PREFIX) == _manifest(vq / "manifest_ldm_ffhq256_first_stage_model.tsv")
    assert _listing(encoder) == _manifest(vq / "manifest_first_stage_encoder_state_dict.tsv")
    assert _listing(decoder) == _manifest(vq / "manifest_first_stage_decoder_state_dict.tsv")


def test_paper_parameter_counts_and_latent_shape(paper_models):
    _, encoder, decoder = paper_models
    latent = encoder(torch.empty(1, 3, 128, 128, device="meta"))
    assert f"{sum(p.numel() for p in encoder.parameters()) / 1e6:.1f}" == "22.3"
    assert f"{sum(p.numel() for p in decoder.parameters()) / 1e6:.1f}" == "33.0"
    assert tuple(latent.shape) == (1, 3, 32, 32) and VQConfig(**PAPER).downsampling == 4


def test_no_res_block_levels_keep_their_width():
    cfg = VQConfig(**{**PAPER, "ch": 32, "ch_mult": [1, 1, 2], "num_res_blocks": 0, "n_embed": 16})
    model = VQModel(cfg)
    out = model(torch.rand(1, 3, 16, 16) * 2 - 1)
    assert out.reconstruction.shape == (1, 3, 16, 16) and out.indices.shape == (1, 4, 4)


def test_norm_groups_reach_every_group_norm_and_keep_the_key_layout():
    """Fewer groups than channels keeps colour in a narrow model; the published keys stay the same."""
    small = {**PAPER, "ch": 32, "ch_mult": [1, 2], "n_embed": 16}
    published, narrow = VQModel(VQConfig(**small)), VQModel(VQConfig(**small, norm_groups=8))
    groups = lambda model: {m.num_groups for m in model.modules() if isinstance(m, torch.nn.GroupNorm)}
    assert groups(published) == {32} and groups(narrow) == {8}
    assert {k: v.shape for k, v in published.state_dict().items()} == {k: v.shape for k, v in narrow.state_dict().items()}


@pytest.mark.parametrize("change, message", [({"double_z": True}, "double_z"), ({"ch": 48}, r"divisible by norm_groups \(32\)"),
                                             ({"ch": 32, "norm_groups": 24}, r"divisible by norm_groups \(24\)")])
def test_config_refuses_unsupported_architectures(change, message):
    with pytest.raises(ValueError, match=message):
        VQConfig(**{**PAPER, **change})
