"""Numerical checks of the PIVRG theory (chapter ``notebooks/pivrg/01_theory.md``).

Conventions, as in :mod:`mtl_src.methods`: ``G`` is K x P, row i = gradient g_i of task i, and
``M = G G^T`` its Gramian (the paper's :math:`\\mathcal G` is P x K, so its :math:`\\mathcal G^\\top\\mathcal G`
is our M). The utilities of a direction d are ``u = G d`` (u_i = g_i^T d). Eq. 8 of the paper reads
``(M x)_i^2 = omega_i / x_i``, x > 0, and the PIVRG direction is ``d = G^T x`` (the library's ``pivrg``
multiplies by K and clips; neither changes the direction).

Every check returns a :class:`~mtl_src.theory.checks.Check`: one dimensionless margin per draw
(``>= -tol``: the statement held in that draw). Tolerances come from the rounding error of the
quantities compared, never tuned to make a check pass.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np
import torch
from scipy.optimize import least_squares, minimize, nnls

from .. import methods
from ..methods import Feedback, Method, StepContext, StepResult
from ..methods.fairgrad import solve_fair_weights
from ..methods.mgda import min_norm_weights
from ..methods.pivrg import performance_weights
from ..problems import quadratic, toy
from .aligned import random_gradients
from .checks import EPS, Check, Ledger

__all__ = [
    "Check", "Ledger", "random_omega", "random_drops", "eq8_weights", "eq8_least_squares", "inverse_utility",
    "direct_minimiser", "eq8_optimality", "eq7_stationarity", "convexity_segments",
    "properties_check", "prop1_check", "tau_rule_tightness", "prop2_error", "prop2_curve", "prop2_threshold",
    "prop2_check", "prop2_scale_invariance", "theorem1_run", "theorem1_draws", "eq10_eq11_draws",
    "dependence_vs_stationarity", "unbounded_run", "constrained_ls", "fair_family", "fair_limits",
    "pivrg_with_omega", "toy_single_task_optima", "toy_drops", "ToyPerformanceFeed", "train_toy_pivrg",
    "prop2_on_table",
]

TOL_SOLVE = 1e-10  # backward error of the library's Eq. 8 solve (solve_fair_weights' default tol)


# --------------------------------------------------------------------------------------------------
# random objects
# --------------------------------------------------------------------------------------------------
def random_drops(rng: np.random.Generator, K: int, log10_spread: tuple[float, float] = (-3.0, 4.0)) -> np.ndarray:
    """Per-task performance drops (percent) of adversarial shapes: Gaussian, uniform, log-normal,
    one task far above / below the others, two clusters; spread 10^U(log10_spread), centre +-1e3."""
    shape = int(rng.integers(6))
    if shape == 0:
        z = rng.standard_normal(K)
    elif shape == 1:
        z = rng.uniform(-1, 1, K)
    elif shape == 2:
        z = rng.lognormal(0.0, 1.0, K)
    elif shape == 3:
        z = np.r_[np.zeros(K - 1), 1.0]
    elif shape == 4:
        z = np.r_[np.zeros(K - 1), -1.0]
    else:
        z = np.r_[np.zeros(K // 2), np.ones(K - K // 2)]
    z = rng.permutation(z)
    ptp = np.ptp(z)
    z = z / ptp if ptp > 0 else z
    return rng.uniform(-1e3, 1e3) + 10.0 ** rng.uniform(*log10_spread) * z


def random_omega(rng: np.random.Generator, K: int) -> np.ndarray:
    """Performance weights as PIVRG makes them (library ``performance_weights``, Eq. 5) from random
    drops, with bound ~ U(1.2, 3) and tau_min ~ 10^U(-1, 2): every omega satisfies Properties 1-3."""
    om, _ = performance_weights(random_drops(rng, K, (-1.0, 3.0)), float(rng.uniform(1.2, 3.0)),
                                float(10.0 ** rng.uniform(-1, 2)))
    return om.numpy()


def _draw_G(rng: np.random.Generator, K_range=(2, 6), P_max: int = 20, log10_cond: float = 2.0) -> np.ndarray:
    K = int(rng.integers(K_range[0], K_range[1] + 1))
    P = int(rng.integers(K, P_max + 1))
    return random_gradients(rng, K, P, rng.uniform(0.0, log10_cond))


# --------------------------------------------------------------------------------------------------
# Eq. 2/4 -> Eq. 7-8
# --------------------------------------------------------------------------------------------------
def eq8_weights(G: np.ndarray, omega: np.ndarray, x0: np.ndarray | None = None) -> np.ndarray:
    """x > 0 with (M x)_i^2 = omega_i / x_i (Eq. 8), by the library's solver (PIVRG's exponent a = 2)."""
    sol = solve_fair_weights(G @ G.T, 2.0, np.asarray(omega, float), x0=x0, who="pivrg-theory")
    return sol.x


def eq8_least_squares(G: np.ndarray, omega: np.ndarray) -> np.ndarray:
    """Eq. 8 the authors' way: scipy ``least_squares`` on (M x) - sqrt(omega / x), x > 0, from x = 1/K."""
    M = G @ G.T
    K = M.shape[0]
    r = least_squares(lambda x: M @ x - np.sqrt(omega / x), np.full(K, 1.0 / K), bounds=(1e-20, np.inf),
                      xtol=1e-15, ftol=1e-15, gtol=1e-15, max_nfev=10_000)
    return r.x


def inverse_utility(G: np.ndarray, omega: np.ndarray, d: np.ndarray) -> float:
    """Eq. 4 on the unit sphere: ||d|| * (1/K) sum_i omega_i / g_i^T d (scale free; +inf off the cone)."""
    u = G @ d
    if np.any(u <= 0):
        return math.inf
    return float(np.linalg.norm(d) * np.mean(omega / u))


def direct_minimiser(G: np.ndarray, omega: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Minimise Eq. 4 directly in R^P, without the paper's KKT derivation or Eq. 8.

    F(d) = mean(omega / G d) is homogeneous of degree -1, so the minimiser over ||d|| <= r is r times
    the direction of the minimiser of psi(d) = F(d) + ||d||^2 / 2 (any radius gives the same direction).
    psi is minimised by scipy's ``trust-exact`` (psi = +inf off the cone G d > 0: such steps are
    rejected), from a feasible start with a random component outside the row space of G.
    """
    K = len(omega)

    def psi(d):
        u = G @ d
        return math.inf if np.any(u <= 0) else float(np.mean(omega / u) + 0.5 * d @ d)

    def jac(d):
        return d - G.T @ (omega / (G @ d) ** 2) / K

    def hess(d):
        u = G @ d
        return np.eye(len(d)) + 2.0 / K * (G.T * (omega / u**3)) @ G

    pinv = np.linalg.pinv(G)
    d0 = pinv @ rng.uniform(0.5, 2.0, K)
    d0 = d0 + (np.eye(G.shape[1]) - pinv @ G) @ rng.standard_normal(G.shape[1]) * np.linalg.norm(d0)
    r = minimize(psi, d0, jac=jac, hess=hess, method="trust-exact", options={"gtol": 1e-12, "maxiter": 2000})
    return r.x


def eq8_optimality(rng: np.random.Generator, n: int, candidate: str = "pivrg") -> Check:
    """The direction G^T x of Eq. 8 minimises Eq. 4 over the ball: margin =
    (phi(d_direct) - phi(d_cand)) / phi(d_cand) with phi = :func:`inverse_utility` (>= 0 when the
    candidate is at least as good as scipy's direct minimiser). Random G (K in 2..6, P in K..20,
    condition number up to 1e2), omega from :func:`random_omega`.

    ``candidate``: "pivrg" (library ``pivrg`` after ``observe``, clipped), "eq8" (x from the solver),
    "unweighted" (omega ignored: FairGrad alpha = 2, a wrong candidate when omega != 1).
    Tolerance 1e3 eps: the solver's backward error 1e-10 costs O(1e-20) in the objective.
    Also records the largest 1 - cos between the candidate, the direct minimiser and the authors'
    least-squares solve, and the largest norm of d_direct outside the row space of G (relative).
    """
    m, cos_direct, cos_ls, off = np.empty(n), np.empty(n), np.empty(n), np.empty(n)
    for i in range(n):
        G = _draw_G(rng)
        K = G.shape[0]
        omega = random_omega(rng, K)
        if candidate == "pivrg":
            d = pivrg_with_omega(omega).aggregate(torch.from_numpy(G)).numpy()
        elif candidate == "eq8":
            d = G.T @ eq8_weights(G, omega)
        elif candidate == "unweighted":
            d = G.T @ eq8_weights(G, np.ones(K))
        else:
            raise ValueError(candidate)
        dd = direct_minimiser(G, omega, rng)
        fc = inverse_utility(G, omega, d)
        m[i] = (inverse_utility(G, omega, dd) - fc) / fc
        cos_direct[i] = 1 - d @ dd / np.linalg.norm(d) / np.linalg.norm(dd)
        dl = G.T @ eq8_least_squares(G, omega)
        cos_ls[i] = 1 - d @ dl / np.linalg.norm(d) / np.linalg.norm(dl)
        proj = np.linalg.pinv(G) @ (G @ dd)
        off[i] = np.linalg.norm(dd - proj) / np.linalg.norm(dd)
    return Check(f"Eq. 4 value of {candidate} <= direct minimiser's", m, 1e3 * EPS,
                 {"max 1-cos(candidate, direct)": float(cos_direct.max()),
                  "max 1-cos(candidate, authors' least_squares)": float(cos_ls.max()),
                  "max |d_direct off span(g_i)| / |d_direct|": float(off.max())})


def pivrg_with_omega(omega: np.ndarray, max_norm: float = 1.0):
    """The registered ``pivrg`` holding the performance weights ``omega`` (sum K), set through its
    public ``observe``: drops s = 10 log(omega) with tau_min = 10 and a bound >= max/min omega make
    tau = 10 and K softmax(s / tau) = omega exactly."""
    omega = np.asarray(omega, float)
    ratio = float(omega.max() / omega.min())
    agg = methods.make("pivrg", bound=max(2.0, ratio * (1 + 1e-6)), tau_min=10.0, max_norm=max_norm)
    agg.observe(Feedback(0, 1, drops=torch.from_numpy(10.0 * np.log(omega))))
    if not np.allclose(agg.omega.numpy(), omega, rtol=1e-12, atol=0):
        raise RuntimeError("could not set pivrg's omega")
    return agg


def eq7_stationarity(rng: np.random.Generator, n: int) -> Check:
    """KKT stationarity (Eq. 7) at d = G^T x: sum_i omega_i / (g_i^T d)^2 g_i is parallel to d with a
    positive factor (2 K lambda = 1 here). Margin = -|| sum_i omega_i g_i / u_i^2 - d || / ||d||,
    tolerance 1e3 (tol_solve + eps) times the condition number of G."""
    m, tol = np.empty(n), np.empty(n)
    for i in range(n):
        G = _draw_G(rng)
        omega = random_omega(rng, G.shape[0])
        x = eq8_weights(G, omega)
        d = G.T @ x
        u = G @ d
        lhs = G.T @ (omega / u**2)
        m[i] = -np.linalg.norm(lhs - d) / np.linalg.norm(d)
        tol[i] = 1e3 * (TOL_SOLVE + EPS) * np.linalg.cond(G)
    return Check("Eq. 7: sum_i omega_i g_i / (g_i^T d)^2 = d at d = G^T x", m, tol)


def convexity_segments(rng: np.random.Generator, n: int, outside: bool = False) -> Check:
    """Sec. 3.3: F(d) = (1/K) sum_i omega_i / g_i^T d is convex on the cone {G d > 0}.

    Per draw: two points a, b of the cone (utilities 10^U(-2, 2), plus a component outside the row
    space) and 20 points of the segment; margin = min_t (t F(a) + (1-t) F(b) - F(ta + (1-t)b)) /
    (t F(a) + (1-t) F(b)). Also the Hessian (2/K) G^T diag(omega / u^3) G at a, compared with a
    finite-difference one (relative error recorded) and its smallest eigenvalue (recorded).
    ``outside=True`` puts both end points where g_1^T d in [-1, -0.1] (the domain condition dropped):
    there 1/u is concave and the check must fail.
    """
    m, tol = np.empty(n), np.empty(n)
    fd_err, min_eig = 0.0, math.inf
    ts = np.linspace(0.05, 0.95, 19)
    for i in range(n):
        G = _draw_G(rng)
        K, P = G.shape
        omega = random_omega(rng, K)
        pinv = np.linalg.pinv(G)
        null = np.eye(P) - pinv @ G
        pts = []
        for _ in range(2):
            u = 10.0 ** rng.uniform(-2, 2, K)
            if outside:
                u[0] = -rng.uniform(0.1, 1.0)
                u[1:] = 10.0 ** rng.uniform(1, 2, K - 1)
            pts.append(pinv @ u + null @ rng.standard_normal(P))
        a, b = pts

        def F(d):
            return float(np.mean(omega / (G @ d)))

        chord = ts * F(a) + (1 - ts) * F(b)
        vals = np.array([F(t * a + (1 - t) * b) for t in ts])
        m[i] = np.min((chord - vals) / np.abs(chord))
        tol[i] = 1e3 * EPS * np.linalg.cond(G)
        if not outside:
            ua = G @ a
            H = 2.0 / K * (G.T * (omega / ua**3)) @ G
            h = 1e-6 * ua.min() / np.linalg.norm(G, axis=1).max()
            Hfd = np.empty((P, P))
            for j in range(P):
                e = np.zeros(P)
                e[j] = h
                Hfd[:, j] = (-G.T @ (omega / (G @ (a + e)) ** 2) + G.T @ (omega / (G @ (a - e)) ** 2)) / (2 * h * K)
            fd_err = max(fd_err, float(np.abs(H - Hfd).max() / np.abs(H).max()))
            ev = np.linalg.eigvalsh(H)
            min_eig = min(min_eig, float(ev[0] / ev[-1]))
    name = "F convex along segments in the cone" if not outside else "F convex along segments with g_1^T d < 0"
    return Check(name, m, tol, {"max rel. error Hessian vs finite differences": fd_err,
                                "min lambda_min/lambda_max of the Hessian": min_eig})


# --------------------------------------------------------------------------------------------------
# Properties 1-3, Proposition 1
# --------------------------------------------------------------------------------------------------
def properties_check(rng: np.random.Generator, n: int, bound: float | None = None,
                     tau_min: float | None = None) -> dict[str, Check]:
    """Properties 1-3 of omega = library ``performance_weights`` (Eq. 5 + the authors' tau rule) on
    adversarial drops (:func:`random_drops`, spreads 1e-3 .. 1e4, K in 2..40). bound ~ U(1.2, 3) and
    tau_min ~ 10^U(-1, 2.5) unless given.

    - "P1 order": s_i > s_j => omega_i > omega_j; margin = min over ordered pairs of the relative
      increase (omega_i - omega_j)/omega_j, only pairs with (s_i - s_j)/tau > 1e-6 judged;
    - "P1 monotone": raising one drop by 10^U(-2, 2) * spread, with the others fixed and tau recomputed,
      does not lower that task's weight; margin = relative increase (``info`` counts the draws where
      the weight stayed the same: the top task under the capped rule, when the others are tied);
    - "P2": -|sum(omega)/K - 1|; "P3": min(omega_min - 1/bound, bound - omega_max) / bound;
    tolerances 1e2 eps (softmax rounding) and 1e3 eps for P1.
    """
    out = {k: (np.empty(n), np.empty(n)) for k in ("P1 order", "P1 monotone", "P2", "P3")}
    flat = 0
    for i in range(n):
        K = int(rng.integers(2, 41))
        s = random_drops(rng, K)
        b = float(rng.uniform(1.2, 3.0)) if bound is None else bound
        tm = float(10.0 ** rng.uniform(-1, 2.5)) if tau_min is None else tau_min
        om, tau = performance_weights(s, b, tm)
        om = om.numpy()
        ds = (s[:, None] - s[None, :]) / tau
        judged = ds > 1e-6
        rel = (om[:, None] - om[None, :]) / om[None, :]
        out["P1 order"][0][i] = rel[judged].min() if judged.any() else math.inf
        out["P1 order"][1][i] = 1e3 * EPS
        j = int(rng.integers(K))
        s2 = s.copy()
        s2[j] += 10.0 ** rng.uniform(-2, 2) * max(np.ptp(s), 1e-3)
        om2 = performance_weights(s2, b, tm)[0].numpy()
        out["P1 monotone"][0][i] = (om2[j] - om[j]) / om[j]
        flat += int(abs(om2[j] - om[j]) <= 1e3 * EPS * om[j])
        out["P1 monotone"][1][i] = 1e3 * EPS
        out["P2"][0][i] = -abs(om.sum() / K - 1.0)
        out["P2"][1][i] = 1e2 * EPS
        out["P3"][0][i] = min(om.min() - 1.0 / b, b - om.max()) / b
        out["P3"][1][i] = 1e2 * EPS
    names = {"P1 order": "Property 1: s_i > s_j => omega_i > omega_j",
             "P1 monotone": "Property 1: raising s_j raises omega_j (tau rule included)",
             "P2": "Property 2: sum omega = K", "P3": "Property 3: omega in [1/bound, bound]"}
    res = {k: Check(names[k], *v) for k, v in out.items()}
    res["P1 monotone"].info["draws where omega_j did not change"] = flat
    return res


def _softmax_weights(s: np.ndarray, tau: float) -> np.ndarray:
    z = s / tau
    e = np.exp(z - z.max())
    return len(s) * e / e.sum()


def prop1_check(rng: np.random.Generator, n: int, tau_factor: tuple[float, float] = (1.0, 10.0)) -> Check:
    """Proposition 1 with a free temperature: for tau >= (max s - min s) / log(bnd) (tau = factor times
    that threshold, factor ~ U(tau_factor)), Eq. 5 gives omega in [1/bnd, bnd]. Drops: one task above
    the others (the case where omega_max is largest), K in 3..40, and the shapes of :func:`random_drops`.
    Margin = min(omega_min - 1/bnd, bnd - omega_max) / bnd; tolerance 1e2 eps. A factor < 1 drops the
    hypothesis."""
    m = np.empty(n)
    for i in range(n):
        K = int(rng.integers(3, 41))
        bnd = float(rng.uniform(1.2, 3.0))
        s = random_drops(rng, K) if rng.random() < 0.5 else np.r_[np.zeros(K - 1), 10.0 ** rng.uniform(-2, 3)]
        tau = rng.uniform(*tau_factor) * np.ptp(s) / math.log(bnd)
        om = _softmax_weights(s, tau)
        m[i] = min(om.min() - 1.0 / bnd, bnd - om.max()) / bnd
    lab = "" if tau_factor[0] >= 1.0 else f" (tau = {tau_factor[0]:g}-{tau_factor[1]:g} x threshold)"
    return Check("Prop. 1: tau >= spread/log s => omega in [1/s, s]" + lab, m, 1e2 * EPS)


def tau_rule_tightness(rng: np.random.Generator, n: int) -> dict[str, Check]:
    """What the authors' rule tau = max(spread / ln b, tau_min) gives exactly: max/min omega equals b
    when spread >= tau_min ln b and exp(spread / tau_min) < b otherwise (margin -|log ratio -
    expected|, tol 1e3 eps); and how close omega_max gets to b: recorded as the largest omega_max / b
    (it tends to 1 only as K -> infinity with one task above all others)."""
    m, tol, close = np.empty(n), np.empty(n), np.empty(n)
    for i in range(n):
        K = int(rng.integers(2, 41))
        s = random_drops(rng, K)
        b = float(rng.uniform(1.2, 3.0))
        tm = float(10.0 ** rng.uniform(-1, 2.5))
        om = performance_weights(s, b, tm)[0].numpy()
        spread = np.ptp(s)
        expected = math.log(b) if spread >= tm * math.log(b) else spread / tm
        m[i] = -abs(math.log(om.max() / om.min()) - expected)
        tol[i] = 1e3 * EPS * max(1.0, abs(s).max() / tm)
        close[i] = om.max() / b
    return Check("authors' tau rule: max/min omega = min(b, exp(spread/tau_min))", m, tol,
                 {"max omega_max / b": float(close.max())})


# --------------------------------------------------------------------------------------------------
# Proposition 2
# --------------------------------------------------------------------------------------------------
def prop2_error(dm: np.ndarray, tau: float) -> float:
    """Relative error of Prop. 2: (tau^2/K omega^T omega - tau^2) / Var[dm] - 1 (Var with 1/K, as in
    the proof), omega from Eq. 5 at temperature tau."""
    om = _softmax_weights(np.asarray(dm, float), tau)
    K = len(dm)
    return float(tau**2 * (om @ om / K - 1.0) / np.var(dm) - 1.0)


_FAMILIES = ("one above", "one below", "two clusters", "Gaussian", "uniform", "log-normal")


def _family(rng: np.random.Generator, name: str, K: int) -> np.ndarray:
    if name == "one above":
        return np.r_[np.zeros(K - 1), 1.0]
    if name == "one below":
        return np.r_[np.zeros(K - 1), -1.0]
    if name == "two clusters":
        return np.r_[np.zeros(K // 2), np.ones(K - K // 2)]
    if name == "Gaussian":
        return rng.standard_normal(K)
    if name == "uniform":
        return rng.uniform(-1, 1, K)
    return rng.lognormal(0.0, 1.0, K)


def prop2_curve(rng: np.random.Generator, rhos: np.ndarray, Ks=(2, 3, 5, 10, 40),
                reps: int = 20) -> dict[str, np.ndarray]:
    """Largest |relative error| of Prop. 2 per shape family over K in ``Ks`` and ``reps`` draws, as a
    function of rho = spread(dm)/tau; plus the first-order prediction m3/(tau m2) for the worst family."""
    out = {}
    for name in _FAMILIES:
        worst = np.zeros(len(rhos))
        signed = np.zeros(len(rhos))
        for j, rho in enumerate(rhos):
            for K in Ks:
                for _ in range(reps if name in ("Gaussian", "uniform", "log-normal") else 1):
                    z = _family(rng, name, K)
                    if np.ptp(z) == 0:
                        continue
                    e = prop2_error(z, np.ptp(z) / rho)
                    if abs(e) > worst[j]:
                        worst[j], signed[j] = abs(e), e
        out[name] = signed
    return out


def prop2_threshold(curve: dict[str, np.ndarray], rhos: np.ndarray, level: float = 0.1) -> float:
    """Largest rho of the grid up to which every family's |error| stays <= level."""
    worst = np.max(np.abs(np.stack(list(curve.values()))), axis=0)
    bad = np.flatnonzero(worst > level)
    return float(rhos[bad[0] - 1]) if bad.size and bad[0] > 0 else (float(rhos[-1]) if not bad.size else 0.0)


def prop2_check(rng: np.random.Generator, n: int, rho_range: tuple[float, float], level: float = 0.1) -> Check:
    """|relative error of Prop. 2| <= level on fresh draws (shapes of :func:`random_drops`, K in 2..40)
    with rho = spread/tau ~ U(rho_range). Margin = level - |error|."""
    m = np.empty(n)
    for i in range(n):
        K = int(rng.integers(2, 41))
        s = random_drops(rng, K, (-2.0, 3.0))
        if np.ptp(s) == 0:
            s[0] += 1.0
        rho = rng.uniform(*rho_range)
        m[i] = level - abs(prop2_error(s, np.ptp(s) / rho))
    return Check(f"Prop. 2 within {level:.0%} for spread/tau in [{rho_range[0]:.3g}, {rho_range[1]:.3g}]", m)


def prop2_scale_invariance(rng: np.random.Generator, n: int, bound: float = 2.0, tau_min: float = 10.0) -> Check:
    """'Var[dm] is proportional to omega^T omega': with the authors' tau rule, once spread >= tau_min ln b,
    tau = spread / ln b and omega depends on the shape of dm only. Draws dm in that regime and c dm with
    c ~ 10^U(0.3, 2): the proportionality predicts omega^T omega to grow like Var, i.e. by c^2.
    Margin = (omega'^T omega' / omega^T omega) / c^2 - (1 - 1e-3): fails whenever omega^T omega does not
    follow the variance."""
    m = np.empty(n)
    for i in range(n):
        K = int(rng.integers(2, 41))
        s = random_drops(rng, K, (math.log10(tau_min * math.log(bound)) + 0.1, 3.0))
        c = 10.0 ** rng.uniform(0.3, 2.0)
        o1 = performance_weights(s, bound, tau_min)[0].numpy()
        o2 = performance_weights(c * s, bound, tau_min)[0].numpy()
        m[i] = (o2 @ o2) / (o1 @ o1) / c**2 - (1 - 1e-3)
    return Check("omega^T omega scales like Var[dm] (authors' tau rule, spread >= tau_min ln b)", m)


# --------------------------------------------------------------------------------------------------
# Theorem 1
# --------------------------------------------------------------------------------------------------
def _omega_from_losses(losses: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """omega_t for the theorem runs: Eq. 5 of the drops 100 (l_i(theta_t) - l_i*) / (l_i(theta_0) - l_i*)
    (single-task optimum l_i* = 0 for the quadratics) with bound 2, tau_min 10. The proof allows any
    positive omega_t."""
    return performance_weights(100.0 * losses / ref, 2.0, 10.0)[0].numpy()


def theorem1_run(prob: quadratic.QuadraticTasks, theta0: np.ndarray, T: int, L: float | None = None,
                 L_scale: float = 1.0, omega_fn=None) -> dict[str, np.ndarray]:
    """The iteration of Theorem 1: alpha_t from Eq. 8, d_t = G_t^T alpha_t, step
    eta_t = sum_i sqrt(omega_i/alpha_i) / (K L' sum_i sqrt(omega_i alpha_i)) with L' = L_scale * L and
    L = max_i lambda_max(A_i) (each task L-smooth, Assumption 2). Stops when the solver certifies a
    Pareto-stationary G (Eq. 8 has no positive root; ``stationary``), when ||d||^2 = x^T M x is lost to
    rounding (``stalled``), or after T steps.

    Records per step: averaged loss, the proof's guaranteed decrease L' eta^2 ||d||^2 / 2, lambda_min and
    lambda_max of M, sum(u), sum(alpha), ||d||^2 and the squared min-norm of the convex hull of the g_i
    (MGDA's solver)."""
    L = max(float(np.linalg.eigvalsh(A)[-1]) for A in prob.A) if L is None else L
    Lp = L_scale * L
    th = np.asarray(theta0, float).copy()
    ref = prob.losses(th)
    omega_fn = omega_fn or (lambda l: _omega_from_losses(l, ref))
    rec: dict[str, list] = {k: [] for k in ("loss", "bound", "lam_min", "lam_max", "sum_u", "sum_a", "d2",
                                            "minnorm2", "eta")}
    x = None
    stationary = stalled = False
    for _ in range(T + 1):
        G = prob.jacobian(th)
        M = G @ G.T
        ev = np.linalg.eigvalsh(M)
        lam = min_norm_weights(M)
        rec["loss"].append(float(prob.losses(th).mean()))
        rec["lam_min"].append(ev[0])
        rec["lam_max"].append(ev[-1])
        rec["minnorm2"].append(float(lam @ M @ lam))
        if len(rec["loss"]) == T + 1:
            break
        omega = omega_fn(prob.losses(th))
        sol = solve_fair_weights(M, 2.0, omega, x0=x, who="theorem1")
        if sol.stationary:
            stationary = True
            break
        x = sol.x
        u = M @ x
        d = G.T @ x
        d2 = float(x @ u)
        eta = np.float64(np.sum(np.sqrt(omega / x)) / (prob.K * Lp * np.sum(np.sqrt(omega * x))))
        if not (d2 > 0 and np.isfinite(eta) and eta > 0):
            stalled = True  # |d|^2 = x^T M x lost to rounding: G is numerically Pareto stationary
            break
        with np.errstate(over="ignore", invalid="ignore"):
            rec["bound"].append(0.5 * Lp * eta**2 * d2)
        rec["sum_u"].append(float(u.sum()))
        rec["sum_a"].append(float(x.sum()))
        rec["d2"].append(d2)
        rec["eta"].append(eta)
        with np.errstate(over="ignore", invalid="ignore"):
            th = th - eta * d
        if not np.all(np.isfinite(th)) or not np.isfinite(prob.losses(th)).all():
            rec["loss"].append(math.inf)  # diverged (the step was too long)
            break
    out = {k: np.asarray(v) for k, v in rec.items()}
    out["stationary"] = stationary
    out["stalled"] = stalled
    out["theta"] = th
    out["K"] = prob.K
    return out


def theorem1_draws(rng: np.random.Generator, n: int, T: int = 300, L_scale: float = 1.0) -> dict[str, Any]:
    """Theorem 1 on ``n`` random convex quadratic problems (library ``random_tasks``: K in 2..4,
    P in K..10, condition number 10, different minima; theta_0 = mean of the minima + N(0, I)).

    Checks, one margin per run:
    - "descent": worst step of (L_t - L_t+1) / (L' eta^2 ||d||^2 / 2) - 1 (the proof's inequality);
      tolerance: loss rounding 64 eps |L| relative to the bound (steps with a bound below 1e3 times
      the rounding are not judged). A run with no judged step gets margin +inf and is counted in
      ``info["unjudged runs"]``; if *no* run has a judged step nothing was checked and a ValueError
      is raised;
    - "monotone": worst step of (L_t - L_t+1) / |L_t| (>= 0: the averaged loss never increases);
    - "sum": sum_t of the bound <= L_0 - L_T (relative margin); it is the per-step inequality
      summed (L_0 - L_T telescopes), so its tolerance is the per-step rounding allowances
      64 eps (|L_t| + |L_t+1|) summed over the steps, relative to L_0 - L_T;
    - "stationary": log10(1e-10 / (min-norm^2 / trace(M) K)) at the last iterate (the limit point is
      Pareto stationary to relative accuracy 1e-10 within T steps);
    - "lam_min -> 0": log10(1e-10 / (lambda_min / lambda_max)) at the last iterate.
    """
    res = {k: (np.empty(n), np.empty(n)) for k in ("descent", "monotone", "sum", "stationary", "lam_min")}
    steps = np.empty(n, int)
    unjudged = 0
    for i in range(n):
        K = int(rng.integers(2, 5))
        P = int(rng.integers(K, 11))
        prob = quadratic.random_tasks(K, P, rng)
        th0 = prob.c.mean(0) + rng.standard_normal(P)
        r = theorem1_run(prob, th0, T, L_scale=L_scale)
        loss, b = r["loss"], r["bound"]
        nstep = len(b)
        steps[i] = nstep
        dec = loss[:-1][:nstep] - loss[1:nstep + 1]
        rnd = 64 * EPS * (np.abs(loss[:nstep]) + np.abs(loss[1:nstep + 1]))
        judged = b > 1e3 * rnd
        q = np.where(judged, dec / np.where(judged, b, 1.0) - 1.0, np.inf)
        j = int(np.argmin(q)) if nstep else 0
        has = bool(nstep and judged.any())
        unjudged += int(not has)
        res["descent"][0][i] = q[j] if has else math.inf
        res["descent"][1][i] = rnd[j] / b[j] if has else 0.0
        mono = dec / np.maximum(np.abs(loss[:nstep]), 1e-300)
        res["monotone"][0][i] = mono.min() if nstep else math.inf
        res["monotone"][1][i] = 64 * EPS
        drop = loss[0] - loss[nstep]
        res["sum"][0][i] = (drop - b.sum()) / drop if nstep else 0.0
        res["sum"][1][i] = rnd.sum() / abs(drop) if nstep else 0.0   # the per-step allowances, summed
        mn = r["minnorm2"][-1] / (r["lam_max"][-1] + 1e-300)
        res["stationary"][0][i] = math.log10(1e-10 / max(mn, 1e-300))
        res["stationary"][1][i] = 0.0
        res["lam_min"][0][i] = math.log10(1e-10 / max(r["lam_min"][-1] / r["lam_max"][-1], 1e-300))
        res["lam_min"][1][i] = 0.0
    lab = "" if L_scale == 1.0 else f" (L' = {L_scale:g} L)"
    names = {"descent": "Thm 1 proof: L_t - L_t+1 >= L eta^2 |d|^2 / 2" + lab,
             "monotone": "Thm 1: averaged loss non-increasing" + lab,
             "sum": "Thm 1 proof: sum of guaranteed decreases <= L_0 - L_T" + lab,
             "stationary": f"Pareto stationary (min-norm^2 <= 1e-10 lam_max) within {T} steps" + lab,
             "lam_min": f"lambda_min(M)/lambda_max(M) <= 1e-10 within {T} steps" + lab}
    if unjudged == n:
        raise ValueError("theorem1_draws: no run has a step whose guaranteed decrease exceeds the loss rounding, "
                         "so the descent inequality was never checked; use more steps (T) or more runs")
    out: dict[str, Any] = {k: Check(names[k], *v, unit="runs") for k, v in res.items()}
    out["descent"].info["unjudged runs"] = unjudged
    out["steps"] = steps
    return out


def eq10_eq11_draws(rng: np.random.Generator, n: int) -> dict[str, Check]:
    """The inequalities of the proof at one G (random, omega random, alpha from Eq. 8), u = M alpha:

    - "Eq. 10": sum(u)/sum(alpha) >= lambda_min(M)/sqrt(K);
    - "Eq. 11": sum(u)/sum(alpha) <= sum(u)^2 / ||d||^2;
    - "Eq. 9 as printed": the paper writes sum_i u_i^2 where the step size gives (sum_i u_i)^2; margin
      = 1 - sum u_i^2 / (sum u_i)^2 (>= 0: the printed sum is smaller, so the printed '=' is a '<=');
    - "hull": min-norm^2 of conv{g_i} <= sum(u)^2 / ||d||^2 (our repair of the last step: the quantity
      that Eq. 9 sends to 0 bounds the distance to Pareto stationarity, not only lambda_min).
    Margins are relative differences; tolerance 1e3 (tol_solve + eps) cond(G)^2."""
    keys = ("Eq. 10", "Eq. 11", "Eq. 9 as printed", "hull")
    res = {k: (np.empty(n), np.empty(n)) for k in keys}
    for i in range(n):
        G = _draw_G(rng, log10_cond=3.0)
        K = G.shape[0]
        M = G @ G.T
        omega = random_omega(rng, K)
        a = eq8_weights(G, omega)
        u = M @ a
        d2 = float(a @ u)
        ratio = u.sum() / a.sum()
        top = u.sum() ** 2 / d2
        lam = min_norm_weights(M)
        mn = float(lam @ M @ lam)
        tol = 1e3 * (TOL_SOLVE + EPS) * np.linalg.cond(G) ** 2
        res["Eq. 10"][0][i] = (ratio - np.linalg.eigvalsh(M)[0] / math.sqrt(K)) / ratio
        res["Eq. 11"][0][i] = (top - ratio) / top
        res["Eq. 9 as printed"][0][i] = 1.0 - (u @ u) / u.sum() ** 2
        res["hull"][0][i] = (top - mn) / top
        for k in keys:
            res[k][1][i] = tol
    names = {"Eq. 10": "Eq. 10: sum u / sum alpha >= lambda_min(M)/sqrt(K)",
             "Eq. 11": "Eq. 11: sum u / sum alpha <= (sum u)^2 / |d|^2",
             "Eq. 9 as printed": "Eq. 9: sum u_i^2 <= (sum u_i)^2 (printed '=')",
             "hull": "min-norm^2 of conv{g_i} <= (sum u)^2 / |d|^2"}
    return {k: Check(names[k], *v) for k, v in res.items()}


def dependence_vs_stationarity(rng: np.random.Generator, n: int) -> Check:
    """The proof's last step: 'lambda_min(M) = 0, so the gradients are linearly dependent, so theta* is
    Pareto stationary'. Draws G whose rows are linearly dependent (one row = a positive combination of
    others plus, with probability 1/2, a random sign pattern) and tests 'min-norm of conv{g_i} = 0':
    margin = -min-norm^2 / max_i |g_i|^2 (tol 1e3 eps). Linear dependence does not imply Pareto
    stationarity, so this fails whenever the dependency has coefficients of one sign."""
    m = np.empty(n)
    for i in range(n):
        K = int(rng.integers(2, 6))
        P = int(rng.integers(K, 21))
        B = rng.standard_normal((K - 1, P))
        c = rng.uniform(0.1, 2.0, K - 1)
        if rng.random() < 0.5:
            c = c * rng.choice([-1.0, 1.0], K - 1)
        G = np.vstack([B, c @ B])
        M = G @ G.T
        lam = min_norm_weights(M)
        m[i] = -float(lam @ M @ lam) / np.diag(M).max()
    return Check("linearly dependent g_i => Pareto stationary", m, 1e3 * EPS)


def unbounded_run(T: int = 200) -> dict[str, Any]:
    """Two 1-smooth tasks whose average is unbounded below (Assumption 2 holds, the proof's
    'L(theta_0) - L(theta_T) bounded' and compact sublevel set do not):
    l_1 = -theta_1 + theta_2^2 / 2, l_2 = -theta_1 + (theta_2 - 1)^2 / 2. det(M) = 1 everywhere, so
    lambda_min(M) stays away from 0 and no point is Pareto stationary."""
    A = np.stack([np.diag([0.0, 1.0])] * 2)

    class _Lin:
        K, P = 2, 2

        def __init__(self):
            self.A = A

        def losses(self, th):
            return np.array([-th[0] + 0.5 * th[1] ** 2, -th[0] + 0.5 * (th[1] - 1.0) ** 2])

        def jacobian(self, th):
            return np.array([[-1.0, th[1]], [-1.0, th[1] - 1.0]])

    prob = _Lin()
    r = theorem1_run(prob, np.array([0.0, 0.3]), T, L=1.0,
                     omega_fn=lambda l: np.ones(2))
    ratio = r["lam_min"] / r["lam_max"]
    return {"run": r, "check": Check(f"lambda_min(M)/lambda_max(M) <= 1e-10 within {T} steps (unbounded losses)",
                                     [math.log10(1e-10 / ratio[-1])], unit="runs"),
            "final loss": r["loss"][-1]}


# --------------------------------------------------------------------------------------------------
# Appendix C: the alpha-fair family
# --------------------------------------------------------------------------------------------------
def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def constrained_ls(G: np.ndarray) -> np.ndarray:
    """argmax of (sum_i g_i)^T d over ||d|| <= 1 and G d >= 0: the projection of sum_i g_i onto the cone
    {d: G d >= 0} (Moreau: c + G^T mu with mu = NNLS of G^T mu ~ -c), normalised."""
    c = G.sum(0)
    mu, _ = nnls(G.T, -c)
    p = c + G.T @ mu
    return p / np.linalg.norm(p)


def _dir(name: str, G: np.ndarray, **hp) -> np.ndarray:
    return methods.make(name, **hp).aggregate(torch.from_numpy(G)).numpy()


def fair_family(rng: np.random.Generator, n: int) -> dict[str, Check]:
    """Appendix C on the same random G (K in 2..5, P in K..20), with the registered methods:

    - "alpha = 1 is Nash-MTL": 1 - cos(fairgrad alpha=1, nash_mtl) <= tol;
    - "alpha = 2 is PIVRG with omega = 1": 1 - cos(fairgrad alpha=2, pivrg) <= tol;
    - "PIVRG = weighted alpha = 2": pivrg with omega vs the maximiser of -sum omega_i / u_i (Eq. 8);
    - "alpha = 0 is LS": the library's fairgrad(alpha=0) vs ls (returned as G.sum by construction);
    - "omega != 1 changes the direction": 1 - cos(pivrg(omega), fairgrad alpha=2) > 1e-6 (a detector).
    Margins -(1 - cos), tolerance 1e3 (tol_solve + eps) cond(G)^2 (the solvers work on M)."""
    keys = ("alpha=1 Nash", "alpha=2 PIVRG omega=1", "alpha=0 LS", "PIVRG omega")
    res = {k: (np.empty(n), np.empty(n)) for k in keys}
    for i in range(n):
        G = _draw_G(rng, (2, 5))
        K = G.shape[0]
        tol = 1e3 * (TOL_SOLVE + EPS) * np.linalg.cond(G) ** 2
        f1 = _dir("fairgrad", G, alpha=1.0, max_norm=0.0)
        res["alpha=1 Nash"][0][i] = -(1 - _cos(f1, _dir("nash_mtl", G, max_norm=0.0)))
        f2 = _dir("fairgrad", G, alpha=2.0, max_norm=0.0)
        res["alpha=2 PIVRG omega=1"][0][i] = -(1 - _cos(f2, _dir("pivrg", G, max_norm=0.0)))
        res["alpha=0 LS"][0][i] = -(1 - _cos(_dir("fairgrad", G, alpha=0.0, max_norm=0.0), _dir("ls", G)))
        omega = random_omega(rng, K)
        dp = pivrg_with_omega(omega, max_norm=0.0).aggregate(torch.from_numpy(G)).numpy()
        res["PIVRG omega"][0][i] = -(1 - _cos(dp, f2))
        for k in keys:
            res[k][1][i] = tol
    names = {"alpha=1 Nash": "fairgrad(alpha=1) = nash_mtl",
             "alpha=2 PIVRG omega=1": "fairgrad(alpha=2) = pivrg with omega = 1",
             "alpha=0 LS": "fairgrad(alpha=0) = ls",
             "PIVRG omega": "pivrg(omega != 1) = fairgrad(alpha=2)"}
    return {k: Check(names[k], *v) for k, v in res.items()}


def fair_limits(rng: np.random.Generator, n: int, small=(1.0, 0.5, 0.25, 0.1, 0.05),
                large=(2.0, 5.0, 10.0, 20.0, 50.0, 100.0)) -> dict[str, Any]:
    """The two limits of Appendix C, per random G:

    - "MGDA limit": 1 - cos(fairgrad alpha, mgda) is non-increasing over ``large`` (margin: minus the
      largest increase between consecutive alphas, relative to the first value);
    - "constrained LS limit": 1 - cos(fairgrad alpha, d0) is non-increasing as alpha decreases over
      ``small``, d0 = :func:`constrained_ls` (the maximiser of sum_i u_i on the ball with every u_i >= 0);
    - "LS limit": at the smallest alpha, fairgrad is at least as close to the plain LS direction
      G.sum(0) as to d0 (margin (1 - cos to d0) - (1 - cos to LS)): true exactly where d0 = LS, i.e.
      where LS gives no task a negative utility; ``conflict`` marks the other draws;
    - "MGDA limit value": the limit is the MGDA direction itself, not a nearby one. FairGrad solves
      (M x)_i = x_i^(-1/alpha): its utilities agree to a factor (x_max/x_min)^(1/alpha) = 1 + O(1/alpha),
      so its angle to the equal-utility direction is O(1/alpha) and 1 - cos = O(1/alpha^2). Checked
      as: between the two largest alphas 1 - cos shrinks at least like 1/alpha,
      c(a_n) <= c(a_n-1) a_n-1 / a_n (a positive limit value, a plateau, fails this);
    - "LS limit value" / "LS limit value, conflicting draws": likewise as alpha -> 0, x_i = u_i^(-alpha)
      = 1 + O(alpha) while the utilities stay bounded away from 0, so 1 - cos(fairgrad, LS) = O(alpha^2):
      between the two smallest alphas it shrinks at least like alpha. Checked on the draws where LS
      conflicts with no task (expected to hold) and, as the counter-case, on the others (where the limit
      is d0, not LS, and the distance to LS plateaus).
    Tolerance 1e-8 on 1 - cos (the solvers' accuracy).
    Returns the checks and the curves."""
    cm, cl, c0 = np.empty((n, len(large))), np.empty((n, len(small))), np.empty((n, len(small)))
    conflict = np.empty(n, bool)
    for i in range(n):
        G = _draw_G(rng, (2, 5))
        dm, dl, d0 = _dir("mgda", G), G.sum(0), constrained_ls(G)
        conflict[i] = bool(np.any(G @ dl < 0))
        for j, a in enumerate(large):
            cm[i, j] = 1 - _cos(_dir("fairgrad", G, alpha=a, max_norm=0.0), dm)
        for j, a in enumerate(small):
            f = _dir("fairgrad", G, alpha=a, max_norm=0.0)
            cl[i, j] = 1 - _cos(f, dl)
            c0[i, j] = 1 - _cos(f, d0)
    tol_cos = 1e-8  # the solvers' accuracy in 1 - cos (backward error 1e-10, squared condition number <= 1e4)
    norm_m = np.maximum(cm[:, 0], 1e-300)
    mono = Check("alpha -> inf: 1 - cos(fairgrad alpha, mgda) non-increasing in alpha",
                 -np.max(np.diff(cm, axis=1), axis=1) / norm_m, tol_cos / norm_m)
    norm_0 = np.maximum(c0[:, 0], 1e-300)
    zero = Check("alpha -> 0: 1 - cos(fairgrad alpha, constrained LS) non-increasing as alpha decreases",
                 -np.max(np.diff(c0, axis=1), axis=1) / norm_0, tol_cos / norm_0)
    ls_lim = Check(f"alpha -> 0: fairgrad(alpha={small[-1]:g}) as close to ls as to constrained LS",
                   c0[:, -1] - cl[:, -1], tol_cos)
    pred_m = cm[:, -2] * large[-2] / large[-1]
    scale_m = np.maximum(pred_m, tol_cos)
    val_m = Check(f"alpha -> inf: 1 - cos(fairgrad, mgda) -> 0 (shrinks like 1/alpha or faster, alpha {large[-2]:g} -> {large[-1]:g})",
                  (pred_m - cm[:, -1]) / scale_m, tol_cos / scale_m)
    pred_l = cl[:, -2] * small[-1] / small[-2]
    scale_l = np.maximum(pred_l, tol_cos)
    marg_l, tol_l = (pred_l - cl[:, -1]) / scale_l, tol_cos / scale_l
    lab = f"(shrinks like alpha or faster, alpha {small[-2]:g} -> {small[-1]:g})"
    val_l = Check(f"alpha -> 0: 1 - cos(fairgrad, ls) -> 0 where LS conflicts with no task {lab}",
                  marg_l[~conflict], tol_l[~conflict])
    val_lc = Check(f"alpha -> 0: 1 - cos(fairgrad, ls) -> 0 where LS conflicts {lab}", marg_l[conflict], tol_l[conflict])
    return {"MGDA limit": mono, "constrained LS limit": zero, "LS limit": ls_lim,
            "MGDA limit value": val_m, "LS limit value": val_l, "LS limit value, conflicting draws": val_lc,
            "mgda_curve": cm, "ls_curve": cl, "d0_curve": c0, "conflict": conflict,
            "large": np.array(large), "small": np.array(small)}


# --------------------------------------------------------------------------------------------------
# the toy problem: what PIVRG is fed
# --------------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def toy_single_task_optima() -> np.ndarray:
    """(min f_1, min f_2) of the toy problem: best point of a 401 x 401 grid on [-10, 10]^2 refined by
    L-BFGS-B (the single-task baselines of the toy's performance drops)."""
    g = np.linspace(-10.0, 10.0, 401)
    X = np.stack(np.meshgrid(g, g), -1).reshape(-1, 2)
    F, _ = toy.losses_and_jacobian_np(X)
    out = []
    for i in range(2):
        x0 = X[np.argmin(F[:, i])]

        def fun(z, i=i):
            f, J = toy.losses_and_jacobian_np(z[None])
            return float(f[0, i]), J[0, i]

        r = minimize(fun, x0, jac=True, method="L-BFGS-B", options={"gtol": 1e-12, "ftol": 1e-15})
        out.append(min(r.fun, float(F[:, i].min())))
    return np.array(out)


def toy_drops(f: np.ndarray) -> np.ndarray:
    """Per-task performance drops (percent, positive = worse) of toy losses f (..., 2): Eq. 3 with the
    single-task optimum as baseline, 100 (f_i - f_i*) / |f_i*| (the toy's optima are negative, so
    |f_i*| keeps 'positive = worse')."""
    fs = toy_single_task_optima()
    return 100.0 * (np.asarray(f) - fs) / np.abs(fs)


class ToyPerformanceFeed(Method):
    """PIVRG on the toy problem: every ``refresh_every`` steps (the toy's 'epoch') the current task
    losses are turned into drops (:func:`toy_drops`) and given to the wrapped ``pivrg`` through
    ``observe(Feedback(drops=...))``; the step itself is pivrg's. Works with ``train_toy(..., fast=False)``;
    :func:`train_toy_pivrg` is the same on the fast numpy path."""

    name = "pivrg"

    def __init__(self, refresh_every: int = 100, **pivrg_hp: Any):
        self.refresh_every = int(refresh_every)
        self.pivrg_hp = dict(pivrg_hp)
        self.inner = methods.make("pivrg", **pivrg_hp)
        self.reset()

    def reset(self) -> None:
        self.inner.reset()
        self._t = 0

    def step(self, ctx: StepContext) -> StepResult:
        if self._t % self.refresh_every == 0:
            with torch.no_grad():
                f = ctx.forward().losses.detach().cpu().double().numpy()
            self.inner.observe(Feedback(self._t // self.refresh_every, 0, drops=torch.from_numpy(toy_drops(f))))
        self._t += 1
        return self.inner.step(ctx)


def train_toy_pivrg(iterations: int, lr: float = 1e-3, starts=None, refresh_every: int = 100,
                    **pivrg_hp: Any):
    """The toy runs of :func:`mtl_src.train.train_toy` (numpy Adam, torch defaults, closed-form
    gradients) for the registered ``pivrg`` fed with toy drops every ``refresh_every`` steps (see
    :class:`ToyPerformanceFeed`; the drops of step t are those of the iterate before step t).
    Returns a :class:`~mtl_src.train.ToyRun` named "pivrg"; ``omega`` history in ``hyperparameters``."""
    from ..train import ToyRun

    from ..train import _train_toy_aggregator

    omegas = []

    def feed(it: int, f: np.ndarray, aggs: list) -> None:
        if (it - 1) % refresh_every == 0:
            dr = toy_drops(f)
            for s, agg in enumerate(aggs):
                agg.observe(Feedback((it - 1) // refresh_every, 0, drops=torch.from_numpy(dr[s])))
            omegas.append(np.stack([agg.omega.numpy() for agg in aggs]))

    x0 = np.asarray(toy.START_POINTS if starts is None else starts, float)
    xs, fs = _train_toy_aggregator(methods.make("pivrg", **pivrg_hp), x0, iterations, lr, 1, before_step=feed)
    hp = {"refresh_every": refresh_every, **pivrg_hp, "omega_history": np.array(omegas)}
    return ToyRun("pivrg", xs, fs, hp)


def prop2_on_table(key: str, bound: float, tau_min: float):
    """Prop. 2 on a printed table of :mod:`mtl_src.paper_tables` (its metric rows): per method, the
    per-task scores s_i (mean of the per-metric drops of the task, as the authors' code feeds PIVRG),
    tau of the authors' rule, rho = spread/tau, Var[s_i] (ddof 0) and the Prop. 2 value
    tau^2 (omega^T omega / K - 1), their relative difference, and the variance over the metrics that
    Tables 9-11 print."""
    import pandas as pd

    from .. import metrics, paper_tables

    t = paper_tables.TABLES[key]
    V = t.frame()[list(t.metrics)].dropna()
    rows = []
    for m, vals in V.iterrows():
        s = metrics.per_task_drops(vals.to_numpy(float), t.baseline, t.higher_is_better, t.tasks)
        om, tau = performance_weights(s, bound, tau_min)
        om = om.numpy()
        K = len(s)
        approx = tau**2 * (om @ om / K - 1.0)
        var = float(np.var(s))
        rows.append({"method": m, "scores s_i": np.round(s, 2).tolist(), "tau": tau, "spread/tau": np.ptp(s) / tau,
                     "Var[s_i]": var, "tau^2(w'w/K - 1)": approx, "rel. error": approx / var - 1.0,
                     "Var over metrics": float(metrics.var_delta_m(vals.to_numpy(float), t.baseline,
                                                                   t.higher_is_better))})
    return pd.DataFrame(rows).set_index("method")
