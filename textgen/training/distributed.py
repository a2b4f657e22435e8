"""Training across processes with torchrun: one process per CPU socket or GPU, on one machine or
several, each with its share of the batch rows, the gradients averaged by DistributedDataParallel.

    torchrun --nproc-per-node 2 -m textgen train FILE --batch-size 32 ...

--batch-size stays the global batch: each of N processes takes 32 / N of the rows, so N processes
take the same steps as one and reach the same losses. Process 0 alone prints, locks and saves;
every step all processes agree on whether to stop, so a time budget or a Ctrl-C ends them at
the same step. gloo carries the collectives on CPUs, NCCL on CUDA GPUs.
"""

from __future__ import annotations

import gc
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from textgen.config import OptionError
from textgen.errors import TextgenError


@dataclass(frozen=True)
class Group:
    """Where this process stands among those of the run."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    def rows(self, global_rows: int) -> slice:
        """This process's share of `global_rows` batch rows."""
        if global_rows % self.world:
            raise OptionError("batch_size", f"{global_rows} does not split evenly over {self.world} processes; "
                                            f"give a multiple of {self.world}")
        share = global_rows // self.world
        return slice(self.rank * share, (self.rank + 1) * share)

    def sum(self, values: list[float]) -> list[float]:
        """Each value summed over the processes (float64, on the collective's device)."""
        if not self.active:
            return values
        tensor = torch.tensor(values, dtype=torch.float64, device=_collective_device())
        dist.all_reduce(tensor)
        return tensor.tolist()

    def any(self, flag: bool) -> bool:
        """True on every process when it is True on one of them."""
        return self.sum([float(flag)])[0] > 0 if self.active else flag

    def decide(self, values: list[float]) -> list[float]:
        """Process 0's values, on every process: one decision for all (stop here, validate now)."""
        if not self.active:
            return values
        tensor = torch.tensor(values, dtype=torch.float64, device=_collective_device())
        dist.broadcast(tensor, src=0)
        return tensor.tolist()

    def gather_rows(self, tensor: torch.Tensor, dim: int) -> torch.Tensor:
        """Every process's rows of `tensor`, concatenated in rank order along `dim`."""
        if not self.active:
            return tensor
        local = tensor.detach().to(_collective_device()).contiguous()
        pieces = [torch.empty_like(local) for _ in range(self.world)]
        dist.all_gather(pieces, local)
        return torch.cat(pieces, dim=dim).to(tensor.device)

    def barrier(self) -> None:
        if self.active:
            dist.barrier()


SINGLE = Group()


def join(device_name: str = "auto") -> Group:
    """The process group torchrun set up through its environment variables, joined; a plain run
    is a group of one. NCCL where the processes have CUDA GPUs, gloo otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return SINGLE
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        use_cuda = torch.cuda.is_available() and device_name in ("auto", "cuda")
        if use_cuda:
            torch.cuda.set_device(local_rank)
        try:
            dist.init_process_group("nccl" if use_cuda else "gloo")
        except (RuntimeError, ValueError) as error:
            raise TextgenError(f"could not join the torchrun process group: {str(error).splitlines()[0]}") from None
    return Group(rank, world, local_rank)


def leave(group: Group, failed: bool = False) -> None:
    """Leave the process group together after a run (one process tearing its connections down
    while another is still talking to it makes gloo abort the other); after a failure, at once:
    the others are not where a barrier would meet them, and torchrun ends them."""
    if group.active and dist.is_initialized():
        gc.collect()  # a DDP wrapper waiting for the garbage collector still holds the group's threads
        if not failed:
            dist.barrier()
        dist.destroy_process_group()


def _collective_device() -> torch.device:
    if dist.is_initialized() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")
