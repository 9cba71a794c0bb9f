"""MoCo: multi-objective gradient correction (Fernando et al., ICLR 2023)."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from ..solvers import project_simplex
from . import register
from .base import Aggregator


def _onto_simplex(v: np.ndarray) -> np.ndarray:
    """Euclidean projection onto the simplex (exact at any finite scale, see
    :func:`~mtl_src.solvers.project_simplex`). If the lambda step overflowed (entries of Y above
    ~1e154 make Y Y^T inf), the step is not defined: fall back to the vertex of the largest finite
    entry (uniform if none is finite), so the direction stays finite."""
    if np.all(np.isfinite(v)):
        return project_simplex(v)
    x = np.zeros_like(v)
    finite = np.isfinite(v)
    if finite.any():
        x[int(np.argmax(np.where(finite, v, -np.inf)))] = 1.0
    else:
        x[:] = 1.0 / len(v)
    return x


@register("moco")
class MoCo(Aggregator):
    r"""Stochastic MGDA with tracked gradients (Fernando et al. 2023, Alg. 1). State: Y (K x P, the
    tracked task gradients, Y_0 = 0) and lambda (on the simplex, lambda_0 = 1/K). Step t = 0, 1, ...:

    .. math::
        Y_{t+1} = Y_t - \beta_t\,(Y_t - G_t),\qquad
        \lambda_{t+1} = \Pi_\Delta\big(\lambda_t - \gamma_t\,(Y_{t+1}Y_{t+1}^\top + \rho I)\,\lambda_t\big),\qquad
        d_t = K\,Y_{t+1}^\top\lambda_{t+1},

    with :math:`\beta_t = \beta/(t+1)^{\sigma_\beta}` and :math:`\gamma_t = \gamma/(t+1)^{\sigma_\gamma}`.
    Y averages out the noise of the stochastic G_t, so the lambda iteration (a projected gradient step
    on the MGDA objective :math:`\tfrac12\|Y^\top\lambda\|^2 + \tfrac\rho2\|\lambda\|^2`) sees unbiased
    gradients in the limit. The paper's direction :math:`Y^\top\lambda` is on the scale of the mean;
    like the authors' code (which multiplies by the number of tasks "to match the sum loss") we
    return K times it. The paper's optional projection of each y_i onto a ball is not used (nor is it
    in the authors' code).

    Defaults: the authors' NYUv2 script (beta = 0.99, gamma = 0.1, constant steps sigma = 0, rho = 0).
    LibMTL's port uses beta = 0.5, gamma = 0.1, sigma = 0.5, rho = 0 with a softmax instead of the
    projection and loss-scaled unit gradients; those are not reproduced here. Stateful: :meth:`reset`
    clears Y, lambda and t; G must keep its shape within a run.
    """

    def __init__(self, beta: float = 0.99, beta_sigma: float = 0.0, gamma: float = 0.1, gamma_sigma: float = 0.0,
                 rho: float = 0.0):
        if not 0.0 < beta <= 1.0:
            raise ValueError(f"moco: beta (tracking step) must be in (0, 1], got {beta}")
        if not (gamma > 0 and math.isfinite(gamma)):
            raise ValueError(f"moco: gamma (lambda step) must be > 0, got {gamma}")
        for nm, v in (("beta_sigma", beta_sigma), ("gamma_sigma", gamma_sigma), ("rho", rho)):
            if not (v >= 0 and math.isfinite(v)):
                raise ValueError(f"moco: {nm} must be a finite number >= 0, got {v}")
        self.beta = float(beta)
        self.beta_sigma = float(beta_sigma)
        self.gamma = float(gamma)
        self.gamma_sigma = float(gamma_sigma)
        self.rho = float(rho)
        self.reset()

    def reset(self) -> None:
        self._y: Tensor | None = None
        self._lambda: np.ndarray | None = None
        self._t = 0

    @property
    def state(self) -> tuple[Tensor | None, np.ndarray | None, int]:
        """(Y, lambda, t): tracked gradients, simplex weights, number of steps taken."""
        return self._y, self._lambda, self._t

    def _aggregate(self, G: Tensor) -> Tensor:
        K = G.shape[0]
        if self._y is None:
            self._y = torch.zeros_like(G)
            self._lambda = np.full(K, 1.0 / K)
        elif self._y.shape != G.shape:
            raise ValueError(
                f"{self.name}: the tracked gradients have shape {tuple(self._y.shape)} but G has shape "
                f"{tuple(G.shape)}; call reset() between runs with different tasks or parameters"
            )
        y = self._y.to(device=G.device, dtype=G.dtype)
        beta_t = self.beta / (self._t + 1) ** self.beta_sigma
        gamma_t = self.gamma / (self._t + 1) ** self.gamma_sigma
        y = y.lerp_(G, beta_t)  # y + beta_t (G - y), in place on the method's own state
        A = (y @ y.T).double().cpu().numpy()
        if not np.all(np.isfinite(A)):  # overflow of a low-precision dtype: redo this K x K in float64
            y64 = y.double()
            A = (y64 @ y64.T).cpu().numpy()
        A = A + self.rho * np.eye(K)
        lam = self._lambda
        self._lambda = _onto_simplex(lam - gamma_t * (A @ lam))
        self._y = y
        self._t += 1
        return K * (torch.as_tensor(self._lambda, dtype=G.dtype, device=G.device) @ y)

    def diagnostics(self) -> dict[str, float]:
        if self._lambda is None:
            return {}
        return {f"lambda_{i}": float(v) for i, v in enumerate(self._lambda)}
