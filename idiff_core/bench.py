"""Speed and memory of the workflow's expensive parts, measured on this machine: `python -m idiff_core.bench`.

Timed tests are flaky on shared machines, so speed is measured here instead and written as CSVs
(one per figure family) under `--out` (default `results/bench/`). Every row records the machine
(cores, torch threads, torch version, device, CPU model, GPU name, timestamp) and the parameters
of the measurement, so numbers from different machines can be put side by side.

Families (`--only` takes a comma-separated subset):
  ldm_training   LDM training step, latents/s: demo UNet (config `ldm.unet`, batch 32) and the paper's
                 CA UNet (`--paper-config` `ldm.unet`, batch 2 on CPU / 64 on GPU).
  sampling       images/s and identity consistency (cosine with own / another context, AUC and rank-1
                 against all contexts) of ddpm-1000, ddim-50 and dpmsolver++-20 on a
                 trained generator (`--generator`, `--decoder`, contexts `--contexts`, embedder
                 `--backbone`), with the config's `clip_x0` and `guidance_scale` (set them with
                 `--configfile`); without those files, a tiny random UNet + decoder (throughput only,
                 see the `note` column; in quick mode its schedule has T = 50, so "ddpm" runs 50 steps).
  alignment      MTCNN alignment images/s and landmark error on 128x128 face-world images for
                 min_face_size 20 (default) and 1 (paper), plus 10 and 40 in full mode.
  fr_training    FR training images/s: the demo backbone ([1,1,1,1], width 16) and iresnet50.
  verification   seconds of `verification_metrics` on 6,000 random pairs of 512-d unit vectors.
  rules          per-job wall time and peak memory of a workflow run, from Snakemake's `benchmark:`
                 TSV files under `--benchmarks` (default `results/benchmarks/`).

`--quick` shrinks every family to a few seconds (tiny sizes, demo models only): what CI runs. The
default full mode uses the sizes above (256 alignment images, 48 sampled images per sampler, ...).
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import math
import os
import platform
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from .alignment import AlignSettings, measure_alignment
from .checkpoint import save_state
from .config import generator_model, load_config
from .contexts import context_ids, uniform_contexts
from .diffusion.schedule import DiffusionSchedule, ddpm_checkpoint_state
from .embeddings import embed_images
from .evaluation.quality import identity_consistency
from .evaluation.verification import verification_metrics
from .generation import GeneratorSpec, SamplerSettings
from .io import atomic_path, load_matrix
from .models.iresnet import BackboneSpec
from .models.unet import UNet, UNetConfig
from .models.vq import VQConfig, VQDecoder
from .runtime import derive_seed, resolve_device, set_threads
from .settings import settings_from_dict
from .training.fr import measure_fr_throughput
from .training.ldm import measure_ldm_throughput
from .world import WorldSettings, draw

Row = dict[str, Any]

SAMPLERS = (("ddpm", 1000), ("ddim", 50), ("dpmsolver++", 20))
CONSISTENCY_COLUMNS = ("consistency_mean", "consistency_std", "random_context_mean", "random_context_std",
                       "context_auc", "context_rank1", "context_count")
# the figure each family is summarised by on stdout
SUMMARY_METRIC = {"ldm_training": "latents_per_s", "sampling": "images_per_s", "alignment": "images_per_s",
                  "fr_training": "images_per_s", "verification": "seconds", "rules": "seconds"}
# a UNet and VQ decoder small enough to sample 1000 steps in seconds: stand-ins when no generator is given
TINY_UNET = {"input_channels": 3, "initial_channels": 32, "channel_multipliers": [1, 1],
             "is_attention": [False, True], "attention_heads": -1, "attention_head_channels": 32,
             "n_blocks_per_resolution": 1, "context_input_channels": 512, "context_channels": 32,
             "condition_type": "CA", "is_context_conditional": True, "context_dropout_probability": 0.0,
             "norm_groups": 32}
TINY_VQ = {"ch": 32, "ch_mult": [1, 2], "num_res_blocks": 1, "attn_resolutions": [], "z_channels": 3,
           "double_z": False, "resolution": 32, "in_channels": 3, "out_ch": 3, "dropout": 0.0,
           "n_embed": 64, "embed_dim": 3, "norm_groups": 32}
TINY_IMAGE_SIZE = 32


@dataclass(frozen=True)
class Options:
    """What to measure and where the inputs are (parsed command line)."""

    quick: bool
    device: torch.device
    out: Path
    config: dict[str, Any]
    paper_config: dict[str, Any]
    generator_name: str
    generator: Path | None
    decoder: Path | None
    contexts: Path
    backbone: Path
    benchmarks: Path


# ------------------------------------------------------------------------------------------ common

def machine_info(device: torch.device) -> Row:
    """Who measured: cores, torch threads and version, device, CPU model and GPU name, UTC time."""
    cpu_model = ""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    return {"timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch_version": torch.__version__,
            "python_version": platform.python_version(), "device": str(device), "cpu_model": cpu_model or platform.processor(),
            "gpu_name": torch.cuda.get_device_name(device) if device.type == "cuda" else ""}


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _cell(value: Any) -> Any:
    """CSV text of a value: lists and dicts as JSON, the rest as is."""
    return json.dumps(value) if isinstance(value, (list, tuple, dict)) else value


def write_rows(path: str | os.PathLike, rows: Sequence[Row], machine: Row) -> None:
    """One CSV (atomically): the machine columns, then every parameter and result column, in first-seen order."""
    full = [{**machine, **row} for row in rows]
    columns = list(dict.fromkeys(key for row in full for key in row))
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=columns, restval="")
            writer.writeheader()
            writer.writerows({k: _cell(v) for k, v in row.items()} for row in full)


# ------------------------------------------------------------------------------------- families

def bench_ldm_training(opts: Options) -> list[Row]:
    """Training step of the demo UNet (and the paper's CA UNet in full mode), latents/s."""
    gpu = opts.device.type == "cuda"
    cases = [("demo", opts.config["ldm"], 2 if opts.quick else 32, 1 if opts.quick else (20 if gpu else 3))]
    if not opts.quick:
        cases.append(("paper_ca", opts.paper_config["ldm"], 64 if gpu else 2, 10 if gpu else 1))
    rows = []
    for model, ldm, batch_size, steps in cases:
        precision = ldm["training"]["precision"] if gpu else "fp32"  # mixed precision is CUDA-only in the trainer
        unet = settings_from_dict(UNetConfig, ldm["unet"], "ldm.unet")
        result = measure_ldm_throughput(unet, batch_size, steps, opts.device, precision)
        rows.append({"case": model, **result, "unet": ldm["unet"]})
    return rows


def _tiny_generator(folder: Path, timesteps: int) -> GeneratorSpec:
    """Random tiny UNet + decoder written in the released file layouts, so loading is measured too."""
    torch.manual_seed(0)
    unet, vq = UNetConfig(**TINY_UNET), VQConfig(**TINY_VQ)
    generator, decoder = folder / "tiny_ema.ckpt", folder / "tiny_decoder.pt"
    save_state(generator, ddpm_checkpoint_state(UNet(unet), DiffusionSchedule.create(timesteps, "linear")))
    save_state(decoder, VQDecoder(vq).state_dict())
    return GeneratorSpec(generator, unet, decoder, vq, TINY_IMAGE_SIZE)


def bench_sampling(opts: Options) -> list[Row]:
    """images/s of each sampler (and identity consistency when a trained generator and embedder exist).

    One image per context: full mode's 48 contexts make rank-1 (chance 1/48) and AUC meaningful figures.
    """
    n_images = 2 if opts.quick else 48
    seed = opts.config["sampling"]["seed"]
    with tempfile.TemporaryDirectory() as tmp:
        trained = bool(opts.generator and opts.decoder and opts.generator.is_file() and opts.decoder.is_file())
        if trained:
            spec = GeneratorSpec.from_settings(opts.generator, opts.decoder,
                                               generator_model(opts.config, opts.generator_name))
            note = "trained generator"
        else:
            spec = _tiny_generator(Path(tmp), 50 if opts.quick else 1000)
            note = "tiny random UNet + decoder (no generator given or found): throughput only"
        pipeline = spec.load(opts.device)
        conditional = pipeline.is_conditional
        if opts.contexts.is_file():
            contexts = load_matrix(opts.contexts)[1][:n_images]
        else:
            contexts = uniform_contexts(n_images, spec.unet.context_input_channels, seed)
        if len(contexts) < n_images:
            raise ValueError(f"{opts.contexts} holds {len(contexts)} contexts; sampling needs {n_images}")
        embedder = None
        if trained and conditional and opts.backbone.is_file():
            model_cfg = opts.config["embedder"]["model"]
            embedder = BackboneSpec(**model_cfg).load(opts.backbone).to(opts.device)
        elif trained:
            note += f"; no identity consistency ({'no embedder ' + str(opts.backbone) if conditional else 'unconditional'})"
        seeds = [derive_seed(seed, "bench_sampling", i) for i in range(n_images)]
        configured = opts.config["sampling"]["sampler"]
        clip_x0 = bool(configured["clip_x0"])
        guidance = configured["guidance_scale"] if conditional else None
        rows = []
        for method, steps in SAMPLERS:
            steps = min(steps, pipeline.schedule.n_steps)  # quick mode's stand-in has T = 50: its ddpm runs 50 steps
            sampler = SamplerSettings(method, steps, 0.0, guidance, n_images, clip_x0, configured["decode_batch_size"])
            _synchronize(opts.device)
            start = time.perf_counter()
            images = pipeline(torch.from_numpy(contexts) if conditional else None, seeds, sampler)
            _synchronize(opts.device)
            seconds = time.perf_counter() - start
            row = {"case": f"{method}-{steps}", "method": method, "steps": steps, "clip_x0": clip_x0,
                   "guidance_scale": guidance,
                   "images": n_images, "image_size": spec.image_size, "seconds": seconds, "images_per_s": n_images / seconds,
                   "generator": str(spec.checkpoint) if trained else "", "note": note,
                   **dict.fromkeys(CONSISTENCY_COLUMNS, "")}
            if embedder is not None:
                ids = context_ids(n_images)
                row.update(identity_consistency(embed_images(embedder, images, 64, opts.device, flip_sum=False),
                                                np.array(ids), ids, contexts, seed))
            rows.append(row)
    return rows


def _world_faces(config: Mapping[str, Any], count: int) -> tuple[list[np.ndarray], np.ndarray]:
    """`count` 128x128 LFW-like face-world images (3 per identity) and their true landmarks."""
    world = settings_from_dict(WorldSettings, {**config["data"]["world"], "image_size": 128}, "data.world")
    drawn = [draw(world, "lfw", k // 3, k % 3) for k in range(count)]
    return [image for image, _ in drawn], np.stack([landmarks for _, landmarks in drawn])


def bench_alignment(opts: Options) -> list[Row]:
    """Alignment images/s and landmark error for the default and the paper's min_face_size."""
    many, few = (16, 2) if opts.quick else (256, 16)
    sizes = [20] if opts.quick else [20, 10, 40]
    rows = []
    for count, min_sizes in ((many, sizes), (few, [1])):
        images, landmarks = _world_faces(opts.config, count)
        variants = [settings_from_dict(AlignSettings, {**opts.config["alignment"], "min_face_size": m}, "alignment")
                    for m in min_sizes]
        for result in measure_alignment(images, landmarks, variants, str(opts.device)):
            rows.append({"case": f"min_face_size={result['min_face_size']}", "image_size": 128, **result})
    return rows


def bench_fr_training(opts: Options) -> list[Row]:
    """FR training images/s of the demo backbone (and iresnet50 in full mode)."""
    gpu = opts.device.type == "cuda"
    model = opts.config["fr"]["model"]
    cases = [("demo", model["arch"], model["base_width"], model["input_size"], 8 if opts.quick else (256 if gpu else 64),
              1 if opts.quick else (20 if gpu else 5))]
    if not opts.quick:
        cases.append(("iresnet50", "iresnet50", 64, 112, 128 if gpu else 16, 10 if gpu else 2))
    rows = []
    for case, arch, base_width, input_size, batch_size, steps in cases:
        result = measure_fr_throughput(arch, batch_size, steps, str(opts.device), base_width=base_width,
                                       input_size=input_size)
        rate = result.pop("images_per_second")
        rows.append({"case": case, **result, "images_per_s": rate})
    return rows


def bench_verification(opts: Options, n_pairs: int = 6000, dim: int = 512) -> list[Row]:
    """Seconds of the LFW protocol's metrics on random unit vectors (the best of 3 runs; 1 in quick mode)."""
    repeats = 1 if opts.quick else 3
    rng = np.random.default_rng(derive_seed(0, "bench_verification"))
    e1, e2 = (rng.standard_normal((n_pairs, dim)) for _ in range(2))
    e1, e2 = (e / np.linalg.norm(e, axis=1, keepdims=True) for e in (e1, e2))
    n_folds = 10
    issame = (np.arange(n_pairs) % (n_pairs // n_folds)) < n_pairs // n_folds // 2  # LFW order: matched, then mismatched
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        verification_metrics(e1, e2, issame, n_folds=n_folds)
        times.append(time.perf_counter() - start)
    return [{"case": f"{n_pairs} pairs", "pairs": n_pairs, "dim": dim, "folds": n_folds, "repeats": repeats,
             "seconds": min(times), "seconds_mean": float(np.mean(times)), "pairs_per_s": n_pairs / min(times)}]


def _mean_of_column(records: Sequence[Mapping[str, str]], key: str) -> float:
    """Mean of a benchmark column over repeats, ignoring what Snakemake could not measure ("-", "NA")."""
    values = []
    for record in records:
        try:
            values.append(float(record.get(key) or "nan"))
        except ValueError:
            continue
    values = [v for v in values if math.isfinite(v)]
    return sum(values) / len(values) if values else float("nan")


def bench_rules(opts: Options) -> list[Row]:
    """One row per Snakemake benchmark file: rule, wildcards, seconds, peak RSS (MB), CPU time; slowest first."""
    root = opts.benchmarks
    if not root.is_dir():
        print(f"rules: skipped, no Snakemake benchmark folder {root} (run the workflow first)")
        return []
    rows = []
    for path in sorted(root.rglob("*.tsv")):
        with open(path, newline="") as fh:
            records = list(csv.DictReader(fh, delimiter="\t"))
        if not records:
            continue
        relative = path.relative_to(root).with_suffix("")
        mean = {key: _mean_of_column(records, key) for key in ("s", "max_rss", "max_uss", "cpu_time", "mean_load")}
        rows.append({"case": relative.as_posix(), "rule": relative.parts[0],
                     "wildcards": "/".join(relative.parts[1:]), "repeats": len(records), "seconds": mean["s"],
                     "max_rss_mb": mean["max_rss"], "max_uss_mb": mean["max_uss"], "cpu_time": mean["cpu_time"],
                     "mean_load": mean["mean_load"], "file": str(path)})
    return sorted(rows, key=lambda row: row["seconds"], reverse=True)


FAMILIES: dict[str, Callable[[Options], list[Row]]] = {
    "ldm_training": bench_ldm_training, "sampling": bench_sampling, "alignment": bench_alignment,
    "fr_training": bench_fr_training, "verification": bench_verification, "rules": bench_rules}


# -------------------------------------------------------------------------------------------- main

def run(opts: Options, families: Sequence[str]) -> dict[str, list[Row]]:
    """Measure each family, write `<family>.csv` under `opts.out`, print a summary; return the rows."""
    results = {}
    for family in families:
        start = time.perf_counter()
        rows = FAMILIES[family](opts)
        if rows:
            write_rows(opts.out / f"{family}.csv", rows, machine_info(opts.device))
        results[family] = rows
        print(f"{family}: {len(rows)} row(s) in {time.perf_counter() - start:.1f} s", flush=True)
    print_summary(results)
    return results


def print_summary(results: Mapping[str, Sequence[Row]]) -> None:
    """One line per measurement: family, case, and its headline number."""
    lines = [(family, str(row["case"]), SUMMARY_METRIC[family], row[SUMMARY_METRIC[family]])
             for family, rows in results.items() for row in rows]
    if not lines:
        return
    widths = [max(len(str(line[i])) for line in lines) for i in range(3)]
    print()
    for family, case, metric, value in lines:
        print(f"{family:<{widths[0]}}  {case:<{widths[1]}}  {metric:<{widths[2]}}  {value:12.4g}")


def parse_args(argv: Sequence[str] | None = None) -> tuple[Options, list[str], int | None]:
    parser = argparse.ArgumentParser(prog="python -m idiff_core.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, a few seconds per family (CI)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--out", type=Path, default=Path("results/bench"), help="folder of the CSVs")
    parser.add_argument("--only", default="", help=f"comma-separated families among {', '.join(FAMILIES)}")
    parser.add_argument("--config", type=Path, default=Path("config/config.yaml"), help="workflow config")
    parser.add_argument("--configfile", type=Path, nargs="*", default=[],
                        help="config files merged over --config, as with snakemake --configfile")
    parser.add_argument("--paper-config", type=Path, default=Path("config/paper.yaml"),
                        help="merged over --config for the paper's UNet (ldm_training, full mode)")
    parser.add_argument("--generator-name", default="ca_cpd25", help="which `generators` entry --generator is")
    parser.add_argument("--generator", type=Path, default=None,
                        help="EMA checkpoint to sample from (full mode default: results/ldm/<name>/ema.ckpt if present)")
    parser.add_argument("--decoder", type=Path, default=None, help="VQ decoder state dict (full mode default: "
                        "results/autoencoder/first_stage_decoder_state_dict.pt if present)")
    parser.add_argument("--contexts", type=Path, default=Path("results/contexts/uniform.npz"),
                        help="contexts to sample with (sampling; random unit vectors when absent)")
    parser.add_argument("--backbone", type=Path, default=Path("results/embedder/backbone.pt"),
                        help="embedder for identity consistency (sampling; arch from config embedder.model)")
    parser.add_argument("--benchmarks", type=Path, default=Path("results/benchmarks"),
                        help="Snakemake benchmark TSV folder (rules family)")
    args = parser.parse_args(argv)
    families = [f.strip() for f in args.only.split(",") if f.strip()] or list(FAMILIES)
    unknown = sorted(set(families) - set(FAMILIES))
    if unknown:
        parser.error(f"unknown famil(ies) {unknown} in --only; choose from {', '.join(FAMILIES)}")
    generator, decoder = args.generator, args.decoder
    if not args.quick:
        generator = generator or Path(f"results/ldm/{args.generator_name}/ema.ckpt")
        decoder = decoder or Path("results/autoencoder/first_stage_decoder_state_dict.pt")
    config = load_config(args.config, args.configfile)
    if args.generator_name not in config["generators"]:
        parser.error(f"--generator-name {args.generator_name!r} is not under `generators` in the config")
    opts = Options(quick=args.quick, device=resolve_device(args.device), out=args.out, config=config,
                   paper_config=load_config(args.config, [*args.configfile, args.paper_config]),
                   generator_name=args.generator_name, generator=generator, decoder=decoder,
                   contexts=args.contexts, backbone=args.backbone, benchmarks=args.benchmarks)
    return opts, families, args.threads


def main(argv: Sequence[str] | None = None) -> dict[str, list[Row]]:
    opts, families, threads = parse_args(argv)
    if threads:
        set_threads(threads)
    return run(opts, families)


if __name__ == "__main__":
    main()
