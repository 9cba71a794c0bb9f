"""Shared input checks of the loss-weighting methods (private: not a method module).

Every check raises a ``ValueError`` that names the method and the offending tasks, so that a bad loss
or a bad feedback vector never turns into a silent NaN further down.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def check_losses(losses: Tensor, who: str, K: int | None = None, what: str = "task losses") -> Tensor:
    """A detached, finite 1-D loss vector (K,), optionally of a known length K."""
    if not isinstance(losses, Tensor):
        losses = torch.as_tensor(losses, dtype=torch.float64)
    if losses.dim() != 1 or losses.numel() == 0:
        raise ValueError(f"{who}: {what} must be a non-empty 1-D tensor (K,), got shape {tuple(losses.shape)}")
    if K is not None and losses.numel() != K:
        raise ValueError(f"{who}: got {losses.numel()} {what} but the method was set up for K = {K} tasks")
    bad = torch.nonzero(~torch.isfinite(losses.detach())).flatten().tolist()
    if bad:
        raise ValueError(f"{who}: {what} of tasks {bad} are NaN or inf: {losses.detach().tolist()}")
    return losses.detach()


def check_above(values: Tensor, bound: Tensor, who: str, what: str, hint: str) -> None:
    """values > bound element-wise, else a ValueError naming the tasks."""
    bad = torch.nonzero(~(values > bound)).flatten().tolist()
    if bad:
        limits = bound.expand_as(values)[bad].tolist()
        raise ValueError(f"{who}: {what} of tasks {bad} are {values[bad].tolist()}, not above {limits}; {hint}")


def lower_bounds(min_losses: float | Sequence[float], who: str) -> float | list[float]:
    """Validate a ``min_losses`` hyperparameter (a number, or one number per task)."""
    if isinstance(min_losses, (int, float)):
        m = float(min_losses)
        if not torch.isfinite(torch.tensor(m)):
            raise ValueError(f"{who}: min_losses must be finite, got {min_losses!r}")
        return m
    try:
        if isinstance(min_losses, str):
            raise TypeError
        ms = [float(v) for v in min_losses]
    except (TypeError, ValueError):
        raise ValueError(f"{who}: min_losses must be a number or a sequence of numbers, got {min_losses!r}") from None
    if not ms or not all(torch.isfinite(torch.tensor(ms)).tolist()):
        raise ValueError(f"{who}: min_losses must be finite numbers, got {min_losses!r}")
    return ms


def bounds_for(min_losses: float | list[float], losses: Tensor, who: str) -> Tensor:
    """The lower bounds as a tensor like ``losses`` (K,), checking the per-task length."""
    if isinstance(min_losses, list) and len(min_losses) != losses.numel():
        raise ValueError(f"{who}: min_losses has {len(min_losses)} entries but there are {losses.numel()} tasks")
    return torch.as_tensor(min_losses, dtype=losses.dtype, device=losses.device).expand_as(losses)
