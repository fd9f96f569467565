"""Data-parallel training on CPU with gloo: 2 launched processes stay in lockstep, split each global
batch, resume from one checkpoint and (LDM) match one process with the same global batch; a failing
rank fails the launch."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest
import torch

from idiff_core.distributed import launch, local_processes, process_group
from idiff_core.training import fr, ldm
from test_fr_training import make_face_folder, read_metrics, tiny_settings
from test_ldm_training import read_csv, run
from test_ldm_training import settings as ldm_settings
from test_ldm_training import world  # noqa: F401  (fixture)


# ------------------------------------------------------------------------ workers (run in each rank)

def _rank() -> int:
    return int(os.environ.get("RANK", "0"))


def _parameters(modules) -> dict[str, torch.Tensor]:
    return {f"{i}.{k}": v.detach().clone() for i, m in enumerate(modules) for k, v in m.named_parameters()}


def _fr_rank(root: Path, out: Path, settings: fr.FRTrainingSettings) -> None:
    """Train FR; dump this rank's backbone + head parameters, as built and at the end, to out/rank<R>.pt."""
    built, real = {}, fr.build_models

    def capture(*args):
        models = real(*args)
        built.update(models=models, initial=_parameters(models))
        return models

    fr.build_models = capture
    try:
        fr.train_fr(root, out / "backbone.pt", out / "metrics.csv", out / "state", settings, threads=1, device="cpu")
    finally:
        fr.build_models = real
    torch.save({"initial": built["initial"], "final": _parameters(built["models"])}, out / f"rank{_rank()}.pt")


def _ldm_rank(paths: dict[str, Path], out: Path, settings: ldm.LdmSettings) -> dict:
    """Train the LDM; dump this rank's UNet and EMA parameters, as built and at the end, to out/rank<R>.pt."""
    built, real = {}, ldm.make_ema

    def capture(model):
        ema = real(model)
        built.update(models=(model, ema), initial=_parameters((model, ema)))
        return ema

    ldm.make_ema = capture
    try:
        summary = run(paths, out, settings)
    finally:
        ldm.make_ema = real
    torch.save({"initial": built["initial"], "final": _parameters(built["models"])}, out / f"rank{_rank()}.pt")
    return summary


def _fail_on_rank_1() -> None:
    with process_group("cpu") as group:
        if group.rank == 1:
            raise ValueError("rank 1 broke")
        group.barrier()  # rank 0 waits here until the launcher stops it


def _load(path: Path, which: str = "final") -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)[which]


def _max_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a)


# ----------------------------------------------------------------------------------------- launcher

def test_error_in_one_rank_fails_the_launch_with_its_traceback():
    with pytest.raises(RuntimeError, match="process 1 of 2 failed") as failure:
        launch(_fail_on_rank_1, nprocs=2)
    # the failing rank's traceback (not rank 0's lost connection to it)
    assert 'raise ValueError("rank 1 broke")' in str(failure.value)


# ------------------------------------------------------------------------------------- FR trainer

def test_fr_two_processes_stay_identical_with_the_lr_of_the_global_batch(tmp_path):
    root = make_face_folder(tmp_path / "data", identities=7, images=4)
    # 3 training identities x 3 images; 2 per process x 2 processes = global batch 4 -> 2 steps per epoch
    settings = tiny_settings(batch_size=2, lr_schedule="step", randaugment=False, max_epochs=2,
                             checkpoint_every_steps=0)
    launch(_fr_rank, (root, tmp_path, settings), nprocs=2)
    rank0, rank1 = _load(tmp_path / "rank0.pt"), _load(tmp_path / "rank1.pt")
    assert all(torch.equal(rank0[k], rank1[k]) for k in rank0), "ranks drifted apart"
    assert _max_difference(rank0, _load(tmp_path / "rank0.pt", "initial")) > 0  # it did train
    written = torch.load(tmp_path / "backbone.pt", weights_only=True)  # by rank 0, once
    assert {k[len("0."):] for k in rank0 if k.startswith("0.")} <= written.keys()
    rows = read_metrics(tmp_path / "metrics.csv")
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert float(rows[0]["lr"]) == pytest.approx(0.1 / 512 * 4)  # 0.1 / 512 x global batch, not per-process


def test_fr_ranks_split_each_global_batch_of_one_process():
    # Each step's global batch holds exactly the images one process with the whole batch would use,
    # in the same order. The weights still differ from that one process's (not checked): BatchNorm
    # normalises each process's images with their own statistics (per-GPU BN, as in the paper's DDP
    # training), which no tolerance on a 2-image-per-process toy run would cover.
    one = fr.ResumableSampler(23, batch_size=4, seed=5, rank=0, world_size=1)
    ranks = [fr.ResumableSampler(23, batch_size=2, seed=5, rank=r, world_size=2) for r in range(2)]
    for sampler in (one, *ranks):
        sampler.set_position(epoch=1, start_step=1)
    whole, parts = list(one), [list(r) for r in ranks]
    assert len(whole) == 4 * 4 and all(len(p) == 2 * 4 for p in parts)
    for step in range(4):
        assert whole[4 * step:4 * step + 4] == parts[0][2 * step:2 * step + 2] + parts[1][2 * step:2 * step + 2]


# ------------------------------------------------------------------------------------ LDM trainer

def test_ldm_two_processes_resume_and_match_one_process(world, tmp_path):  # noqa: F811
    # global batch 4 = 2 processes x 1 micro-batch of 2 = 1 process x 2 micro-batches of 2
    common = dict(checkpoint_every=2, keep_steps=[2], preview_every=4)
    two, one = tmp_path / "two", tmp_path / "one"
    launch(_ldm_rank, (world, two, ldm_settings(steps=2, accumulation_steps=1, **common)), nprocs=2)
    summary = launch(_ldm_rank, (world, two, ldm_settings(steps=4, accumulation_steps=1, **common)), nprocs=2)
    launch(_ldm_rank, (world, one, ldm_settings(steps=4, accumulation_steps=2, **common)), nprocs=1)
    assert summary["resumed_from"] == 2 and summary["steps"] == 4 and math.isfinite(summary["last_loss"])

    # both ranks resumed from rank 0's checkpoint (model, EMA and Adam state) and stayed in lockstep
    rank0, rank1 = _load(two / "rank0.pt"), _load(two / "rank1.pt")
    assert all(torch.equal(rank0[k], rank1[k]) for k in rank0), "ranks drifted apart"
    assert (two / "out" / "kept" / "ema_step2.ckpt").is_file() and (two / "out" / "previews" / "step_0000004.png").is_file()

    # Same images, flips, noise and dropout per micro-batch, and the same gradient average g0/2 + g1/2
    # (autograd over two micro-batches; DDP's pre-divided all-reduce over two ranks): bitwise equal with
    # torch 2.14 + gloo. A reduction in another order (more processes, other backends) may differ in the
    # last bits (~1e-7 relative); Adam moves each weight by about lr = 1e-4 per step whatever the
    # gradient's size, so such a difference stays far below the tolerance of 1 % of lr after 4 steps.
    single = _load(one / "rank0.pt")
    assert _max_difference(rank0, single) < 1e-6
    assert _max_difference(rank0, _load(one / "rank0.pt", "initial")) > 1e-5  # it did train
    losses_two = [float(r["loss"]) for r in read_csv(two / "out" / "loss.csv")]
    losses_one = [float(r["loss"]) for r in read_csv(one / "out" / "loss.csv")]
    assert len(losses_two) == 4 and losses_two == pytest.approx(losses_one, rel=1e-5)


def test_one_process_runs_in_place_and_cpu_jobs_use_one():
    assert launch(os.getpid, nprocs=1) == os.getpid()
    assert local_processes("cpu", gpus=4) == 1  # more CPU processes would only split the job's cores
    with pytest.raises(ValueError, match="nprocs"):
        launch(os.getpid, nprocs=0)
