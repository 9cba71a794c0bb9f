"""GradDrop: gradient sign dropout (Chen et al., NeurIPS 2020)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from . import register
from .base import Aggregator
from .fairgrad import _check_max_norm


def graddrop_direction(G: Tensor, U: Tensor, leak: Tensor | None = None) -> Tensor:
    r"""GradDrop's combination of the rows of G (K x P) for given uniform draws U (P,).

    Sign purity :math:`\mathcal P = \tfrac12\big(1 + \sum_i g_i / \sum_i |g_i|\big)` per coordinate
    (1/2 where every task's gradient is 0 there, which then contributes nothing); task i keeps its
    positive entries where :math:`\mathcal P > U` and its negative ones where :math:`\mathcal P < U`:
    :math:`m_i = [\mathcal P > U][g_i > 0] + [\mathcal P < U][g_i < 0]`, and
    :math:`d = \sum_i (\ell_i + (1 - \ell_i)\, m_i) \odot g_i` (leak :math:`\ell_i`, default 0).
    """
    # Per coordinate only two sums matter: what the kept positive (negative) entries add up to. With
    # v_i = 1 - leak_i:  d = sum_i leak_i g_i + [P > U] sum_i v_i g_i^+ + [P < U] sum_i v_i g_i^-.
    # Two K x P temporaries and matrix-vector products instead of K masks.
    Gp = G.clamp(min=0)
    Gn = G.clamp(max=0)
    pos, neg = Gp.sum(0), Gn.sum(0)
    total_abs = pos - neg
    purity = torch.where(total_abs > 0, 0.5 * (1 + (pos + neg) / torch.where(total_abs > 0, total_abs, 1)), 0.5)
    if leak is None:
        kept_pos, kept_neg, leaked = pos, neg, None
    else:
        lk = leak.to(G)
        kept_pos, kept_neg, leaked = (1 - lk) @ Gp, (1 - lk) @ Gn, lk @ G
    d = torch.where(purity > U, kept_pos, 0.0) + torch.where(purity < U, kept_neg, 0.0)
    return d if leaked is None else d + leaked


@register("graddrop")
class GradDrop(Aggregator):
    r"""Gradient sign dropout (Chen et al. 2020, Sec. 3 and Alg. 1): per coordinate,
    draw U ~ Uniform(0, 1) and keep only the positive or only the negative task gradients there, the
    positive ones with probability :math:`\mathcal P` (see :func:`graddrop_direction`):

    .. math:: d = \sum_i \big(\ell + (1-\ell)\,m_i\big)\odot g_i,\quad
              m_i = [\mathcal P > U]\,[g_i > 0] + [\mathcal P < U]\,[g_i < 0],\quad
              \mathcal P = \tfrac12\Big(1 + \frac{\sum_i g_i}{\sum_i |g_i|}\Big).

    Where all tasks agree in sign, d is their sum; ``leak`` = 1 gives linear scalarisation. The update
    is the (masked) sum over tasks: the scale of the sum of losses, = torchjd's ``GradDrop`` (factor 1;
    the nash-mtl/FairGrad code takes the mean and multiplies by K).

    Where it applies: the paper inserts GradDrop at an activation layer (after the shared trunk),
    summing over the batch with a sign correction (LibMTL follows that); the nash-mtl/FairGrad code
    whose GradDrop numbers PIVRG reports, and torchjd, apply it to the gradients of the shared
    *parameters*. We do the latter (``space = "shared"``); G over the representation Z can be given
    to :meth:`aggregate` directly. Their 1e-8 in the denominator of P is replaced by the exact ratio
    (it made P = 1/2 for gradients below ~1e-8, i.e. removed the method's effect on small gradients).

    ``leak``: a float in [0, 1] or one per task (default 0, the paper and LibMTL). ``seed`` seeds the
    draws of U (``None``: fresh entropy); :meth:`reset` restarts the stream. The draws come from a
    CPU ``torch.Generator`` in G's dtype, the same stream as ``torch.rand`` after
    ``torch.manual_seed(seed)``.
    ``max_norm`` (default 0: off, as in the nash-mtl code whose numbers the tables report): clip the
    shared direction to this norm, the ``clip_grad_norm_(shared_parameters, max_norm)`` that the
    FairGrad/PIVRG code applies after every method's backward.
    """

    def __init__(self, leak: float | Sequence[float] = 0.0, seed: int | None = 0, max_norm: float = 0.0):
        values = [float(leak)] if isinstance(leak, (int, float)) else [float(v) for v in leak]
        if not values or not all(0.0 <= v <= 1.0 for v in values):
            raise ValueError(f"graddrop: leak must be in [0, 1] (a float or one per task), got {leak!r}")
        self.leak = float(leak) if isinstance(leak, (int, float)) else values
        self.seed = seed
        self.max_norm = _check_max_norm("graddrop", max_norm)
        self.reset()

    def reset(self) -> None:
        self._gen = torch.Generator()
        if self.seed is None:
            self._gen.seed()
        else:
            self._gen.manual_seed(int(self.seed))

    def _leak(self, K: int) -> Tensor | None:
        if isinstance(self.leak, float):
            return None if self.leak == 0.0 else torch.full((K,), self.leak, dtype=torch.float64)
        if len(self.leak) != K:
            raise ValueError(f"{self.name}: leak has {len(self.leak)} entries but there are {K} tasks")
        return torch.tensor(self.leak, dtype=torch.float64)

    def _aggregate(self, G: Tensor) -> Tensor:
        leak = self._leak(G.shape[0])
        U = torch.rand(G.shape[1], generator=self._gen, dtype=G.dtype).to(G.device)
        d = graddrop_direction(G, U, leak)
        if self.max_norm > 0:
            norm = float(d.double().norm())
            if norm > self.max_norm:
                d = d * (self.max_norm / norm)
        return d
