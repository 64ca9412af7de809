"""Cross-process helpers as pure functions (tested on CPU with patched collectives, as open_clip does)."""

from __future__ import annotations

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
