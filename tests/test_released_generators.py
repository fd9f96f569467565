"""A published IDiff-Face generator is usable as it was released: a model folder (`.hydra/config.yaml`
+ `checkpoints/`) or a checkpoint file, in each weight form its code wrote."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import yaml

from idiff_core import standins
from idiff_core.checkpoint import save_state
from idiff_core.data.released import ReleasedFileError, read_released_generator, released_weights_file
from idiff_core.diffusion.schedule import DiffusionSchedule, DiffusionSettings, ddpm_checkpoint_state
from idiff_core.generation import GeneratorSpec, SamplerSettings, import_generator
from idiff_core.models.unet import UNet, UNetConfig
from idiff_core.models.vq import VQConfig, VQDecoder

UNET = dict(input_channels=3, initial_channels=32, channel_multipliers=[1, 2], is_attention=[False, True],
            attention_heads=-1, attention_head_channels=16, n_blocks_per_resolution=1, context_input_channels=16,
            context_channels=32, condition_type="CA", is_context_conditional=True, context_dropout_probability=0.25)
VQ = VQConfig(ch=32, ch_mult=[1, 2], num_res_blocks=1, attn_resolutions=[], z_channels=3, double_z=False,
              resolution=16, in_channels=3, out_ch=3, dropout=0.0, n_embed=16, embed_dim=3)
DIFFUSION = DiffusionSettings(timesteps=50, schedule="linear")
IMAGE_SIZE = 16


def released_config(**unet_changes) -> dict:
    """The composed Hydra config the release keeps in .hydra/config.yaml: the UNet under `model`,
    referenced by `diffusion.eps_model`, with `constants.*` interpolations, as the original writes it."""
    model = {"_target_": "models.diffusion.unet.ConditionalUNet", **UNET,
             "input_channels": "${constants.input_channels}", "n_context_classes": "${constants.n_classes}",
             "learn_empty_context": False, **unet_changes}
    return {"constants": {"seed": 0, "image_size": IMAGE_SIZE, "input_channels": 3, "n_classes": 0},
            "latent_diffusion": True, "model": model,
            "diffusion": {"_target_": "diffusion.ddpm.DenoisingDiffusionProbabilisticModel", "eps_model": "${model}",
                          "T": DIFFUSION.timesteps, "schedule_type": DIFFUSION.schedule, "schedule_k": 1},
            "training": {"steps": 150000, "checkpoint": {"path": "IDiff-Face/outputs/${now:%Y-%m-%d}"}}}


def random_unet(seed: int) -> UNet:
    torch.manual_seed(seed)
    unet = UNet(UNetConfig(**UNET))
    for p in unet.parameters():  # zero-initialised layers would make every image the same
        p.data.add_(0.05 * torch.randn_like(p))
    return unet


def wrapper_state(unet: UNet) -> dict:
    return ddpm_checkpoint_state(unet, DiffusionSchedule.create(DIFFUSION.timesteps, DIFFUSION.schedule))


FORMS = {
    "wrapper": wrapper_state,
    "bare": lambda unet: unet.state_dict(),
    "wrapper_module_prefix": lambda unet: {f"module.{k}": v for k, v in wrapper_state(unet).items()},
    "bare_lightning": lambda unet: {"state_dict": {f"_forward_module.{k}": v for k, v in unet.state_dict().items()},
                                    "global_step": 150000},
}


def write_release(root, form: str = "wrapper", config: dict | None = None):
    """A released model folder with distinct EMA, raw and kept-at-step weights, in one weight form."""
    (root / ".hydra").mkdir(parents=True)
    (root / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config or released_config(), sort_keys=False))
    for name, seed in (("ema_averaged_model.ckpt", 0), ("model.ckpt", 1), ("ema_averaged_model_70000.ckpt", 2)):
        save_state(root / "checkpoints" / name, FORMS[form](random_unet(seed)))
    return root


@pytest.fixture(scope="module")
def decoder(tmp_path_factory):
    path = tmp_path_factory.mktemp("decoder") / "decoder.pt"
    torch.manual_seed(0)
    save_state(path, VQDecoder(VQ).state_dict())
    return path


def imported(root, out, **choices):
    import_generator(root, UNetConfig(**UNET), DIFFUSION, IMAGE_SIZE, out, **choices)
    return out


def read_config(root, config: dict):
    (root / ".hydra").mkdir(parents=True, exist_ok=True)
    (root / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    return read_released_generator(root)


def test_the_release_config_resolves_its_references(tmp_path):
    released = read_config(tmp_path, released_config())
    assert released.unet["input_channels"] == 3 and released.unet["n_context_classes"] == 0
    assert "_target_" not in released.unet and (released.timesteps, released.schedule) == (50, "linear")
    assert released.image_size == IMAGE_SIZE


def test_an_unresolvable_value_in_a_key_read_is_named(tmp_path):
    config = released_config()
    config["model"]["initial_channels"] = "${oc.env:CHANNELS}"
    with pytest.raises(ReleasedFileError, match=r"'model.initial_channels' is '\$\{oc.env:CHANNELS\}'"):
        read_config(tmp_path, config)
    config = released_config()
    config["constants"]["input_channels"] = "${model.input_channels}"
    with pytest.raises(ReleasedFileError, match="refers to itself"):
        read_config(tmp_path, config)


def test_every_weight_form_imports_to_the_same_checkpoint_and_images(tmp_path, decoder):
    files = {form: imported(write_release(tmp_path / form, form), tmp_path / f"{form}.ckpt") for form in FORMS}
    reference = files["wrapper"].read_bytes()
    for form, path in files.items():
        assert path.read_bytes() == reference, form
    contexts = torch.nn.functional.normalize(torch.randn(2, 16, generator=torch.Generator().manual_seed(0)), dim=1)
    for method, steps in (("ddpm", None), ("dpmsolver++", 5)):
        sampler = SamplerSettings(method, steps, 0.0, None, 2)
        images = {form: GeneratorSpec(path, UNetConfig(**UNET), decoder, VQ, IMAGE_SIZE).load("cpu")(
            contexts, [3, 4], sampler) for form, path in files.items()}
        assert images["wrapper"].shape == (2, IMAGE_SIZE, IMAGE_SIZE, 3)
        assert all(np.array_equal(images["wrapper"], other) for other in images.values()), method


def test_ema_raw_and_kept_weights_are_selectable(tmp_path):
    root = write_release(tmp_path / "model")
    for choices, seed in (({}, 0), ({"weights": "model"}, 1), ({"step": 70000}, 2)):
        state = torch.load(imported(root, tmp_path / "out.ckpt", **choices), weights_only=True)
        expected = random_unet(seed).state_dict()
        assert all(torch.equal(state[f"eps_model.{k}"], v) for k, v in expected.items()), choices
    held = r"\['ema_averaged_model.ckpt', 'ema_averaged_model_70000.ckpt', 'model.ckpt'\]"
    with pytest.raises(ReleasedFileError, match=r"ema_averaged_model_5000.ckpt does not exist; .* holds " + held):
        imported(root, tmp_path / "out.ckpt", step=5000)
    with pytest.raises(ValueError, match="only the EMA weights"):
        released_weights_file(root, "model", 70000)


def test_a_release_unlike_the_configured_generator_is_reported_key_by_key(tmp_path):
    root = write_release(tmp_path / "model", config=released_config(initial_channels=96, context_channels=256))
    with pytest.raises(ValueError, match=r"(?s)initial_channels: 96 released, 32 configured.*"
                                         r"context_channels: 256 released, 32 configured"):
        imported(root, tmp_path / "out.ckpt")
    with pytest.raises(ValueError, match="norm_groups: 32 released .the original's GroupNorm., 8 configured"):
        import_generator(write_release(tmp_path / "groups"), UNetConfig(**UNET, norm_groups=8), DIFFUSION,
                         IMAGE_SIZE, tmp_path / "out.ckpt")
    with pytest.raises(ValueError, match="T: 50 released, 1000 configured"):
        import_generator(write_release(tmp_path / "steps"), UNetConfig(**UNET), DiffusionSettings(1000, "linear"),
                         IMAGE_SIZE, tmp_path / "out.ckpt")


def test_a_file_that_fits_no_form_names_its_form_and_keys(tmp_path):
    save_state(tmp_path / "vq.ckpt", {"state_dict": {"first_stage_model.encoder.conv_in.weight": torch.zeros(1)}})
    with pytest.raises(ValueError, match=r"bare UNet state dict under 'state_dict'.*"
                                         r"first_stage_model.encoder.conv_in.weight"):
        import_generator(tmp_path / "vq.ckpt", UNetConfig(**UNET), DIFFUSION, IMAGE_SIZE, tmp_path / "out.ckpt")
    other = dataclasses.replace(DIFFUSION, schedule="cosine")
    save_state(tmp_path / "ema.ckpt", wrapper_state(random_unet(0)))
    with pytest.raises(ValueError, match="not the configured cosine schedule"):
        import_generator(tmp_path / "ema.ckpt", UNetConfig(**UNET), other, IMAGE_SIZE, tmp_path / "out.ckpt")


class _Callback:
    """Stands for the classes a Lightning checkpoint pickles besides its tensors."""


def test_a_checkpoint_with_pickled_objects_is_not_loaded(tmp_path):
    torch.save({"state_dict": wrapper_state(random_unet(0)), "callbacks": {_Callback: 1}}, tmp_path / "lightning.ckpt")
    with pytest.raises(ValueError, match="holds objects other than tensors and plain values, so it is not loaded"):
        import_generator(tmp_path / "lightning.ckpt", UNetConfig(**UNET), DIFFUSION, IMAGE_SIZE, tmp_path / "out.ckpt")


# ---- stand-ins written from the published key layouts (../shared/reference manifests)

def test_the_published_checkpoint_layout_is_the_wrapper_buffers_then_the_bare_unet(ref):
    """The DDPM wrapper the stand-ins write (8 buffers, then `eps_model.*`) is the published checkpoints'."""
    for config in ("unet_cond_ca_cpd25", "unet_cond_adagn_cpd25", "unet_uncond_adagn"):
        bare = standins.manifest_layout(ref / "unet" / f"manifest_{config}.tsv")
        published = standins.manifest_layout(ref / "unet" / f"manifest_{config}__ddpm_checkpoint.tsv")
        timesteps = published[0][1]
        assert published == [(name, timesteps) for name in standins.DDPM_WRAPPER_BUFFERS] + \
            [(f"eps_model.{key}", shape) for key, shape in bare], config


def test_a_release_written_from_the_published_manifest_imports_and_samples(ref, tmp_path):
    """A model folder whose keys come from the reference manifest (not from this project's UNet) imports
    as a generator and samples, with either sampler."""
    args = torch.load(ref / "unet" / "unet_ca_small_io.pt", weights_only=True)["config"]
    unet = UNetConfig(**{k: v for k, v in args.items() if k not in ("n_context_classes", "learn_empty_context")})
    root = standins.write_released_generator(
        tmp_path / "unet-cond-ca-small", standins.manifest_layout(ref / "unet" / "manifest_unet_ca_small.tsv"), args,
        timesteps=DIFFUSION.timesteps, schedule=DIFFUSION.schedule, image_size=IMAGE_SIZE, seed=0)
    vq = dataclasses.replace(VQ, embed_dim=unet.input_channels, z_channels=unet.input_channels)
    torch.manual_seed(0)
    save_state(tmp_path / "decoder.pt", VQDecoder(vq).state_dict())
    out = tmp_path / "ema.ckpt"
    assert import_generator(root, unet, DIFFUSION, IMAGE_SIZE, out).startswith("DDPM wrapper")
    written = torch.load(root / "checkpoints" / "ema_averaged_model.ckpt", weights_only=True)
    assert list(torch.load(out, weights_only=True)) == list(written)
    contexts = torch.nn.functional.normalize(torch.randn(2, unet.context_input_channels), dim=1)
    pipeline = GeneratorSpec(out, unet, tmp_path / "decoder.pt", vq, IMAGE_SIZE).load("cpu")
    for method, steps in (("ddpm", None), ("dpmsolver++", 3)):
        images = pipeline(contexts, [0, 1], SamplerSettings(method, steps, 0.0, None, 2))
        assert images.shape == (2, IMAGE_SIZE, IMAGE_SIZE, 3) and images.std() > 0, method


def test_the_released_fr_model_form_loads_by_key_name(tmp_path):
    """IDiff-Face's released ResNet50-CosFace is an iresnet50 state dict (the stand-in's layout is
    checked against the reference manifest in test_rehearsal): it loads strictly, prefixed or not."""
    from idiff_core.models.iresnet import BackboneSpec

    weights = standins.random_weights(standins.iresnet_layout((3, 4, 14, 3)), seed=0)
    torch.save({f"module.{k}": v for k, v in weights.items()}, tmp_path / "r50.pth")
    model = BackboneSpec("iresnet50", 512, 64, 112).load(tmp_path / "r50.pth")
    assert torch.equal(model.state_dict()["layer3.13.conv2.weight"], weights["layer3.13.conv2.weight"])
    with pytest.raises(ValueError, match="does not match iresnet arch=iresnet100"):
        BackboneSpec("iresnet100", 512, 64, 112).load(tmp_path / "r50.pth")
