"""Several training processes as one run (torchrun), and the same code with one process.

``torchrun --nproc_per_node=N -m x2ct train ...`` sets RANK, WORLD_SIZE and
LOCAL_RANK; ``Group.from_env`` joins the process group (NCCL on CUDA, gloo on
CPU), and with one process (no WORLD_SIZE) everything here is a no-op.

Sharding keeps the global batch of one optimiser step what one process would
use: ``train.batch_size`` samples per micro-batch x ``train.accumulate``
micro-batches. When ``accumulate`` is a multiple of the process count, each
process takes whole micro-batches (``accumulate / N`` of them), which is
exactly the single-process computation, BatchNorm and dropout included; else
each micro-batch is split into ``batch_size / N`` samples per process.

Gradients are averaged with an explicit all-reduce after the backward passes
rather than by wrapping the networks in ``DistributedDataParallel``: DDP only
synchronises through ``forward()``, while the schedules call model methods
(code diffusion's VQ and prior losses), run the critic twice per loss and
freeze it during the generator's pass, which DDP cannot follow without
``find_unused_parameters`` and buffer-broadcast workarounds. The all-reduce is
the same arithmetic as DDP's, without its overlap of communication and backward.
"""

from __future__ import annotations

import dataclasses
import os

import torch
import torch.distributed as dist

from x2ct.errors import InputError


@dataclasses.dataclass(frozen=True)
class Shard:
    """What one process computes per optimiser step: ``micro_batches`` micro-batches of ``batch`` samples."""

    micro_batches: int
    batch: int
    split: str  # "accumulate" (whole micro-batches per process), "batch" (part of each micro-batch) or "none"

    def indices(self, rank: int, world: int, batch_size: int, accumulate: int) -> list[list[int]]:
        """Positions (0 .. batch_size x accumulate - 1) in the global step's draw order, per local micro-batch."""
        every = [list(range(m * batch_size, (m + 1) * batch_size)) for m in range(accumulate)]
        if self.split == "accumulate":
            return every[rank * self.micro_batches:(rank + 1) * self.micro_batches]
        if self.split == "batch":
            return [m[rank * self.batch:(rank + 1) * self.batch] for m in every]
        return every


def plan(batch_size: int, accumulate: int, world: int) -> Shard:
    """How a global step of ``batch_size`` x ``accumulate`` samples is shared by ``world`` processes."""
    if world == 1:
        return Shard(accumulate, batch_size, "none")
    if accumulate % world == 0:
        return Shard(accumulate // world, batch_size, "accumulate")
    if batch_size % world == 0:
        return Shard(accumulate, batch_size // world, "batch")
    raise InputError(f"train.batch_size ({batch_size}) or train.accumulate ({accumulate}) must be a multiple of the "
                     f"number of training processes ({world}); change one of them or --nproc_per_node.")


class Group:
    """This process's place in the run: ``rank``, ``world`` and the collective operations the trainer needs."""

    def __init__(self, rank: int = 0, world: int = 1, local_rank: int = 0):
        self.rank, self.world, self.local_rank = rank, world, local_rank

    @classmethod
    def from_env(cls, device_kind: str) -> "Group":
        """Join the torchrun process group named by the environment, or a group of one without it."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
        if not dist.is_initialized():
            if device_kind == "cuda":
                torch.cuda.set_device(local_rank)
            dist.init_process_group("nccl" if device_kind == "cuda" else "gloo")
        return cls(rank, world, local_rank)

    @property
    def main(self) -> bool:
        """Only the main process (rank 0) writes checkpoints, logs and progress."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    def all_finite(self, finite: bool, device: torch.device) -> bool:
        """True only when every process's losses and gradients were finite, so all skip the same steps."""
        if not self.active:
            return finite
        flag = torch.tensor([1.0 if finite else 0.0], device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
        return bool(flag.item() > 0)

    def average_gradients(self, parameters, device: torch.device) -> None:
        """Replace each gradient by its mean over the processes (one flat all-reduce)."""
        if not self.active:
            return
        params = [p for p in parameters if p.grad is not None]  # the same set on every process: same schedule
        if not params:
            return
        grads = [p.grad for p in params]
        flat = torch.cat([g.reshape(-1).float() for g in grads]).to(device)
        dist.all_reduce(flat)
        flat /= self.world
        offset = 0
        for p, g in zip(params, grads):
            p.grad = flat[offset:offset + g.numel()].view_as(g).to(g.dtype)
            offset += g.numel()

    def average_logs(self, logs: dict, device: torch.device) -> dict:
        """Mean of each logged value over the processes (every process logs the same keys)."""
        if not self.active or not logs:
            return logs
        keys = sorted(logs)
        values = torch.tensor([float(logs[k]) for k in keys], dtype=torch.float64, device=device)
        dist.all_reduce(values)
        return {**logs, **dict(zip(keys, (values / self.world).tolist()))}

    def broadcast(self, obj):
        """Rank 0's Python object (a state dict, an error message) on every process."""
        if not self.active:
            return obj
        box = [obj if self.main else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def broadcast_parameters(self, module: torch.nn.Module) -> None:
        """Start every process from rank 0's weights and buffers."""
        if not self.active:
            return
        for tensor in list(module.parameters()) + list(module.buffers()):
            dist.broadcast(tensor.data, src=0)

    def close(self, wait: bool = True) -> None:
        """Leave the group; with ``wait``, once every process is done (rank 0 writes the final model last).

        After an error there is no waiting: the others may be blocked in a
        collective, and torchrun stops them when this process exits.
        """
        if self.active and dist.is_initialized():
            if wait:
                dist.barrier()
            dist.destroy_process_group()
