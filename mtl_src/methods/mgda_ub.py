"""MGDA-UB: MGDA on the gradients w.r.t. the shared representation (Sener & Koltun, NeurIPS 2018)."""

from __future__ import annotations

import dataclasses
from typing import ClassVar, Literal

import torch
from torch import Tensor

from . import register
from .base import Forward, StepContext, StepResult
from .mgda import MGDA, min_norm_weights

_NORMALIZATIONS = ("none", "l2", "loss", "loss+")


@register("mgda_ub")
class MGDAUB(MGDA):
    r"""MGDA upper bound (Sener & Koltun 2018, Sec. 3.3, Thm 1): the min-norm problem is solved on
    the gradients w.r.t. the shared representation Z instead of theta_sh,

    .. math:: \lambda^* = \arg\min_{\lambda\in\Delta_K}\Big\|\sum_i \lambda_i\,\tilde g^Z_i\Big\|^2,
              \qquad \tilde g^Z_i = g^Z_i / n_i,\qquad
              d_\theta = K\,J^\top \sum_i \lambda^*_i\, g^Z_i,

    J = dZ/dtheta_sh (one backward of :math:`\sum_i \lambda^*_i L_i` instead of K). ``normalization``
    picks n_i as in the authors' ``gradient_normalizers``: ``"none"`` (1), ``"l2"`` (:math:`\|g^Z_i\|`),
    ``"loss"`` (:math:`L_i`), ``"loss+"`` (:math:`L_i\|g^Z_i\|`). As in their code the normalisation
    only chooses lambda: the weights then multiply the raw losses. Zero rows are left unnormalised.

    Default ``"none"``: the authors' code comments that normalisation is optional and not part of the
    paper; their sample config uses ``"loss+"``; the re-implementations that produced the MGDA rows of
    the Nash-MTL / FairGrad / PIVRG tables (nash-mtl code, LibMTL) default to ``"none"``, as does
    torchjd. ``"loss"``/``"loss+"`` need the losses: inside :meth:`step` they are known; a bare
    :meth:`aggregate` call needs :meth:`set_losses` first (else a ``ValueError``).

    Scale: lambda sums to 1 in the paper; we use K lambda (sum of losses), so with ``"none"``
    ``mgda_ub`` on G_Z = K x torchjd's ``MGDA`` on G_Z. As for every aggregator of the library, the
    task heads receive the gradient of the plain sum of the losses (the authors' heads receive the
    lambda-weighted one).
    """

    space: ClassVar[Literal["shared", "representation"]] = "representation"

    def __init__(self, normalization: str = "none", tol: float = 1e-8, max_iter: int = 20_000):
        if normalization not in _NORMALIZATIONS:
            raise ValueError(f"mgda_ub: normalization must be one of {_NORMALIZATIONS}, got {normalization!r}")
        super().__init__(tol=tol, max_iter=max_iter)
        self.normalization = normalization
        self._losses: Tensor | None = None

    def set_losses(self, losses: Tensor | None) -> None:
        """The task losses of the batch (for ``"loss"`` / ``"loss+"`` normalisation); None to clear."""
        if losses is None:
            self._losses = None
            return
        losses = torch.as_tensor(losses).detach().double().cpu().flatten()
        if not bool(torch.isfinite(losses).all()) or bool((losses <= 0).any()):
            raise ValueError(
                f"{self.name}: normalization={self.normalization!r} divides by the losses, which must be "
                f"finite and > 0; got {losses.tolist()}"
            )
        self._losses = losses

    def step(self, ctx: StepContext) -> StepResult:
        if self.normalization not in ("loss", "loss+"):
            return super().step(ctx)

        def forward() -> Forward:
            out = ctx.forward()
            self.set_losses(out.losses)
            return out

        try:
            return super().step(dataclasses.replace(ctx, forward=forward))
        finally:
            self._losses = None

    def weights(self, M: Tensor) -> Tensor:
        K = M.shape[0]
        M64 = M.double().cpu()
        norms = torch.diagonal(M64).clamp_min(0).sqrt()
        if self.normalization == "none":
            gn = torch.ones(K, dtype=torch.float64)
        elif self.normalization == "l2":
            gn = norms
        else:
            if self._losses is None:
                raise ValueError(
                    f"{self.name}: normalization={self.normalization!r} needs the task losses; call "
                    "set_losses(losses) before aggregate(G), or use step()"
                )
            if self._losses.numel() != K:
                raise ValueError(f"{self.name}: {self._losses.numel()} losses for {K} task gradients")
            gn = self._losses * (norms if self.normalization == "loss+" else 1.0)
        gn = torch.where((gn > 0) & (norms > 0), gn, torch.ones_like(gn))
        Mn = M64 / torch.outer(gn, gn)
        lam = min_norm_weights(Mn.numpy(), self.tol, self.max_iter, self.name)
        return K * torch.as_tensor(lam, dtype=torch.float64)
