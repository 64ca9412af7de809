"""Cross-process helpers as pure functions (tested on CPU with patched collectives, as open_clip does)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
import torch.distributed as dist


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def end_process_group() -> None:
    """Destroy the default process group at the end of a run that succeeded. Without it gloo's worker
    threads outlive the interpreter's teardown and abort it ("terminate called without an active
    exception", exit code -6), so a finished run could fail its launcher. (Not after an error: a rank
    still inside a collective would wait forever.)"""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()  # rank 0 may still be writing the final folder
        dist.destroy_process_group()


def gather_with_local_grad(tensor: torch.Tensor) -> torch.Tensor:
    """All-gather along dim 0; this rank's slice keeps its autograd graph, the others are constants.

    Every rank then computes the loss over the global batch, and gradients flow only into the
    features it computed itself (all ranks must pass tensors of the same shape).
    """
    size = world_size()
    if size == 1:
        return tensor
    gathered = [torch.zeros_like(tensor) for _ in range(size)]
    dist.all_gather(gathered, tensor.detach().contiguous())
    gathered[dist.get_rank()] = tensor
    return torch.cat(gathered, dim=0)


def gather_for_global_loss(tensor: torch.Tensor) -> torch.Tensor:
    """All-gather for a loss over the global batch that every rank computes alike: this rank's slice
    keeps its graph with its gradient times the world size, so that DDP's mean over ranks gives the
    single-process gradient (parameters the loss uses directly, like the temperature, are not scaled:
    every rank already has their whole gradient)."""
    size = world_size()
    if size == 1:
        return tensor
    if tensor.dtype == torch.bool:  # gloo does not gather bool tensors
        return gather_with_local_grad(tensor.to(torch.uint8)).bool()
    local = scale_gradient(tensor, size) if tensor.requires_grad else tensor
    return gather_with_local_grad(local)


def scale_gradient(loss: torch.Tensor, factor: float) -> torch.Tensor:
    """Same value, gradient times ``factor``.

    A loss computed over gathered features gives each rank only d loss / d (its own features); DDP
    then averages over ranks, i.e. divides the true gradient by the world size. Scaling the gradient
    by the world size restores the single-process gradient while the logged value stays the loss.
    """
    if factor == 1:
        return loss
    return loss + (factor - 1) * (loss - loss.detach())


# ---------------------------------------------------------------------------------------------
# Generation-based evaluation on every process
# ---------------------------------------------------------------------------------------------


def evaluation_share(total: int, rank: int, world: int) -> list[int]:
    """The indices of ``total`` evaluation studies that process ``rank`` of ``world`` generates for:
    every ``world``-th one from ``rank``, padded (with its first index, or study 0) to the length of the
    longest share, so every process runs the same number of batches of the same sizes (a sharded model
    runs collectives in every forward pass). The padding is dropped again after gathering."""
    share = list(range(rank, total, world))
    longest = -(-total // world)
    return share + [share[0] if share else 0] * (longest - len(share))


def gather_objects(items: list) -> list:
    """Every process's ``items``, concatenated in rank order (on every process)."""
    if world_size() == 1:
        return list(items)
    gathered = [None] * world_size()
    dist.all_gather_object(gathered, items)
    return [item for part in gathered for item in part]


def broadcast_object(value):
    """The main process's ``value`` on every process."""
    if world_size() == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def unique_by_id(predictions: Sequence[dict]) -> list[dict]:
    """The first prediction of each study id (gathered shares repeat their padding)."""
    seen, unique = set(), []
    for prediction in predictions:
        if prediction["id"] not in seen:
            seen.add(prediction["id"])
            unique.append(prediction)
    return unique


@contextmanager
def full_parameters(model) -> Iterator[bool]:
    """Every parameter of an FSDP2-sharded ``model`` gathered on every process for the duration (True),
    so that generation can call its submodules directly (the perception, then ``generate``) and run
    each forward without further collectives; resharded afterwards. Other models: nothing (False).
    Memory: the whole model on each process while it lasts, as generation needs anyway."""
    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:  # a torch without FSDP2
        FSDPModule = ()  # noqa: N806
    units = [module for module in model.modules() if isinstance(module, FSDPModule)]
    if not units:
        yield False
        return
    states = [unit._get_fsdp_state() for unit in units]
    saved = [(state._auto_reshard_after_forward, [g.post_forward_mesh_info for g in state._fsdp_param_groups])
             for state in states]
    for unit in units:
        unit.set_reshard_after_forward(False, recurse=False)
        unit.unshard()
    try:
        yield True
    finally:
        for unit in units:
            unit.reshard()
        for state, (auto, mesh_infos) in zip(states, saved):  # the training schedule's resharding again
            state._auto_reshard_after_forward = auto
            for group, mesh_info in zip(state._fsdp_param_groups, mesh_infos):
                group.post_forward_mesh_info = mesh_info
