"""Small convex problems on the probability simplex, solved directly and checked.

The K x K problems of MGDA and CAGrad are convex programs over the simplex
Delta = {x >= 0, sum x = 1}. They are solved by accelerated projected gradient (FISTA with
backtracking and adaptive restart) and stopped on the Frank-Wolfe duality gap

    gap(x) = <grad f(x), x> - min_i grad f(x)_i  >=  f(x) - min_Delta f,

so the returned point is certified to be within ``tol`` of the optimum. If the iteration budget runs
out first, :class:`~mtl_src.methods.base.SolverWarning` says so (nothing is swallowed).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

__all__ = ["project_simplex", "minimize_on_simplex", "SimplexSolution"]

_MAX_BACKTRACK = 200  # doublings of L per iteration (2^200 ~ 1e60 times the initial estimate)


def project_simplex(v: np.ndarray) -> np.ndarray:
    """Euclidean projection of v onto the probability simplex (sort-based, O(K log K)).

    Exact at any scale: the projection is unchanged by adding a constant to every entry, and entries
    more than 1 below the largest one always project to 0, so v is first shifted by its maximum and
    clipped to [-1, 0]. Without that the threshold test ``u_j - (sum_{i<=j} u_i - 1) / j > 0`` loses
    the "- 1" to rounding once the entries reach ~1e16 and no index passes it. Non-finite entries
    raise a ValueError.
    """
    v = np.asarray(v, dtype=float)
    if v.ndim != 1 or v.shape[0] == 0:
        raise ValueError(f"project_simplex: v must be a non-empty vector, got shape {v.shape}")
    if not np.all(np.isfinite(v)):
        raise ValueError(f"project_simplex: v contains NaN or inf ({v.tolist()[:8]}...); nothing to project")
    K = v.shape[0]
    with np.errstate(over="ignore"):  # v - max may overflow to -inf: clipped to -1 just below
        w = np.maximum(v - v.max(), -1.0)  # in [-1, 0]; same projection as v
    u = np.sort(w)[::-1]
    css = np.cumsum(u) - 1.0
    idx = np.arange(1, K + 1)
    ok = np.nonzero(u - css / idx > 0)[0]
    rho = int(ok[-1]) if ok.size else 0  # j = 1 always passes (u_1 = 0): 0 - (0 - 1) / 1 = 1 > 0
    theta = css[rho] / (rho + 1.0)
    x = np.maximum(w - theta, 0.0)
    return x / x.sum()


@dataclass
class SimplexSolution:
    x: np.ndarray
    value: float
    gap: float
    iterations: int
    converged: bool


def minimize_on_simplex(
    f: Callable[[np.ndarray], tuple[float, np.ndarray]],
    K: int,
    *,
    x0: np.ndarray | None = None,
    lipschitz: float = 1.0,
    tol: float = 1e-8,
    max_iter: int = 20_000,
    who: str = "simplex solver",
    polish: Callable[[np.ndarray], np.ndarray] | None = None,
    polish_every: int = 25,
) -> SimplexSolution:
    """Minimise a convex, smooth f over the simplex; ``f(x)`` returns (value, gradient).

    ``polish(x)``, if given, proposes an exact solution from the current iterate (e.g. the KKT system
    on its support); it is tried every ``polish_every`` iterations and kept only if it lowers the gap.
    """
    from .methods.base import SolverWarning

    x = np.full(K, 1.0 / K) if x0 is None else project_simplex(np.asarray(x0, float))
    fx, gx = f(x)
    if not (np.isfinite(fx) and np.all(np.isfinite(gx))):
        raise ValueError(f"{who}: the objective or its gradient is not finite at the start point "
                         f"(f = {fx!r}); check the problem data for NaN/inf or overflow")
    failure = None
    y, fy, gy, t = x.copy(), fx, gx, 1.0
    L = max(lipschitz, 1e-12)
    gap = float(gx @ x - gx.min())
    it = 0
    restarted = False
    for it in range(1, max_iter + 1):
        if polish is not None and gap > tol and it % polish_every == 1:
            xp = polish(x)
            fp, gp = f(xp)
            gap_p = float(gp @ xp - gp.min())
            if gap_p < gap:
                x, fx, gx, gap = xp, fp, gp, gap_p
                y, fy, gy, t = x, fx, gx, 1.0
        if gap <= tol:
            break
        # backtracking on the step 1/L at the extrapolated point y (capped: a NaN objective never
        # satisfies the test, and would otherwise double L forever)
        for _ in range(_MAX_BACKTRACK):
            x_new = project_simplex(y - gy / L)
            f_new, g_new = f(x_new)
            diff = x_new - y
            if f_new <= fy + gy @ diff + 0.5 * L * (diff @ diff) + 1e-15 * abs(fy):
                break
            L *= 2.0
        else:
            failure = (f"backtracking found no step with sufficient decrease after {_MAX_BACKTRACK} halvings "
                       f"(objective {f_new!r} at the trial point; is f finite and smooth?)")
            break
        if f_new > fx:  # adaptive restart (O'Donoghue & Candes) keeps the sequence monotone
            if restarted:  # no descent even from x itself: f is flat to machine precision here
                break
            y, fy, gy, t, restarted = x, fx, gx, 1.0, True
            continue
        restarted = False
        t_new = 0.5 * (1.0 + np.sqrt(1.0 + 4.0 * t * t))
        y = x_new + ((t - 1.0) / t_new) * (x_new - x)
        x, fx, gx, t = x_new, f_new, g_new, t_new
        fy, gy = f(y)
        gap = float(gx @ x - gx.min())
    converged = gap <= tol and failure is None
    if failure is not None:
        warnings.warn(f"{who}: {failure}; returning the last feasible iterate (duality gap {gap:.3g})",
                      SolverWarning, stacklevel=3)
    elif not converged:
        warnings.warn(
            f"{who}: stopped after {max_iter} iterations with duality gap {gap:.3g} > tol {tol:.3g}",
            SolverWarning,
            stacklevel=3,
        )
    return SimplexSolution(x, float(fx), gap, it, converged)
