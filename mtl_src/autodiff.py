"""Per-task gradients in one place.

- :func:`task_gradients` - the K x P matrix G of gradients of K task losses w.r.t. given tensors
  (the shared parameters theta_sh, or the shared representation Z);
- :func:`write_grad` - write an aggregated direction d (P,) back into ``.grad`` of the parameters;
- :func:`stack_losses` - the K-vector of task losses a benchmark returns; it remembers its K scalar
  parts, so that :func:`task_loss`, :func:`weighted_sum`, :func:`scale_losses` and the loop of
  :func:`task_gradients` differentiate one loss (or a subset) from the loss itself. Through the stack
  instead, the backward of L_k also runs every other task's head on zero cotangents: K backwards
  then cost K^2 head backwards (``python -m mtl_src.bench.autodiff`` measures both).

Two ways to form G: ``"loop"`` (K calls to :func:`torch.autograd.grad`) and ``"batched"`` (one
call with ``is_grads_batched=True``, i.e. a vmap over the backward pass with the rows of the identity
as cotangents). Both give the same G (tested); ``"auto"`` picks the one measured faster here (see
``python -m mtl_src.bench.autodiff``) and falls back to the loop when an operation of the model has
no batching rule.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor

__all__ = [
    "task_gradients",
    "write_grad",
    "flat_numel",
    "Mode",
    "stack_losses",
    "loss_parts",
    "task_loss",
    "weighted_sum",
    "scale_losses",
]

Mode = Literal["auto", "loop", "batched"]

# Measured on a 2-core CPU (python -m mtl_src.bench.autodiff): the loop is as fast or faster for
# the small models of the embedded benchmarks, so "auto" means loop on CPU, batched on CUDA.
_AUTO_BATCHED_ON = ("cuda",)


def flat_numel(tensors: Sequence[Tensor]) -> int:
    """Total number of entries of a list of tensors (P)."""
    return sum(t.numel() for t in tensors)


def _flatten(grads: Sequence[Tensor | None], tensors: Sequence[Tensor], lead: tuple[int, ...]) -> Tensor:
    parts = []
    for g, t in zip(grads, tensors):
        if g is None:
            parts.append(t.new_zeros(*lead, t.numel()))
        else:
            parts.append(g.reshape(*lead, t.numel()))
    return torch.cat(parts, dim=-1)


_PARTS = "_mtl_task_parts"


def stack_losses(parts: Sequence[Tensor]) -> Tensor:
    """``torch.stack`` of K scalar task losses, L = (L_1, ..., L_K), that remembers its parts.

    The result is an ordinary 1-D tensor (every use of a loss vector works on it). Differentiating
    one of its entries, ``L[k]``, runs the backward of the stack, which hands a zero cotangent to
    every other loss, and autograd then runs those tasks' heads on zeros. The helpers of this module
    use the remembered L_k instead: same gradients, only task k's graph. In-place changes of L after
    stacking make the parts stale; they are then ignored (checked by version counter).
    """
    scalars = tuple(_scalar(p) for p in parts)
    if not scalars:
        raise ValueError("stack_losses needs at least one task loss")
    L = torch.stack(scalars)
    setattr(L, _PARTS, (scalars, L._version))
    return L


def _scalar(p: Tensor) -> Tensor:
    p = torch.as_tensor(p)
    return p if p.dim() == 0 else p.reshape(())


def loss_parts(losses: Tensor | Sequence[Tensor]) -> tuple[Tensor, ...] | None:
    """The K scalar losses L was stacked from (:func:`stack_losses`), or ``None`` if unknown."""
    if not isinstance(losses, Tensor):
        return tuple(_scalar(p) for p in losses)
    rec = getattr(losses, _PARTS, None)
    if rec is None:
        return None
    scalars, version = rec
    if version != losses._version or len(scalars) != losses.shape[0]:
        return None  # changed in place after stacking: the parts no longer match
    return scalars


def task_loss(losses: Tensor | Sequence[Tensor], k: int) -> Tensor:
    """L_k, differentiable through task k's graph only when the parts are known."""
    parts = loss_parts(losses)
    return parts[k] if parts is not None else _as_vector(losses)[k]


def weighted_sum(
    losses: Tensor | Sequence[Tensor], w: Tensor, idx: Sequence[int] | None = None
) -> Tensor:
    """sum_{k in idx} w_k L_k (all k when ``idx`` is None), through the selected tasks' graphs only."""
    L = _as_vector(losses)
    ks = list(range(L.shape[0])) if idx is None else [int(k) for k in idx]
    if not ks:
        raise ValueError("weighted_sum over an empty set of tasks")
    parts = loss_parts(L)
    if parts is None:
        sel = torch.tensor(ks, device=L.device)
        return (w.to(L)[sel] * L[sel]).sum()
    wk = w.to(parts[0])
    total = wk[ks[0]] * parts[ks[0]]
    for k in ks[1:]:
        total = total + wk[k] * parts[k]
    return total


def scale_losses(losses: Tensor, w: Tensor) -> Tensor:
    """w * L (elementwise), keeping the parts w_k L_k when L's parts are known."""
    parts = loss_parts(losses)
    if parts is None:
        return w.to(losses) * losses
    wk = w.to(parts[0])
    return stack_losses([wk[k] * p for k, p in enumerate(parts)])


def _as_vector(losses: Tensor | Sequence[Tensor]) -> Tensor:
    if isinstance(losses, Tensor):
        if losses.dim() != 1:
            raise ValueError(f"losses must be a 1-D tensor of K task losses, got shape {tuple(losses.shape)}")
        return losses
    return stack_losses(losses)


def task_gradients(
    losses: Tensor | Sequence[Tensor],
    tensors: Sequence[Tensor],
    *,
    retain_graph: bool = False,
    mode: Mode = "auto",
) -> Tensor:
    """Return G (K x P): row i is the gradient of ``losses[i]`` w.r.t. ``tensors``, flattened.

    ``tensors`` are the shared parameters theta_sh (G_theta in Aligned-MTL) or a representation
    tensor Z that is part of the graph (G_Z, Aligned-MTL Def. 3). Tensors a loss does not depend on
    contribute zeros. ``retain_graph=True`` keeps the graph for a later backward.
    """
    tensors = list(tensors)
    L = _as_vector(losses)
    K = L.shape[0]
    if K == 0:
        raise ValueError("task_gradients needs at least one loss")
    if mode == "auto":
        mode = "batched" if L.device.type in _AUTO_BATCHED_ON else "loop"
    if mode == "batched":
        try:
            eye = torch.eye(K, dtype=L.dtype, device=L.device)
            grads = torch.autograd.grad(
                L, tensors, grad_outputs=eye, is_grads_batched=True, retain_graph=retain_graph, allow_unused=True
            )
            return _flatten(grads, tensors, (K,))
        except RuntimeError as err:  # an op without a batching rule: fall back, but say so once
            if "batch" not in str(err).lower() and "vmap" not in str(err).lower():
                raise
            warnings.warn(f"batched backward unavailable ({err}); using the per-task loop", RuntimeWarning)
    elif mode != "loop":
        raise ValueError(f"mode must be 'auto', 'loop' or 'batched', got {mode!r}")
    parts = loss_parts(L)
    rows = []
    for i in range(K):
        keep = retain_graph or i < K - 1
        Li = L[i] if parts is None else parts[i]  # the part: task i's graph only (see stack_losses)
        grads = torch.autograd.grad(Li, tensors, retain_graph=keep, allow_unused=True)
        rows.append(_flatten(grads, tensors, ()))
    return torch.stack(rows)


def write_grad(params: Sequence[Tensor], d: Tensor, *, accumulate: bool = False) -> None:
    """Write the flat direction ``d`` (P,) into ``p.grad`` of ``params`` (in order).

    With ``accumulate=True`` the direction is added to an existing ``.grad``.
    """
    params = list(params)
    P = flat_numel(params)
    if d.shape != (P,):
        raise ValueError(f"direction has shape {tuple(d.shape)}, parameters have {P} entries")
    offset = 0
    for p in params:
        chunk = d[offset : offset + p.numel()].view_as(p).to(p.dtype)
        offset += p.numel()
        if accumulate and p.grad is not None:
            p.grad.add_(chunk)
        else:
            p.grad = chunk.clone()
