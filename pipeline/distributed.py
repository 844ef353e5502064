"""Several training processes under torchrun (DDP): who is who, the process group, rank 0 first, one stop for all
ranks, and the check that a resume has as many processes as wrote the checkpoints. One plain process is a world of
one: every helper is then a no-op. torch is imported only inside the functions that need a process group."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import TypeVar

from pipeline.errors import PipelineError

T = TypeVar("T")


class PeerFailed(PipelineError):
    """Rank 0 failed while preparing; the other ranks stop with its message and exit status."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class WorldSizeChanged(PipelineError):
    """A resume with another number of processes than the checkpoints were written with."""


def world_size() -> int:
    """The number of training processes (torchrun's WORLD_SIZE; 1 for a plain run)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    """This process's global rank (0 for a plain run)."""
    return int(os.environ.get("RANK", "0"))


def is_main() -> bool:
    """Whether this process writes: rank 0, or the only process."""
    return rank() == 0


def threads(configured: int | None) -> int | None:
    """`train.threads` if set; under DDP the cores of this machine shared out, at least one per process."""
    if configured or world_size() == 1:
        return configured
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cores // int(os.environ.get("LOCAL_WORLD_SIZE", world_size())))


def backend() -> str:
    """NCCL on GPUs, gloo on CPUs."""
    import torch

    return "nccl" if torch.cuda.is_available() else "gloo"


@contextlib.contextmanager
def process_group(timeout_s: int) -> Iterator[None]:
    """Join torchrun's process group for the block, so rank 0 can lead before the Trainer starts; a peer silent for
    `timeout_s` fails the collective instead of hanging the job."""
    if world_size() == 1:
        yield
        return
    import torch
    import torch.distributed as dist

    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    owned = not dist.is_initialized()
    if owned:
        dist.init_process_group(backend(), timeout=timedelta(seconds=timeout_s))
    try:
        yield
    finally:
        if owned and dist.is_initialized():
            dist.destroy_process_group()


def lead(step: Callable[[], T]) -> T:
    """Run `step` on rank 0 alone while the others wait, and give every rank its (picklable) result; an error on
    rank 0 stops the others too, with its message in one line."""
    if world_size() == 1:
        return step()
    import torch.distributed as dist

    if not is_main():
        outcome: list[tuple[str | None, int, T | None]] = [(None, 0, None)]
        dist.broadcast_object_list(outcome, src=0)
        error, code, value = outcome[0]
        if error is not None:
            raise PeerFailed(f"rank 0 failed: {error}", code)
        return value  # type: ignore[return-value]
    try:
        value = step()
    except BaseException as exc:
        code = exc.exit_code if isinstance(exc, PipelineError) else 1
        dist.broadcast_object_list([(str(exc) or type(exc).__name__, code, None)], src=0)
        raise
    dist.broadcast_object_list([(None, 0, value)], src=0)
    return value


def any_rank(flag: bool) -> bool:
    """Whether `flag` is true on any rank: every rank must call it at the same point (an all-reduce)."""
    if world_size() == 1:
        return flag
    import torch
    import torch.distributed as dist

    if not dist.is_initialized():
        return flag
    device = torch.device("cuda", torch.cuda.current_device()) if backend() == "nccl" else torch.device("cpu")
    value = torch.tensor([int(flag)], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def barrier() -> None:
    """Wait for every rank (nothing in one process)."""
    if world_size() > 1:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.barrier()


def check_world_size(saved: int, checkpoints: Path) -> None:
    """Refuse to resume checkpoints that `saved` processes wrote with another number of processes.

    The data order, the steps per epoch and the per-rank RNG states all depend on the world size, so continuing
    with another one would silently train a different run. (`pipeline.checkpoints` keeps the number written.)
    """
    if saved != world_size():
        raise WorldSizeChanged(
            f"the checkpoints in {checkpoints} were written by {saved} process(es), this run has "
            f"{world_size()}; resume with --nproc_per_node {saved} (or without torchrun for 1), or train "
            "from scratch without --resume")
