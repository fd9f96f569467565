"""Images from a trained (or published) generator: the pipeline shared by sampling, two-stage contexts,
the LFW-context experiment and the bench.

Every image has its own seed: its starting noise and every noise draw of the sampler come from a
generator seeded with it, so an image does not depend on what else is generated with it.
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from .autoencoder import codebook_range, decode_latents, load_decoder
from .checkpoint import save_state, state_dict_mismatches
from .data.released import read_released_generator, released_weights_file
from .diffusion.samplers import draw_noise, make_eps_fn, sample
from .diffusion.schedule import (DiffusionSchedule, DiffusionSettings, ddpm_checkpoint_state, load_ddpm_checkpoint,
                                 split_ddpm_state)
from .models.unet import UNet, UNetConfig
from .models.vq import VQConfig, VQDecoder
from .resume import file_key, settings_key
from .settings import settings_from_dict


@dataclass(frozen=True)
class SamplerSettings:
    """How to run the reverse process: `ddpm` (the paper: all T steps), `ddim` or `dpmsolver++`.

    `clip_x0`: clamp each clean-latent prediction to the decoder codebook's range (off in the paper;
    it rescues short-trained generators, whose samples otherwise leave the data at the first step).
    `decode_batch_size`: latents decoded per chunk (None: `batch_size`). The UNet is fastest on large
    batches, the decoder's full-resolution activations on small ones (on CPU: 42 img/s at 8, 26 at 64).
    """

    method: str
    steps: int | None
    eta: float
    guidance_scale: float | None
    batch_size: int
    clip_x0: bool = False
    decode_batch_size: int | None = None


@dataclass(frozen=True)
class GeneratorSpec:
    """A generator as the workflow names it: its files and the configs that build their networks."""

    checkpoint: Path  # the EMA UNet in the released DDPM layout
    unet: UNetConfig
    decoder: Path  # the split first-stage decoder
    autoencoder: VQConfig
    image_size: int

    @classmethod
    def from_settings(cls, checkpoint: str | os.PathLike, decoder: str | os.PathLike,
                      settings: Mapping[str, Any]) -> GeneratorSpec:
        """From a rule's `generator` settings: `{unet: {...}, autoencoder: {...}, image_size: N}`."""
        return cls(Path(checkpoint), settings_from_dict(UNetConfig, settings["unet"], "generator unet"),
                   Path(decoder), settings_from_dict(VQConfig, settings["autoencoder"], "autoencoder.model"),
                   int(settings["image_size"]))

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        """The latent the UNet works on: (embed_dim, side / f, side / f) for side x side images."""
        factor = self.autoencoder.downsampling
        if self.image_size % factor:
            raise ValueError(f"image size {self.image_size} is not divisible by the autoencoder's factor {factor}")
        side = self.image_size // factor
        return self.autoencoder.embed_dim, side, side

    def state_key(self) -> dict[str, str]:
        """What a generated image depends on, as parts of a resumable stage's key (`resume`): the
        networks' configs and image size, and the two files' contents."""
        return {"generator_settings": settings_key({"unet": self.unet, "autoencoder": self.autoencoder,
                                                    "image_size": self.image_size}),
                "generator": file_key(self.checkpoint), "decoder": file_key(self.decoder)}

    def load(self, device: str | torch.device) -> LatentPipeline:
        """The networks, loaded once (strict key and shape checks) and ready to generate on `device`."""
        unet = UNet(self.unet)
        schedule = load_ddpm_checkpoint(self.checkpoint, unet)
        return LatentPipeline(unet.to(device).eval(), schedule.to(device),
                              load_decoder(self.decoder, self.autoencoder), self.latent_shape, device)


@dataclass
class LatentPipeline:
    """Latent diffusion as one object: UNet and schedule denoise, the decoder turns latents to images."""

    unet: UNet
    schedule: DiffusionSchedule
    decoder: VQDecoder
    latent_shape: tuple[int, int, int]
    device: str | torch.device

    @property
    def is_conditional(self) -> bool:
        return self.unet.is_context_conditional

    @torch.inference_mode()
    def __call__(self, contexts: torch.Tensor | None, seeds: Sequence[int], sampler: SamplerSettings) -> np.ndarray:
        """uint8 NHWC images, one per seed (and per context row: None for an unconditional generator),
        in batches of the sampler's size."""
        if contexts is not None and len(contexts) != len(seeds):
            raise ValueError(f"{len(contexts)} contexts for {len(seeds)} seeds")
        steps = None if sampler.method == "ddpm" else sampler.steps
        x0_range = codebook_range(self.decoder) if sampler.clip_x0 else None
        images = []
        for start in range(0, len(seeds), sampler.batch_size):
            generators = [torch.Generator().manual_seed(int(s)) for s in seeds[start:start + sampler.batch_size]]
            x_T = draw_noise(generators, self.latent_shape, self.device)
            context = None if contexts is None else contexts[start:start + sampler.batch_size].to(self.device)
            eps_fn = make_eps_fn(self.unet, context, sampler.guidance_scale)
            latents = sample(eps_fn, x_T, self.schedule, sampler.method, steps, sampler.eta, generators,
                             x0_range=x0_range)
            images.append(decode_latents(self.decoder, latents, sampler.decode_batch_size or sampler.batch_size,
                                         self.device))
        return np.concatenate(images) if images else np.zeros((0, 0, 0, 3), dtype=np.uint8)


def import_generator(source: str | os.PathLike, unet_config: UNetConfig, diffusion: DiffusionSettings,
                     image_size: int, out_path: str | os.PathLike, *, weights: str = "ema",
                     step: int | None = None) -> str:
    """Check a published generator against the configured one and write it in the released DDPM layout;
    returns the weight form it was found in.

    `source` is a released model folder (its `.hydra/config.yaml` must agree with the configured UNet,
    diffusion and image size, key by key; `weights` and `step` choose the checkpoint) or a checkpoint
    file. Either holds the DDPM wrapper's state dict or a bare UNet's, possibly under `state_dict` or
    with a `module.` / `_forward_module.` prefix; a bare UNet gets the configured schedule, and a
    wrapper's own schedule must be that one.
    """
    source = Path(source)
    if source.is_dir():
        problems = read_released_generator(source).mismatches(unet_config, diffusion.timesteps, diffusion.schedule,
                                                               image_size)
        if problems:
            raise ValueError(f"the released model {source} is not the configured generator; set these in ldm.unet, "
                             f"the generator's unet or ldm.diffusion:\n  - " + "\n  - ".join(problems))
        path = released_weights_file(source, weights, step)
    elif weights != "ema" or step is not None:
        raise ValueError(f"{source} is one file: the weights and step choose a file inside a released model folder")
    else:
        path = source
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise ValueError(f"{path} holds objects other than tensors and plain values, so it is not loaded (only "
                         f"state dicts are read: {str(err).splitlines()[0][:200]})") from err
    unet_weights, buffers, form = split_ddpm_state(state)
    unet = UNet(unet_config)
    problems = state_dict_mismatches(unet.state_dict(), unet_weights)
    if problems:
        raise ValueError(f"{path} looks like a {form} but does not fit the configured UNet: " + "; ".join(problems))
    unet.load_state_dict(unet_weights, strict=True)
    schedule = DiffusionSchedule.create(diffusion.timesteps, diffusion.schedule)
    if buffers:
        own = DiffusionSchedule.from_buffers(buffers)
        pairs = zip(own.buffers().values(), schedule.buffers().values())
        if own.n_steps != schedule.n_steps or not all(torch.allclose(a, b, rtol=1e-4, atol=1e-7) for a, b in pairs):
            raise ValueError(f"{path}'s schedule buffers are not the configured {diffusion.schedule} schedule "
                             f"with T={diffusion.timesteps}")
        schedule = own
    save_state(out_path, ddpm_checkpoint_state(unet, schedule))
    return form
