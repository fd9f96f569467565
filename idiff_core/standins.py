"""Stand-ins for the files a paper run needs, in their published formats, with random weights.

    python -m idiff_core.standins OUT

writes, under OUT, at the paths `config/rehearsal.yaml` names (so that `snakemake --directory OUT
--configfile config/paper.yaml config/rehearsal.yaml` runs with no edits):

- `data/ffhq/thumbnails128x128/00000/00000.png ...`: FFHQ's thumbnail layout (face-world faces, 128 px);
- `data/lfw/lfw/<Name>/<Name>_0001.jpg ...` and `data/lfw/pairs.txt`: LFW's layout and 10-fold pairs format;
- `data/weights/Elastic_R100_295672backbone.pth`: ElasticFace-Arc's iresnet100 state dict;
- `data/ldm/ffhq.zip`: LDM's zip holding a Lightning `model.ckpt` (`first_stage_model.*` among other keys);
- `data/benchmarks/<name>.bin`: insightface verification files (pickled encoded images + issame list);
- `data/released/datasets/synthetic_uniform_cpd25/<identity>.png`: IDiff-Face's released dataset form,
  aligned identity blocks of 10 x 5 tiles of 112 px (face-world faces), where `config/released.yaml` looks;
- `data/released/fr/idiff_face_uniform_cpd25_r50_cosface.pth`: its released FR model, an iresnet50.

Writers of IDiff-Face's own released forms serve the tests of the released-file readers: a model
folder (`.hydra/config.yaml` + `checkpoints/`, the DDPM wrapper's layout) for any UNet key layout (the
reference manifests give the published ones), `torch.save`d name -> vector dicts (context files,
training embeddings), identity-block datasets, and iresnet backbones of any depth (the released
FR model is an iresnet50).

The key layouts are written out here from the published architectures, not taken from this
project's models or save functions, so a drift between the reader and the published layout fails
the rehearsal instead of hiding in it (the tests check them against the reference manifests). The
rehearsal checks wiring, shapes, formats and speed, not accuracy: the weights are random.
"""

from __future__ import annotations

import argparse
import ast
import io
import math
import pickle
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import yaml

from .diffusion.schedule import DiffusionSchedule
from .io import atomic_path, write_png
from .runtime import derive_seed
from .world import WorldSettings, draw

FFHQ_DIR = "data/ffhq/thumbnails128x128"
LFW_DIR = "data/lfw/lfw"
LFW_PAIRS = "data/lfw/pairs.txt"
ELASTICFACE = "data/weights/Elastic_R100_295672backbone.pth"
LDM_ZIP = "data/ldm/ffhq.zip"
BENCHMARK_DIR = "data/benchmarks"
BENCHMARKS = ("lfw", "agedb_30", "cfp_fp", "calfw", "cplfw")
RELEASED_DATASET = "data/released/datasets/synthetic_uniform_cpd25"
RELEASED_FR = "data/released/fr/idiff_face_uniform_cpd25_r50_cosface.pth"
RELEASED_BLOCK = (10, 5)  # rows, columns of IDiff-Face's aligned blocks: 50 images
RELEASED_TILE = 112
FOLDS = 10
LFW_SIDE = 250   # LFW's photos are 250 x 250
BIN_SIDE = 112   # the .bin files hold aligned 112 x 112 faces

Layout = list[tuple[str, tuple[int, ...]]]
# The DDPM wrapper's buffers, registered before its `eps_model`, in the published checkpoints' order
DDPM_WRAPPER_BUFFERS = ("betas", "alphas", "sigmas", "sqrt_alphas_inv", "alpha_bars", "sqrt_alpha_bars",
                        "sqrt_one_minus_alpha_bars", "one_minus_alphas_over_sqrt_one_minus_alpha_bars")


# --------------------------------------------------------------------------------- published layouts

def _batch_norm(name: str, channels: int) -> Layout:
    return [(f"{name}.{p}", (channels,)) for p in ("weight", "bias", "running_mean", "running_var")] + \
        [(f"{name}.num_batches_tracked", ())]


def iresnet_layout(layers: tuple[int, ...] = (3, 13, 30, 3), features: int = 512) -> Layout:
    """An iresnet state dict as arcface_torch's iresnet writes it (ElasticFace's iresnet100 by default;
    IDiff-Face's released FR model: layers (3, 4, 14, 3)): key and shape, in file order."""
    keys: Layout = [("conv1.weight", (64, 3, 3, 3)), *_batch_norm("bn1", 64), ("prelu.weight", (64,))]
    inplanes = 64
    for index, (blocks, planes) in enumerate(zip(layers, (64, 128, 256, 512)), start=1):
        for b in range(blocks):
            name, fan_in = f"layer{index}.{b}", inplanes if b == 0 else planes
            keys += [*_batch_norm(f"{name}.bn1", fan_in), (f"{name}.conv1.weight", (planes, fan_in, 3, 3)),
                     *_batch_norm(f"{name}.bn2", planes), (f"{name}.prelu.weight", (planes,)),
                     (f"{name}.conv2.weight", (planes, planes, 3, 3)), *_batch_norm(f"{name}.bn3", planes)]
            if b == 0:
                keys += [(f"{name}.downsample.0.weight", (planes, inplanes, 1, 1)),
                         *_batch_norm(f"{name}.downsample.1", planes)]
        inplanes = planes
    return keys + [*_batch_norm("bn2", 512), ("fc.weight", (features, 512 * 7 * 7)), ("fc.bias", (features,)),
                   *_batch_norm("features", features)]


def _conv(name: str, out: int, inp: int, k: int) -> Layout:
    return [(f"{name}.weight", (out, inp, k, k)), (f"{name}.bias", (out,))]


def _norm(name: str, channels: int) -> Layout:
    return [(f"{name}.weight", (channels,)), (f"{name}.bias", (channels,))]


def _resnet_block(name: str, inp: int, out: int) -> Layout:
    keys = [*_norm(f"{name}.norm1", inp), *_conv(f"{name}.conv1", out, inp, 3), *_norm(f"{name}.norm2", out),
            *_conv(f"{name}.conv2", out, out, 3)]
    return keys + (_conv(f"{name}.nin_shortcut", out, inp, 1) if inp != out else [])


def _attention(name: str, channels: int) -> Layout:
    return [*_norm(f"{name}.norm", channels),
            *(kv for part in ("q", "k", "v", "proj_out") for kv in _conv(f"{name}.{part}", channels, channels, 1))]


def _mid(name: str, channels: int) -> Layout:
    return [*_resnet_block(f"{name}.block_1", channels, channels), *_attention(f"{name}.attn_1", channels),
            *_resnet_block(f"{name}.block_2", channels, channels)]


def ldm_first_stage_layout(ch: int = 128, ch_mult: tuple[int, ...] = (1, 2, 4), num_res_blocks: int = 2,
                           z_channels: int = 3, embed_dim: int = 3, n_embed: int = 8192) -> Layout:
    """LDM's ffhq256 VQ-f4 first stage (`first_stage_model.*` of its checkpoint, no attention levels)."""
    enc: Layout = _conv("encoder.conv_in", ch, 3, 3)
    width = ch
    for level, mult in enumerate(ch_mult):
        for b in range(num_res_blocks):
            enc += _resnet_block(f"encoder.down.{level}.block.{b}", width, ch * mult)
            width = ch * mult
        if level != len(ch_mult) - 1:
            enc += _conv(f"encoder.down.{level}.downsample.conv", width, width, 3)
    enc += [*_mid("encoder.mid", width), *_norm("encoder.norm_out", width),
            *_conv("encoder.conv_out", z_channels, width, 3)]
    dec: Layout = [*_conv("decoder.conv_in", ch * ch_mult[-1], z_channels, 3), *_mid("decoder.mid", ch * ch_mult[-1])]
    up: dict[int, Layout] = {}
    width = ch * ch_mult[-1]
    for level in reversed(range(len(ch_mult))):  # built from the lowest resolution, stored as up.0 (highest) first
        up[level] = []
        for b in range(num_res_blocks + 1):
            up[level] += _resnet_block(f"decoder.up.{level}.block.{b}", width, ch * ch_mult[level])
            width = ch * ch_mult[level]
        if level != 0:
            up[level] += _conv(f"decoder.up.{level}.upsample.conv", width, width, 3)
    dec += [kv for level in range(len(ch_mult)) for kv in up[level]]
    dec += [*_norm("decoder.norm_out", width), *_conv("decoder.conv_out", 3, width, 3)]
    return [*enc, *dec, ("quantize.embedding.weight", (n_embed, embed_dim)),
            *_conv("quant_conv", embed_dim, z_channels, 1), *_conv("post_quant_conv", z_channels, embed_dim, 1)]


def manifest_layout(path: str | Path, prefix: str = "") -> Layout:
    """Key and shape of every entry of a reference manifest (`key<TAB>shape<TAB>dtype`, in state-dict
    order), less `prefix`."""
    rows = [line.split("\t") for line in Path(path).read_text().splitlines() if line]
    return [(key.removeprefix(prefix), tuple(ast.literal_eval(shape))) for key, shape, _ in rows]


def random_weights(layout: Layout, seed: int) -> dict[str, torch.Tensor]:
    """Finite random values a network runs on: N(0, 1/fan_in) kernels, unit norms, zero biases and means."""
    gen = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}
    for key, shape in layout:
        leaf = key.rsplit(".", 1)[-1]
        if leaf == "num_batches_tracked":
            state[key] = torch.tensor(0, dtype=torch.int64)
        elif "prelu" in key:
            state[key] = torch.full(shape, 0.25)
        elif leaf == "running_var" or (leaf == "weight" and len(shape) == 1):  # norms' scales
            state[key] = torch.ones(shape)
        elif leaf in ("bias", "running_mean"):
            state[key] = torch.zeros(shape)
        else:
            fan_in = math.prod(shape[1:]) or 1
            state[key] = torch.randn(shape, generator=gen) / math.sqrt(fan_in)
    return state


# ------------------------------------------------------------------------------------------- writers

def write_iresnet(path: Path, layers: tuple[int, ...], seed: int) -> None:
    """A plain iresnet state dict, as ElasticFace (iresnet100) and IDiff-Face (iresnet50) publish theirs."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        torch.save(random_weights(iresnet_layout(layers), seed), fh)


def write_released_dataset(folder: Path, identities: int, seed: int) -> None:
    """IDiff-Face's released dataset form: one aligned block per identity, 10 x 5 tiles of 112 px
    (face-world faces of the labelled set, one identity per block)."""
    rows, columns = RELEASED_BLOCK
    world = WorldSettings(seed=seed, image_size=RELEASED_TILE, nuisance_strength=0.5, labelled_identities=identities,
                          labelled_images_per_identity=rows * columns)
    write_identity_blocks(folder, {f"{i:05d}": [draw(world, "labelled", i, k)[0] for k in range(rows * columns)]
                                   for i in range(identities)}, columns)


def write_ldm_zip(path: Path, seed: int) -> None:
    """`ffhq.zip` holding `model.ckpt`: a Lightning checkpoint whose state dict carries the diffusion
    model's and its EMA's keys besides the `first_stage_model.*` ones the workflow splits out."""
    first_stage = random_weights(ldm_first_stage_layout(), derive_seed(seed, "ldm-first-stage"))
    state_dict = {"betas": torch.linspace(1e-4, 2e-2, 1000, dtype=torch.float64),
                  "model.diffusion_model.input_blocks.0.0.weight": torch.zeros(224, 3, 3, 3),
                  "model.diffusion_model.input_blocks.0.0.bias": torch.zeros(224),
                  "model_ema.decay": torch.tensor(0.9999), "model_ema.num_updates": torch.tensor(0, dtype=torch.int32),
                  **{f"first_stage_model.{k}": v for k, v in first_stage.items()}}
    checkpoint = {"epoch": 0, "global_step": 0, "pytorch-lightning_version": "1.4.2", "state_dict": state_dict}
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("model.ckpt", buffer.getvalue())
        archive.writestr("config.yaml", "model:\n  target: ldm.models.diffusion.ddpm.LatentDiffusion\n")


def write_released_generator(root: str | Path, unet_layout: Layout, unet_args: dict[str, Any], *, timesteps: int,
                             schedule: str, image_size: int, seed: int) -> Path:
    """An IDiff-Face model folder as its training run leaves it: `.hydra/config.yaml` (the composed Hydra
    config, UNet arguments under `model` with `${constants.*}` references, `diffusion.eps_model: ${model}`)
    and `checkpoints/ema_averaged_model.ckpt` and `model.ckpt` (distinct random weights) in the DDPM
    wrapper's layout: its 8 schedule buffers, then every UNet key under `eps_model.`."""
    root = Path(root)
    model = {"_target_": "models.diffusion.unet.ConditionalUNet", **unet_args,
             "input_channels": "${constants.input_channels}", "n_context_classes": "${constants.n_classes}"}
    config = {"constants": {"seed": seed, "image_size": image_size, "input_channels": unet_args["input_channels"],
                            "n_classes": 0},
              "latent_diffusion": True, "model": model,
              "diffusion": {"_target_": "diffusion.ddpm.DenoisingDiffusionProbabilisticModel", "eps_model": "${model}",
                            "T": timesteps, "schedule_type": schedule, "schedule_k": 1},
              "training": {"checkpoint": {"path": "outputs/${now:%Y-%m-%d}/${now:%H-%M-%S}"}}}
    with atomic_path(root / ".hydra" / "config.yaml") as tmp:
        tmp.write_text(yaml.safe_dump(config, sort_keys=False))
    schedule_values = DiffusionSchedule.create(timesteps, schedule)
    buffers = {name: getattr(schedule_values, name) for name in DDPM_WRAPPER_BUFFERS}
    for name in ("ema_averaged_model.ckpt", "model.ckpt"):
        unet = random_weights(unet_layout, derive_seed(seed, "released-generator", name))
        with atomic_path(root / "checkpoints" / name) as tmp, open(tmp, "wb") as fh:
            torch.save({**buffers, **{f"eps_model.{k}": v for k, v in unet.items()}}, fh)
    return root


def write_vector_dict(path: str | Path, vectors: Mapping[str, np.ndarray]) -> None:
    """A name -> float32 NumPy vector dict, `torch.save`d (a pickle) as IDiff-Face's context files and
    training embeddings are, whatever their `.npy` suffix says."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        torch.save({name: np.asarray(v, dtype=np.float32) for name, v in vectors.items()}, fh)


def write_identity_blocks(folder: str | Path, faces: Mapping[str, Sequence[np.ndarray]], columns: int) -> list[Path]:
    """IDiff-Face's identity blocks: `<name>.png` per identity, its equal-sized faces in a grid of
    `columns`, row-major, no gap, the rest of the last row black (`make_grid(padding=0)`)."""
    paths = []
    for name, images in faces.items():
        height, width = images[0].shape[:2]
        block = np.zeros((math.ceil(len(images) / columns) * height, columns * width, 3), np.uint8)
        for k, image in enumerate(images):
            row, col = divmod(k, columns)
            block[row * height:(row + 1) * height, col * width:(col + 1) * width] = image
        paths.append(Path(folder) / f"{name}.png")
        write_png(paths[-1], block)
    return paths


def write_ffhq(root: Path, count: int, seed: int) -> None:
    """`count` face-world faces as FFHQ's thumbnails: `<thousands>/<NNNNN>.png`, 128 x 128."""
    world = WorldSettings(seed=seed, image_size=128, nuisance_strength=0.5, ffhq_identities=count)
    for index in range(count):
        write_png(root / f"{index // 1000 * 1000:05d}" / f"{index:05d}.png", draw(world, "ffhq", index, 0)[0])


def write_lfw(root: Path, pairs_txt: Path, seed: int) -> None:
    """LFW's layout (JPEG, 250 x 250) and a 10-fold `pairs.txt` (per fold: one matched pair, then one
    mismatched). The folds alternate between two groups of two people, so the pairs name 6 images;
    one more person is in the folder but in no pair, as most of LFW is."""
    world = WorldSettings(seed=seed, image_size=LFW_SIDE, nuisance_strength=0.5, lfw_identities=5,
                          lfw_images_per_identity=2)
    people = {f"Person_{i:04d}": images for i, images in enumerate((2, 1, 2, 1, 1))}
    for person, images in people.items():
        for k in range(images):
            rgb = draw(world, "lfw", int(person[-4:]), k)[0]
            path = root / person / f"{person}_{k + 1:04d}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
    lines = [f"{FOLDS}\t1"]
    for fold in range(FOLDS):
        first, second = f"Person_{2 * (fold % 2):04d}", f"Person_{2 * (fold % 2) + 1:04d}"
        lines += [f"{first}\t1\t2", f"{first}\t1\t{second}\t1"]
    with atomic_path(pairs_txt) as tmp:
        tmp.write_text("\n".join(lines) + "\n")


def write_bin(path: Path, seed: int) -> None:
    """An insightface `.bin`: pickle (protocol 2, as the published files) of (JPEG bytes list, issame
    list); pair i = images 2i, 2i + 1; each fold one genuine then one impostor pair."""
    world = WorldSettings(seed=seed, image_size=BIN_SIDE, nuisance_strength=0.5, labelled_identities=2 * FOLDS,
                          labelled_images_per_identity=2)
    images, issame = [], []
    for fold in range(FOLDS):
        a, b = 2 * fold, 2 * fold + 1
        for identity, image in ((a, 0), (a, 1), (a, 0), (b, 0)):
            bgr = cv2.cvtColor(draw(world, "labelled", identity, image)[0], cv2.COLOR_RGB2BGR)
            images.append(cv2.imencode(".jpg", bgr)[1].tobytes())
        issame += [True, False]
    with atomic_path(path) as tmp:
        tmp.write_bytes(pickle.dumps((images, issame), protocol=2))


def write_standins(out: str | Path, *, faces: int = 16, released_identities: int = 5, seed: int = 0) -> list[Path]:
    """Write every stand-in under `out` (see the module docstring); return the paths written."""
    out = Path(out)
    write_ffhq(out / FFHQ_DIR, faces, seed)
    write_lfw(out / LFW_DIR, out / LFW_PAIRS, seed)
    write_iresnet(out / ELASTICFACE, (3, 13, 30, 3), derive_seed(seed, "elasticface"))
    write_ldm_zip(out / LDM_ZIP, seed)
    bins = [out / BENCHMARK_DIR / f"{name}.bin" for name in BENCHMARKS]
    for k, path in enumerate(bins):
        write_bin(path, derive_seed(seed, "bin", k) % 2**31)
    write_released_dataset(out / RELEASED_DATASET, released_identities, seed)
    write_iresnet(out / RELEASED_FR, (3, 4, 14, 3), derive_seed(seed, "released-fr"))
    return [out / FFHQ_DIR, out / LFW_DIR, out / LFW_PAIRS, out / ELASTICFACE, out / LDM_ZIP, *bins,
            out / RELEASED_DATASET, out / RELEASED_FR]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m idiff_core.standins", description=__doc__.split("\n\n")[0])
    parser.add_argument("out", help="folder to write into (the rehearsal's --directory)")
    parser.add_argument("--faces", type=int, default=16, help="FFHQ stand-in faces (config/rehearsal.yaml "
                                                                "expects data.ffhq.expected_count of them)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    for path in write_standins(args.out, faces=args.faces, seed=args.seed):
        print(path)


if __name__ == "__main__":
    main()
