"""Data-parallel training processes: the group a trainer joins, and the launcher that starts it.

A trainer runs its whole body inside `with process_group(device) as group:`. The environment says
whether it is one of several processes (torchrun's RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR,
MASTER_PORT): with WORLD_SIZE > 1 it joins that torch.distributed group (NCCL on CUDA, one GPU per
process = cuda:LOCAL_RANK; gloo on CPU), otherwise it runs alone. Rank 0 alone writes outputs,
checkpoints and logs; every rank resumes from the same checkpoint.

`launch(fn, args, nprocs)` runs `fn(*args)` on `nprocs` processes of this machine (rank = local
rank, a free localhost port), so a Snakemake rule that is given N GPUs trains on all N; with
nprocs == 1 it simply calls `fn`. An error in any rank ends the launch with that rank's traceback.

Multi-node under SLURM: a Snakemake job runs on one node (all of its GPUs), so a run over several
nodes starts the stage function itself under `srun` + `torchrun`: torchrun sets the variables
above, and the stage joins that group (`launch`, too, then calls `fn` instead of spawning). From a
batch script holding e.g. 2 nodes x 8 GPUs, with `train.py` a few lines that build the stage's
settings (the JSON the rule passes as `params.settings`) and call `train_ldm(...)` or
`train_fr(...)` with the paths the rule uses:

    #SBATCH --nodes=2 --ntasks-per-node=1 --gpus-per-node=8 --cpus-per-task=64
    head=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
    srun torchrun --nnodes="$SLURM_NNODES" --nproc-per-node=8 --rdzv-id="$SLURM_JOB_ID" \
        --rdzv-backend=c10d --rdzv-endpoint="$head:29500" train.py

Every node must see the same files (a shared file system). The state dir makes the run resumable
(FR training starts afresh with a different number of processes: its global batch and lr follow it), and
`snakemake --touch` afterwards marks the rule's outputs as up to date so the workflow goes on.
"""

from __future__ import annotations

import contextlib
import os
import socket
import traceback
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping, Sequence

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.multiprocessing.spawn import ProcessException

from .runtime import resolve_device
from .workflow import tee_output


@dataclass(frozen=True)
class ProcessGroup:
    """This process's place among the training processes and the device it trains on."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes outputs, checkpoints and logs."""
        return self.rank == 0

    def barrier(self) -> None:
        if self.world_size > 1:
            dist.barrier()


@contextlib.contextmanager
def process_group(device: str) -> Iterator[ProcessGroup]:
    """Join the torch.distributed group the environment describes (WORLD_SIZE > 1) for the block,
    else run alone on `device`; leave the group afterwards if this call joined it."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    torch_device = resolve_device(device)
    if world_size == 1:
        yield ProcessGroup(0, 1, 0, torch_device)
        return
    if "RANK" not in os.environ:
        raise RuntimeError(f"WORLD_SIZE={world_size} is set but RANK is not; start the processes with torchrun "
                           f"(or idiff_core.distributed.launch), which sets both")
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    if torch_device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise RuntimeError(f"process with local rank {local_rank} needs a GPU but only "
                               f"{torch.cuda.device_count()} are visible; start one process per GPU")
        torch_device = torch.device("cuda", local_rank)
        torch.cuda.set_device(torch_device)
    joined = not dist.is_initialized()
    if joined:
        dist.init_process_group("nccl" if torch_device.type == "cuda" else "gloo")
    group = ProcessGroup(rank, world_size, local_rank, torch_device)
    # On an error the group is left as it is: this process is about to end, and tearing the group
    # down first would make the other ranks fail too, racing the real error to the launcher.
    yield group
    group.barrier()  # nobody leaves while another rank still needs the group
    if joined:
        dist.destroy_process_group()


def local_processes(device: str, gpus: int) -> int:
    """How many training processes a job with `gpus` GPUs starts on `device`: one per GPU on CUDA,
    one on CPU (more CPU processes would only split the job's cores)."""
    if resolve_device(device).type != "cuda":
        return 1
    gpus = max(1, int(gpus))
    visible = torch.cuda.device_count()
    if gpus > visible:
        raise RuntimeError(f"the job was given {gpus} GPUs but this process sees {visible} "
                           f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')}); "
                           f"lower the rule's gpu resource or run where {gpus} GPUs are visible")
    return gpus


def free_port() -> int:
    """A TCP port on localhost that nothing listens on right now (for the group's rendezvous)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def launch(fn: Callable[..., Any], args: Sequence[Any] = (), nprocs: int = 1, *,
           kwargs: Mapping[str, Any] | None = None, log_path: str | os.PathLike | None = None) -> Any:
    """Run `fn(*args, **kwargs)` on `nprocs` local processes forming one group; return rank 0's result.

    With nprocs == 1, or when the environment already describes a group (WORLD_SIZE set, e.g. by
    torchrun), `fn` runs in this process. Otherwise the ranks are forked from multiprocessing's fork
    server (a clean process that has imported torch and `fn`'s module once; CUDA-safe, unlike plain
    fork), so `fn` and its arguments must be picklable (`fn` a module-level function), and a script
    that calls `launch` must guard its top level with `if __name__ == "__main__":`. The fork server
    keeps the environment of the first launch. The ranks' output is appended to `log_path` as well
    as the terminal. An exception in any rank stops all ranks and is raised here as a RuntimeError
    holding the traceback of the rank that failed first.
    """
    if nprocs < 1:
        raise ValueError(f"nprocs must be >= 1, got {nprocs}")
    kwargs = dict(kwargs or {})
    if nprocs == 1 or "WORLD_SIZE" in os.environ:
        return fn(*args, **kwargs)
    context = mp.get_context("forkserver")
    context.set_forkserver_preload(["torch", fn.__module__])  # imported once, then each rank is forked
    results, errors = context.SimpleQueue(), context.SimpleQueue()
    ranks = mp.start_processes(_run_rank, args=(fn, tuple(args), kwargs, nprocs, free_port(), log_path, results,
                                                errors), nprocs=nprocs, join=False, start_method="forkserver")
    result = None
    try:
        while True:  # drain rank 0's result while waiting, so a large one cannot block its sender
            finished = ranks.join(timeout=0.2)  # raises if any rank failed, after stopping the others
            while not results.empty():
                result = results.get()
            if finished:
                return result
    except ProcessException as failure:
        if errors.empty():  # killed by a signal or out of memory: no Python traceback to show
            raise
        rank, trace = errors.get()  # the first rank to fail; the others may fail only because it left
        raise RuntimeError(f"training process {rank} of {nprocs} failed:\n{trace}") from failure


def _run_rank(rank: int, fn: Callable[..., Any], args: tuple, kwargs: dict[str, Any], world_size: int, port: int,
              log_path: str | os.PathLike | None, results: Any, errors: Any) -> None:
    """One launched rank: the torchrun variables for `process_group`, then `fn`."""
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size),
                      LOCAL_WORLD_SIZE=str(world_size), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    with tee_output(str(log_path) if log_path else None):
        try:
            result = fn(*args, **kwargs)
        except BaseException:
            errors.put((rank, traceback.format_exc()))
            raise
    if rank == 0:
        results.put(result)
