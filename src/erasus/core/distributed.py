"""Data-parallel training helpers: the loop runs unchanged under ``accelerate launch`` (or any
initialised ``torch.distributed`` process group), each process taking its share of a batch."""
from __future__ import annotations

from collections.abc import Mapping

import torch


def distributed_context():
    """``(torch.distributed, rank, world_size)`` when several processes train together (e.g.
    under ``accelerate launch``, which initialises the process group), else ``(None, 0, 1)``."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return dist, dist.get_rank(), dist.get_world_size()
    return None, 0, 1


def shard_batch(batch, rank: int, world: int):
    """This process's share of a batch: every ``world``-th sample from ``rank`` of every
    tensor / list in a dict, tuple or list batch (all processes see the same loader order,
    so the shares are disjoint and cover the batch). ``None`` stays ``None``."""
    if batch is None:
        return None
    if isinstance(batch, torch.Tensor) or isinstance(batch, list) and not any(isinstance(b, torch.Tensor) for b in batch):
        return batch[rank::world]
    if isinstance(batch, Mapping):
        return {k: shard_batch(v, rank, world) for k, v in batch.items()}
    if isinstance(batch, (tuple, list)):
        return type(batch)(shard_batch(v, rank, world) for v in batch)
    return batch


def average_gradients(params, dist, world: int) -> None:
    """All-reduce the gradients to their mean over processes: with per-sample-mean losses and
    batch sizes divisible by the number of processes this equals the one-process gradient."""
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        dist.all_reduce(p.grad)
        p.grad.div_(world)
