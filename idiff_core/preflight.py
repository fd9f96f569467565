"""Pre-flight check of a paper run: every file the user provides, checked before any job starts.

A paper run reads FFHQ, LFW, the ElasticFace weights, LDM's `ffhq.zip`, optional insightface `.bin`
benchmarks and optional published generators. Each is first read by its own job, some of them
only after days of GPU work upstream (LFW's pairs by the evaluation). The Snakefile calls
`check_paper_inputs` at start-up, so that one message lists every missing or malformed input with
where it comes from. An input whose workflow copy already exists under `results/` is not
checked again (its source may be gone once fetched). Network sources are left to their fetch job.
"""

from __future__ import annotations

import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from .config import is_evaluation_only, is_released
from .data import DatasetError
from .data.download import local_source
from .data.ffhq import STEM
from .data.lfw import find_lfw_root, missing_pair_images
from .data.benchmarks import read_lfw_pairs
from .evaluation.verification import contiguous_folds

ELASTICFACE_HINT = ("ElasticFace-Arc's Elastic_R100_295672backbone.pth from the ElasticFace project "
                    "(https://github.com/fdbtrs/ElasticFace; its README links the pretrained models)")
LDM_HINT = "LDM's ffhq256 first stage, https://ommer-lab.com/files/latent-diffusion/ffhq.zip"
SHOWN = 5


class PreflightError(RuntimeError):
    """Some user-provided inputs of a paper run are missing or malformed; the message lists them all."""


def _shown(items: list[str]) -> str:
    more = f" ... and {len(items) - SHOWN} more" if len(items) > SHOWN else ""
    return ", ".join(items[:SHOWN]) + more


def ffhq_problems(ffhq: Mapping[str, Any]) -> list[str]:
    """FFHQ: the folder (or archive / metadata file) exists; a folder holds images 0 .. expected_count-1."""
    where = f"data.ffhq.location ({ffhq['source']})"
    path = local_source(ffhq["location"])
    if path is None:
        return []
    if not path.exists():
        return [f"{where}: {path} does not exist. Put FFHQ's thumbnails128x128 folder there (or its archive, or "
                f"ffhq-dataset-v2.json with source: metadata), or point data.ffhq.location at your copy"]
    if ffhq["source"] != "folder":
        return []
    if not path.is_dir():
        return [f"{where}: {path} is not a folder; set data.ffhq.source to archive for an archive"]
    found = {int(m.group(1)) for p in path.rglob("*.png") if (m := STEM.match(p.name))}
    missing = [f"{i:05d}.png" for i in range(ffhq["expected_count"]) if i not in found]
    if missing:
        return [f"{where}: {path} lacks {len(missing)} of the {ffhq['expected_count']} images "
                f"data.ffhq.expected_count asks for ({_shown(missing)})"]
    return []


def lfw_problems(lfw: Mapping[str, Any], n_folds: int) -> list[str]:
    """LFW: pairs.txt parses, holds expected_pairs, every evaluation fold holds both kinds of pair, and
    (folder source) every image it names exists."""
    problems = []
    images = local_source(lfw["images"])
    if images is not None and not images.exists():
        problems.append(f"data.lfw.images: {images} does not exist. Put LFW's image folder (<Name>/<Name>_0001.jpg) "
                        f"or lfw.tgz there, or point data.lfw.images at your copy")
        images = None
    pairs_path = local_source(lfw["pairs"])
    if pairs_path is None:
        return problems
    if not pairs_path.is_file():
        return problems + [f"data.lfw.pairs: {pairs_path} does not exist. Put LFW's pairs.txt there "
                           f"(http://vis-www.cs.umass.edu/lfw/pairs.txt) or point data.lfw.pairs at it"]
    try:
        pairs, _ = read_lfw_pairs(pairs_path)
    except ValueError as err:
        return problems + [f"data.lfw.pairs: {err}"]
    if len(pairs) != lfw["expected_pairs"]:
        problems.append(f"data.lfw.pairs: {pairs_path} lists {len(pairs)} pairs, data.lfw.expected_pairs is "
                        f"{lfw['expected_pairs']}")
    if len(pairs) < n_folds:
        problems.append(f"data.lfw.pairs: {pairs_path} lists {len(pairs)} pairs, fewer than the "
                        f"evaluation.verification.n_folds={n_folds} folds")
    else:
        one_kind = [str(k) for k, (_, test) in enumerate(contiguous_folds(len(pairs), n_folds))
                    if len({pairs[i].issame for i in test}) < 2]
        if one_kind:
            problems.append(f"data.lfw.pairs: evaluation.verification.n_folds={n_folds} contiguous folds of the "
                            f"{len(pairs)} pairs in {pairs_path} must each hold matched and mismatched pairs; fold(s) "
                            f"{', '.join(one_kind)} do not (LFW's format: per fold, n matched then n mismatched)")
    if images is not None and lfw["source"] == "folder":
        try:
            missing = missing_pair_images(pairs, find_lfw_root(images))
        except DatasetError as err:
            return problems + [f"data.lfw.images: {err}"]
        if missing:
            problems.append(f"data.lfw: {len(missing)} image(s) named in {pairs_path} are not under {images} "
                            f"({_shown(missing)}); use the LFW image set that matches this pairs.txt")
    return problems


def embedder_problems(embedder: Mapping[str, Any]) -> list[str]:
    """ElasticFace weights: present, a plain state dict, with the configured iresnet's keys and shapes."""
    path = Path(embedder["weights"]).expanduser()
    if not path.is_file():
        return [f"embedder.weights: {path} does not exist. Download {ELASTICFACE_HINT} and put it there, or point "
                f"embedder.weights at your copy"]
    import torch  # only when the weights are checked: the Snakefile otherwise runs without torch

    from .checkpoint import state_dict_mismatches, strip_wrapper_prefix
    from .models.iresnet import iresnet
    try:
        try:  # mmap reads keys and shapes without loading the 260 MB of values
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:  # files in torch's legacy (pre-zip) format cannot be mapped
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a truncated file, or one that is not a torch checkpoint at all
        return [f"embedder.weights: {path} is not a readable torch checkpoint ({type(err).__name__}: {err}); "
                f"download it again ({ELASTICFACE_HINT})"]
    if not isinstance(state, dict):
        return [f"embedder.weights: {path} holds a {type(state).__name__}, not a state dict"]
    model = embedder["model"]
    with torch.device("meta"):
        net = iresnet(model["arch"], num_features=model["num_features"], base_width=model["base_width"],
                      input_size=model["input_size"])
    mismatches = state_dict_mismatches(net.state_dict(), strip_wrapper_prefix(state)[0])
    if mismatches:
        return [f"embedder.weights: {path} does not fit embedder.model (arch {model['arch']}): "
                + "; ".join(mismatches)]
    return []


def autoencoder_problems(ldm: Mapping[str, Any]) -> list[str]:
    """LDM's zip (or checkpoint): present; a zip holds exactly one member named `member`."""
    path = local_source(ldm["location"])
    if path is None:
        return []
    if not path.is_file():
        return [f"autoencoder.ldm.location: {path} does not exist. Download {LDM_HINT} and put it there, or set "
                f"the location to its URL to let the workflow download it"]
    if not zipfile.is_zipfile(path):
        return []  # a bare model.ckpt: split_autoencoder checks its keys
    with zipfile.ZipFile(path) as archive:
        names = [n for n in archive.namelist() if n.replace("\\", "/").rsplit("/", 1)[-1] == ldm["member"]]
    if len(names) != 1:
        return [f"autoencoder.ldm.location: {path} holds {len(names)} files named {ldm['member']!r} "
                f"(autoencoder.ldm.member), expected exactly one: is it LDM's ffhq.zip ({LDM_HINT})?"]
    return []


def benchmark_problems(benchmarks: Mapping[str, str]) -> list[str]:
    """insightface `.bin` files: present and starting as a pickle (fully read by their evaluation job)."""
    problems = []
    for name, location in benchmarks.items():
        path = Path(location).expanduser()
        if not path.is_file():
            problems.append(f"data.benchmarks.{name}: {path} does not exist (insightface's {name}.bin, from the "
                            f"face-recognition datasets of insightface / the ArcFace training data)")
        elif _first_byte(path) != b"\x80":  # a pickle's PROTO opcode
            problems.append(f"data.benchmarks.{name}: {path} is not a pickled insightface .bin")
    return problems


def _first_byte(path: Path) -> bytes:
    with open(path, "rb") as fh:
        return fh.read(1)


def released_file_problems(config: Mapping[str, Any]) -> list[str]:
    """Released IDiff-Face files the config names that do not exist: generators, context files, the
    training embeddings, datasets, evaluated backbones."""
    named = {f"generators.{name}.pretrained": spec["pretrained"] for name, spec in config["generators"].items()}
    named.update({f"datasets.{name}.released.folder": spec["released"]["folder"]
                  for name, spec in config["datasets"].items() if is_released(spec)})
    named.update({f"experiments[{i}].weights": exp["weights"] for i, exp in enumerate(config["experiments"])
                  if is_evaluation_only(exp)})
    named.update({f"contexts.{name}.file": spec.get("file") for name, spec in config["contexts"].items()
                  if spec["kind"] == "file"})
    named["embedder.training_embeddings"] = config["embedder"]["training_embeddings"]
    return [f"{key}: {path} does not exist (a released IDiff-Face file; README, \"IDiff-Face's released files\")"
            for key, path in named.items() if path and not Path(path).expanduser().exists()]


def _checks(config: Mapping[str, Any]) -> list[tuple[str, Callable[[], list[str]]]]:
    """(workflow copy under results/ that makes a check unnecessary, check) of every provided input."""
    checks = [("results/data/ffhq_manifest.csv", lambda: ffhq_problems(config["data"]["ffhq"])),
              ("results/data/lfw/pairs.txt",
               lambda: lfw_problems(config["data"]["lfw"], config["evaluation"]["verification"]["n_folds"])),
              ("", lambda: benchmark_problems(config["data"]["benchmarks"])),
              ("", lambda: released_file_problems(config))]
    if config["embedder"]["source"] == "pretrained":
        checks.append(("results/embedder/backbone.pt", lambda: embedder_problems(config["embedder"])))
    if config["autoencoder"]["source"] == "ldm":
        checks.append(("results/autoencoder/model.ckpt", lambda: autoencoder_problems(config["autoencoder"]["ldm"])))
    return checks


def paper_input_problems(config: Mapping[str, Any]) -> list[str]:
    """Every problem with the user-provided inputs of a paper-source config (paths relative to the
    working directory, as the rules read them)."""
    return [problem for done, check in _checks(config) if not (done and Path(done).exists()) for problem in check()]


def check_paper_inputs(config: Mapping[str, Any]) -> None:
    """Raise PreflightError listing every problem with a paper run's inputs (run in the working directory)."""
    problems = paper_input_problems(config)
    if problems:
        raise PreflightError(f"the paper run cannot start: {len(problems)} problem(s) with the files you provide "
                             "(config keys and paths relative to the working directory):\n  - "
                             + "\n  - ".join(problems))

