"""FairGrad: alpha-fair resource allocation between tasks (Ban & Ji, ICML 2024).

This module also holds the solver shared by the whole "utility" family - Nash-MTL, FairGrad and
PIVRG all look for weights x > 0 with

    (M x)_i = (omega_i / x_i)^(1/a),    M = G G^T,                                   (*)

i.e. d = G^T x gives task i the utility g_i^T d = (omega_i / x_i)^(1/a): Nash-MTL is a = 1,
FairGrad a = alpha with omega = 1, PIVRG a = 2 with its performance weights omega.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from . import register
from .base import GramianWeighting, SolverWarning
from .mgda import min_norm_weights

__all__ = ["FairSolution", "solve_fair_weights", "clip_weights", "FairGrad"]

# A positive solution of (*) exists iff no convex combination of the non-zero gradients vanishes
# (Gordan's alternative): otherwise G is Pareto stationary and the Newton iterate runs off to infinity
# along such a combination. Squared norm (unit gradients) of the combination w / sum(w) at which we
# stop and call G stationary:
_STATIONARY_ITERATE = 1e-12
# and, when the iteration stalls instead, the squared norm of the min-norm point of the hull of the
# unit gradients (MGDA's solver, duality gap certified to 1e-8) below which G counts as stationary:
_STATIONARY = 1e-8


@dataclass
class FairSolution:
    """Solution of (*): ``x`` (K,) float64; ``converged``; ``stationary`` (G is Pareto stationary: (*)
    has no positive solution and ``x = 0``); ``iterations`` (Newton steps); ``residual``: the largest
    componentwise backward error of (*) on the non-zero rows (see :func:`_newton`; for well-conditioned
    rows it is ~ |x_i^(1/a) (M x)_i / omega_i^(1/a) - 1| / 2); ``zero_rows`` (their x_i = 0)."""

    x: np.ndarray
    converged: bool
    stationary: bool
    iterations: int
    residual: float
    zero_rows: np.ndarray


def solve_fair_weights(
    M: np.ndarray,
    a: float,
    omega: np.ndarray | None = None,
    *,
    tol: float = 1e-10,
    max_iter: int = 200,
    x0: np.ndarray | None = None,
    who: str = "fairgrad",
) -> FairSolution:
    r"""Solve :math:`(Mx)_i = (\omega_i / x_i)^{1/a}`, x > 0, for a PSD Gramian M (K x K) and a > 0.

    It is the stationarity condition of the strictly convex
    :math:`F(x) = \tfrac12 x^\top M x - \sum_i \omega_i^{1/a} h_a(x_i)` with :math:`h_a' = x^{-1/a}`
    (log for a = 1), so the positive solution is unique when it exists. We solve it by damped Newton
    on F (Cholesky of the K x K Hessian, Armijo backtracking, fraction-to-boundary step), after two
    exact changes of variables that make the problem scale free:

    - rows: with n_i = ||g_i||, C = D^{-1} M D^{-1} (unit diagonal) and z = D x, (*) reads
      :math:`(Cz)_i = c_i z_i^{-1/a}` with :math:`c_i = \omega_i^{1/a} n_i^{(1-a)/a}`;
    - overall size: scaling c by kappa scales z by kappa^{a/(a+1)}, so c is divided by its maximum.

    Rows with g_i = 0 cannot gain from any direction: they are left out and get x_i = 0. When the
    remaining gradients are Pareto stationary (0 in their convex hull) (*) has no positive solution;
    the iterate diverges, the stationarity is certified with MGDA's min-norm solver and x = 0
    (``stationary``). Any other failure to reach ``tol`` raises a :class:`SolverWarning` and returns
    the last iterate.
    """
    K = M.shape[0]
    omega = np.ones(K) if omega is None else np.asarray(omega, dtype=np.float64)
    if not a > 0:
        raise ValueError(f"{who}: the exponent a must be > 0, got {a}")
    diag = np.diag(M).astype(np.float64)
    keep = diag > 0.0
    x = np.zeros(K)
    if not keep.any():
        return FairSolution(x, True, True, 0, 0.0, ~keep)
    n = np.sqrt(diag[keep])
    C = M[np.ix_(keep, keep)] / np.outer(n, n)
    C = np.clip((C + C.T) / 2.0, -1.0, 1.0)
    np.fill_diagonal(C, 1.0)
    p = 1.0 / a
    log_c = p * np.log(omega[keep]) + (1.0 - a) / a * np.log(n)
    shift = float(log_c.max())
    c = np.exp(log_c - shift)
    scale = shift * a / (a + 1.0)  # z = exp(scale) * w, with w solving (C w) = c w^{-1/a}
    w0 = c ** (a / (a + 1.0))  # exact when C = I
    if x0 is not None:
        x0 = np.asarray(x0, dtype=np.float64)[keep]
        if x0.shape == w0.shape and np.all(np.isfinite(x0)) and np.all(x0 > 0):
            w0 = x0 * n * math.exp(-scale)
    w, converged, stationary, it, res = _newton(C, c, p, w0, tol, max_iter)
    if converged:
        x[keep] = np.exp(np.log(w) + scale - np.log(n))
        return FairSolution(x, True, False, it, res, ~keep)
    if stationary:
        return FairSolution(x, True, True, it, res, ~keep)
    lam = min_norm_weights(C, who=who)
    if float(lam @ C @ lam) <= _STATIONARY:
        return FairSolution(x, True, True, it, res, ~keep)
    warnings.warn(
        f"{who}: Newton solve of (M x)_i = (omega_i / x_i)^(1/a) stopped after {it} iterations with "
        f"backward error {res:.3g} > tol {tol:.3g}; returning the last iterate",
        SolverWarning,
        stacklevel=3,
    )
    if np.all(np.isfinite(w)) and np.all(w > 0):
        x[keep] = np.exp(np.log(w) + scale - np.log(n))
    return FairSolution(x, False, False, it, res, ~keep)


def _newton(C: np.ndarray, c: np.ndarray, p: float, w: np.ndarray, tol: float, max_iter: int):
    """Damped Newton on F(w) = 1/2 w^T C w - sum c_i h(w_i), h' = w^{-p}.

    Converged when the componentwise backward error |(Cw)_i - c_i w_i^-p| / ((|C| w)_i + c_i w_i^-p)
    is <= tol (the attainable accuracy when (Cw)_i is a small difference of large terms). Stationary
    when w / sum(w) = lambda (a point of the simplex) has lambda^T C lambda <= _STATIONARY_ITERATE: the
    iterate runs off along a convex combination of unit gradients that (nearly) vanishes.
    Steps: Armijo on F; where F's change is below its rounding, on the norm of the backward errors.
    Returns (w, converged, stationary, iterations, residual).
    """
    if abs(p - 1.0) < 1e-15:
        def h(v: np.ndarray) -> np.ndarray:
            return np.log(v)
    else:
        def h(v: np.ndarray) -> np.ndarray:
            return v ** (1.0 - p) / (1.0 - p)

    absC = np.abs(C)

    def F(v: np.ndarray) -> float:
        return 0.5 * float(v @ C @ v) - float(c @ h(v))

    def errors(v: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        Cv = C @ v
        b = c * v ** (-p)
        return np.abs(Cv - b) / (absC @ v + b), Cv, b

    err, Cw, b = errors(w)
    f = F(w)
    res = float(err.max())
    for it in range(max_iter + 1):
        res = float(err.max())
        if res <= tol:
            return w, True, False, it, res
        s = float(w.sum())
        if float(w @ Cw) <= _STATIONARY_ITERATE * s * s:
            return w, False, True, it, res
        if it == max_iter:
            break
        g = Cw - b
        H = C + np.diag(p * b / w)
        try:
            step = -np.linalg.solve(H, g)
        except np.linalg.LinAlgError:
            step = -np.linalg.lstsq(H, g, rcond=None)[0]
        neg = step < 0
        t = min(1.0, 0.995 * float(np.min(-w[neg] / step[neg]))) if neg.any() else 1.0
        slope = float(g @ step)
        e0 = float(np.linalg.norm(err))
        while True:
            w_new = w + t * step
            f_new = F(w_new)
            if f_new <= f + 1e-4 * t * slope:
                break
            err_new = errors(w_new)[0]
            if abs(t * slope) <= 1e-12 * (abs(f) + 1.0) and float(np.linalg.norm(err_new)) < e0:
                break
            t *= 0.5
            if t < 1e-14:
                break
        w, f = w_new, f_new
        if not np.all(np.isfinite(w)) or not np.all(w > 0):
            return w, False, False, it + 1, res
        err, Cw, b = errors(w)
    return w, False, False, max_iter, res


def clip_weights(alpha: Tensor, M: Tensor, max_norm: float) -> Tensor:
    """Scale alpha so that ||G^T alpha|| = sqrt(alpha^T M alpha) <= max_norm (no-op for max_norm = 0).

    This is the authors' ``clip_grad_norm_(shared_parameters, max_norm)`` after the shared gradient
    has been written, expressed on the weights (the norm is computed from the Gramian in float64).
    """
    if max_norm <= 0:
        return alpha
    norm = math.sqrt(max(float(alpha @ M.double() @ alpha), 0.0))
    if norm > max_norm:
        alpha = alpha * (max_norm / norm)
    return alpha


def _check_max_norm(who: str, max_norm: float) -> float:
    max_norm = float(max_norm)
    if not (max_norm >= 0 and math.isfinite(max_norm)):
        raise ValueError(f"{who}: max_norm must be >= 0 (0 disables clipping), got {max_norm}")
    return max_norm


def _check_solver_hp(who: str, tol: float, max_iter: int, max_norm: float) -> None:
    if not (tol > 0 and math.isfinite(tol)):
        raise ValueError(f"{who}: tol must be a positive number, got {tol}")
    if int(max_iter) < 1:
        raise ValueError(f"{who}: max_iter must be >= 1, got {max_iter}")
    _check_max_norm(who, max_norm)


@register("fairgrad")
class FairGrad(GramianWeighting):
    r"""alpha-fair update (Ban & Ji 2024, Eq. 4 and Alg. 1): :math:`d = K\,G^\top x` with x > 0 solving

    .. math:: G G^\top x = x^{-1/\alpha}\quad\text{(element-wise)},

    the stationarity condition of :math:`\max_d \sum_i \frac{(g_i^\top d)^{1-\alpha}}{1-\alpha}` on a
    ball (alpha = 1: :math:`\sum_i \log g_i^\top d`, i.e. Nash-MTL; alpha -> infinity: max-min
    fairness; alpha = 0: linear scalarisation, returned as ``G.sum(0)``).

    Authors' code: ``scipy.optimize.least_squares`` on the residual :math:`GG^\top x - x^{-1/\alpha}`
    from x = 1/K, the direction multiplied by K "to match the sum loss" (so ours = K x torchjd's
    ``FairGrad`` before clipping), then ``clip_grad_norm_(shared, max_norm=1)``. We solve the same
    equation by the scale-free damped Newton of :func:`solve_fair_weights` (unique root, so the same x).

    Defaults: ``alpha = 2`` (the value in all of the authors' run scripts; their argparse default is 1),
    ``max_norm = 1`` (their default; 0 disables the clipping). At a Pareto-stationary G (0 in the hull
    of the non-zero gradients) the equation has no positive solution and d = 0; zero gradient rows get
    weight 0.
    """

    def __init__(self, alpha: float = 2.0, max_norm: float = 1.0, tol: float = 1e-10, max_iter: int = 200):
        if not (alpha >= 0 and math.isfinite(alpha)):
            raise ValueError(f"fairgrad: alpha must be a finite number >= 0, got {alpha}")
        _check_solver_hp("fairgrad", tol, max_iter, max_norm)
        self.alpha = float(alpha)
        self.max_norm = float(max_norm)
        self.tol = float(tol)
        self.max_iter = int(max_iter)
        self._solution: FairSolution | None = None

    @property
    def last_solution(self) -> FairSolution | None:
        """The solver's report for the last aggregation (None before the first, or for alpha = 0)."""
        return self._solution

    def weights(self, M: Tensor) -> Tensor:
        K = M.shape[0]
        if self.alpha == 0.0:
            alpha = torch.ones(K, dtype=torch.float64)
        else:
            sol = solve_fair_weights(M.double().cpu().numpy(), self.alpha, tol=self.tol, max_iter=self.max_iter,
                                     who=self.name)
            self._solution = sol
            alpha = K * torch.as_tensor(sol.x, dtype=torch.float64)
        return clip_weights(alpha, M, self.max_norm)
