"""Each method: a property that characterises it, agreement with torchjd, and numerical edge cases."""

import math
import warnings

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mtl_src import methods
from mtl_src.linalg import procrustes, singular_values

from conftest import random_G

AGGREGATORS = [n for n in methods.available() if isinstance(methods.make(n), methods.Aggregator)]


# ---------------------------------------------------------------- registry
def test_registry_lists_the_first_methods():
    assert {"ls", "mgda", "pcgrad", "cagrad", "aligned_mtl", "aligned_mtl_ub"} <= set(methods.available())


def test_unknown_method_names_the_fix():
    with pytest.raises(ValueError, match=r"unknown method 'mgdaa'.*Did you mean 'mgda'.*available\(\)"):
        methods.make("mgdaa")


def test_unknown_hyperparameter_lists_the_valid_ones():
    with pytest.raises(TypeError, match=r"'cagrad' has no hyperparameter 'alpha'; it takes: c, rescale"):
        methods.make("cagrad", alpha=0.5)


def test_invalid_hyperparameter_values():
    with pytest.raises(ValueError, match="c must be >= 0"):
        methods.make("cagrad", c=-1)
    with pytest.raises(ValueError, match="preference w has 2 entries but there are 3 tasks"):
        methods.make("aligned_mtl", w=[1, 1]).aggregate(torch.randn(3, 4))


# ---------------------------------------------------------------- defining properties
def test_ls_is_the_sum_and_the_weighted_sum(rng):
    G = random_G(rng, 4, 9)
    torch.testing.assert_close(methods.make("ls")(G), G.sum(0))
    w = [0.5, 1.0, 2.0, 0.0]
    torch.testing.assert_close(methods.make("ls", w=w)(G), torch.tensor(w, dtype=G.dtype) @ G)


@pytest.mark.parametrize("K,P", [(2, 5), (3, 20), (5, 5), (4, 3)])
def test_aligned_system_has_equal_singular_values(rng, K, P):
    """Def. 2 / Eq. 4: d = sigma_min * Q^T w with Q = V U^T, and the aligned system has unit dominance."""
    for _ in range(20):
        G = random_G(rng, K, P) * torch.tensor(rng.uniform(0.01, 100, (K, 1)))
        Q, smin = procrustes(G)
        s = singular_values(smin * Q)
        kept = s[s > 1e-9 * s[0]]
        torch.testing.assert_close(kept, torch.full_like(kept, smin), rtol=1e-9, atol=0)
        w = torch.tensor(rng.uniform(0.1, 2.0, K))
        d = methods.make("aligned_mtl", w=w.tolist())(G)
        torch.testing.assert_close(d, smin * Q.T @ w, rtol=1e-8, atol=1e-10)


def test_aligned_direction_of_rank_deficient_G_uses_kept_components(rng):
    g = random_G(rng, 2, 6)
    G = torch.cat([g, g[:1]])
    Q, smin = procrustes(G)
    torch.testing.assert_close(methods.make("aligned_mtl")(G), smin * Q.T @ torch.ones(3, dtype=G.dtype))


@pytest.mark.parametrize("K", [2, 3, 5, 11])
def test_mgda_is_the_min_norm_point_of_the_hull(rng, K):
    for _ in range(20):
        G = random_G(rng, K, int(rng.integers(2, 15)))
        m = methods.make("mgda")
        d = m(G)
        lam = m.last_weights / K
        assert bool((lam >= 0).all()) and math.isclose(float(lam.sum()), 1.0, rel_tol=1e-12)
        torch.testing.assert_close(d, K * (lam @ G))
        samples = torch.tensor(rng.dirichlet(np.ones(K), 2000))
        hull_norms = (samples @ G).norm(dim=1)
        assert float((d / K).norm()) <= float(hull_norms.min()) + 1e-7
        # optimality (KKT): <g_i, d> >= ||d||^2 / K for every task
        assert bool((G @ d >= (d @ d) / K - 1e-7 * G.norm() ** 2).all())


def test_mgda_returns_zero_at_a_pareto_stationary_point(rng):
    g = random_G(rng, 1, 6)
    G = torch.cat([g, -2 * g, random_G(rng, 1, 6) * 0])
    assert float(methods.make("mgda")(G).norm()) < 1e-12


def test_pcgrad_two_tasks_leaves_no_conflict(rng):
    for _ in range(300):
        G = random_G(rng, 2, int(rng.integers(2, 10)))
        d = methods.make("pcgrad")(G)
        assert bool((G @ d >= -1e-10 * G.norm() ** 2).all())


def test_pcgrad_without_conflict_is_the_sum(rng):
    G = torch.abs(random_G(rng, 4, 7))  # all pairwise inner products positive
    torch.testing.assert_close(methods.make("pcgrad")(G), G.sum(0))


def test_cagrad_with_c_zero_is_the_sum(rng):
    G = random_G(rng, 4, 7)
    torch.testing.assert_close(methods.make("cagrad", c=0.0)(G), G.sum(0))


@pytest.mark.parametrize("K", [2, 3, 6])
def test_cagrad_solves_its_dual_and_stays_in_the_ball(rng, K):
    c = 0.4
    for _ in range(30):
        G = random_G(rng, K, 8)
        m = methods.make("cagrad", c=c, rescale=0)
        d_mean = m(G) / K
        g0 = G.mean(0)
        # the update lies in the ball of radius c ||g0|| around g0 (Liu et al. 2021, Eq. 5)
        assert float((d_mean - g0).norm()) <= c * float(g0.norm()) * (1 + 1e-9)
        # and maximises the worst-case improvement min_i <g_i, d> over that ball (sampled)
        worst = float((G @ d_mean).min())
        u = torch.tensor(rng.standard_normal((3000, 8)))
        u = u / u.norm(dim=1, keepdim=True) * c * g0.norm() * torch.tensor(rng.uniform(0, 1, (3000, 1))) ** (1 / 8)
        cand = (G @ (g0 + u).T).min(0).values
        assert worst >= float(cand.max()) - 1e-9


def test_cagrad_rescale_options(rng):
    G = random_G(rng, 3, 5)
    d0 = methods.make("cagrad", c=0.5, rescale=0)(G)
    torch.testing.assert_close(methods.make("cagrad", c=0.5, rescale=1)(G), d0 / 1.25)
    torch.testing.assert_close(methods.make("cagrad", c=0.5, rescale=2)(G), d0 / 1.5)


# ---------------------------------------------------------------- torchjd oracle
@pytest.fixture(scope="module")
def tj():
    """torchjd's aggregators; only these oracle tests skip without torchjd (the rest of the module runs)."""
    return pytest.importorskip("torchjd.aggregation")


def require(module: str):
    """A solver torchjd's reference needs: with torchjd installed its absence is a broken test
    environment (the test extra installs it), so the test fails instead of skipping."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        pytest.fail(f"torchjd is installed but {module!r} is not; install the test extra: pip install -e '.[test]'")


def _cos(a, b):
    return float(torch.nn.functional.cosine_similarity(a, b, dim=0))


# documented scale: ours = factor(K, hp) x torchjd's
ORACLES = {
    "mgda": (lambda A: A.MGDA(epsilon=1e-7, max_iters=2_000), lambda K: K),
    "pcgrad": (lambda A: A.PCGrad(), lambda K: 1.0),
    "aligned_mtl": (lambda A: A.AlignedMTL(), lambda K: K),
    "cagrad": (lambda A: A.CAGrad(c=0.4), lambda K: K / (1 + 0.4**2)),
}


@pytest.mark.parametrize("name", sorted(ORACLES))
def test_agrees_with_torchjd(rng, tj, name):
    make_ref, factor = ORACLES[name]
    if name == "cagrad":
        require("cvxpy")
    Ks = [2] if name == "pcgrad" else [2, 3, 5]  # torchjd's PCGrad order is random for K > 2
    for K in Ks:
        for _ in range(25):
            G = random_G(rng, K, int(rng.integers(K, 30)))
            ours, ref = methods.make(name)(G), make_ref(tj)(G)
            assert _cos(ours, ref) >= 0.999, (name, K)
            ratio = float(ours.norm() / ref.norm())
            assert math.isclose(ratio, factor(K), rel_tol=1e-2), (name, K, ratio)


# ---------------------------------------------------------------- edge cases
def _edge_cases(rng):
    g = random_G(rng, 1, 6)
    yield "zero row", torch.cat([random_G(rng, 2, 6), torch.zeros(1, 6)])
    yield "duplicate rows", torch.cat([g, g, random_G(rng, 1, 6)])
    yield "rank one", torch.cat([g, 3 * g, -0.5 * g])
    yield "K = 1", g
    yield "all zero", torch.zeros(3, 6)
    yield "K > P", random_G(rng, 8, 3)
    yield "mixed scales", random_G(rng, 3, 6) * torch.tensor([[1e-8], [1.0], [1e8]])
    yield "float32", random_G(rng, 3, 6, dtype=torch.float32) * 1e4


@pytest.mark.parametrize("name", AGGREGATORS)
def test_edge_cases_give_finite_directions(rng, name):
    for label, G in _edge_cases(rng):
        with warnings.catch_warnings():
            warnings.simplefilter("error", methods.SolverWarning)
            d = methods.make(name)(G)
        assert d.shape == (G.shape[1],) and bool(torch.isfinite(d).all()), (name, label)


@pytest.mark.parametrize("name", ["ls", "mgda", "pcgrad", "cagrad", "aligned_mtl", "aligned_mtl_ub"])
def test_k1_is_the_gradient_itself(rng, name):
    g = random_G(rng, 1, 5)
    # CAGrad with one task: g0 = g_w = g, d = (1 + c) g / (1 + c^2) with the default rescale
    expected = g[0] * (1 + 0.4) / (1 + 0.4**2) if name == "cagrad" else g[0]
    torch.testing.assert_close(methods.make(name)(g), expected)


@pytest.mark.parametrize("name", AGGREGATORS)
def test_nan_or_inf_input_raises_a_clear_error(rng, name):
    G = random_G(rng, 3, 4)
    G[1, 2] = float("nan")
    with pytest.raises(ValueError, match=r"tasks \[1\] contain NaN or inf"):
        methods.make(name)(G)
    with pytest.raises(ValueError, match="K x P matrix"):
        methods.make(name)(torch.zeros(3))


# performance-informed wrappers of aggregators (PIVRG Table 5), tested with non-trivial omega
PI_WRAPPED = ["pi:ls", "pi:mgda", "pi:nash_mtl", "pi:cagrad", "pi:imtl_g", "pi:moco", "pi:aligned_mtl"]


def _adversarial(r: np.random.Generator, K: int, P: int, kind: str) -> np.ndarray:
    G = r.standard_normal((K, P))
    if kind == "zero rows":
        G[r.random(K) < 0.3] = 0.0
    elif kind == "duplicates":
        G = G[r.integers(0, max(1, K // 2), K)]
    elif kind == "rank1":
        G = np.outer(r.standard_normal(K), r.standard_normal(P))
    elif kind == "scales":  # per-task scales spanning 1e-8 .. 1e8
        G = G * 10.0 ** r.uniform(-8, 8, (K, 1))
    elif kind == "huge":  # every task large: Gramian entries up to ~1e19 (MoCo's simplex step at 1e17 and up)
        G = G * 10.0 ** r.uniform(4, 8)
    elif kind == "tiny":
        G = G * 10.0 ** r.uniform(-8, -4)
    return G


@st.composite
def adversarial_run(draw):
    """A run of 1-4 steps on task gradients of one shape (stateful methods carry state across steps)."""
    K = draw(st.integers(1, 40))
    P = draw(st.one_of(st.integers(1, 12), st.integers(13, 400)))
    dtype = draw(st.sampled_from([torch.float64, torch.float32]))
    steps = draw(st.integers(1, 4))
    kind = draw(st.sampled_from(["plain", "zero rows", "duplicates", "rank1", "scales", "huge", "tiny"]))
    seed = draw(st.integers(0, 2**31 - 1))
    r = np.random.default_rng(seed)
    Gs = [torch.tensor(_adversarial(r, K, P, kind), dtype=dtype) for _ in range(steps)]
    drops = torch.tensor(r.uniform(-50, 50, K))
    return Gs, drops


@pytest.mark.parametrize("name", AGGREGATORS + PI_WRAPPED)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(run=adversarial_run())
def test_property_no_nan_ever(name, run):
    """Finite directions of the input's shape and dtype at every step. The contract on solver reports:
    a SolverWarning may be raised (an inner solver stopped early) but the direction is still finite;
    any other warning (overflow, invalid value in numpy/torch) is an error."""
    Gs, drops = run
    m = methods.make(name)
    if name.startswith("pi:"):
        m.observe(methods.Feedback(epoch=0, epochs=1, drops=drops))
    for G in Gs:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            warnings.simplefilter("always", methods.SolverWarning)
            d = m.aggregate(G) if name.startswith("pi:") else m(G)
        assert d.shape == (G.shape[1],) and d.dtype == G.dtype
        assert bool(torch.isfinite(d).all()), (name, G.shape, G.dtype)


# ---------------------------------------------------------------- simplex projection at any scale
@pytest.mark.parametrize("v", [[1e17, 0.0], [1e16, 0.0], [9e15, 1.0], [-1e17, 0.0], [1e300, 1e300],
                               [1e308, -1e308], [1e17, 1e17 + 4.0, -3.0], [5e-324, 0.0, -5e-324]])
def test_project_simplex_is_exact_at_extreme_scales(v):
    from mtl_src.solvers import project_simplex

    v = np.asarray(v)
    x = project_simplex(v)
    assert np.all(x >= 0) and x.sum() == pytest.approx(1.0, abs=1e-15)
    # shift invariance: the projection of v equals that of v - max(v), computed in exact arithmetic here
    with np.errstate(over="ignore"):
        w = np.maximum(v - v.max(), -1.0)  # entries more than 1 below the max always project to 0
    np.testing.assert_allclose(x, project_simplex(w), atol=1e-15)


def test_project_simplex_matches_a_brute_force_projection(rng):
    from scipy.optimize import minimize

    from mtl_src.solvers import project_simplex

    for _ in range(40):
        K = int(rng.integers(1, 7))
        v = rng.standard_normal(K) * 10.0 ** rng.uniform(-3, 3)
        x = project_simplex(v)
        cons = ({"type": "eq", "fun": lambda z: z.sum() - 1.0},)
        ref = minimize(lambda z: ((z - v) ** 2).sum(), np.full(K, 1.0 / K), bounds=[(0, None)] * K,
                       constraints=cons, method="SLSQP", options={"ftol": 1e-14, "maxiter": 500}).x
        assert np.all(x >= 0) and x.sum() == pytest.approx(1.0, abs=1e-14)
        assert ((x - v) ** 2).sum() <= ((ref - v) ** 2).sum() * (1 + 1e-9) + 1e-9  # SLSQP: feasible to ~1e-10


def test_project_simplex_rejects_nonfinite_input():
    from mtl_src.solvers import project_simplex

    with pytest.raises(ValueError, match="NaN or inf"):
        project_simplex(np.array([1.0, np.nan]))


def test_moco_at_gramian_scales_of_1e17_and_beyond(rng):
    """The case the old sort-based projection failed on (no threshold index once entries reach ~1e16)."""
    for scale in (1e8, 1e9, 1e12, 1e100):
        m = methods.make("moco")
        for _ in range(3):
            G = random_G(rng, 3, 50) * scale
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                d = m(G)
            lam = m.state[1]
            assert bool(torch.isfinite(d).all()) and np.all(lam >= 0) and lam.sum() == pytest.approx(1.0)


def test_simplex_solver_with_a_nan_objective_stops_and_reports():
    from mtl_src.solvers import minimize_on_simplex

    calls = []

    def f(x):  # finite at the start, NaN everywhere else: backtracking can never succeed
        calls.append(1)
        if len(calls) == 1:
            return 1.0, np.array([1.0, -1.0])
        return float("nan"), np.array([np.nan, np.nan])

    with pytest.warns(methods.SolverWarning, match="backtracking found no step"):
        sol = minimize_on_simplex(f, 2, max_iter=50)
    assert not sol.converged and np.all(np.isfinite(sol.x)) and sol.x.sum() == pytest.approx(1.0)
    assert len(calls) < 1000
    with pytest.raises(ValueError, match="not finite at the start point"):
        minimize_on_simplex(lambda x: (float("nan"), x), 2)


@pytest.mark.parametrize("name", methods.available())
def test_every_hyperparameter_has_a_default(name):
    import inspect

    hp = methods.hyperparameters(name)
    assert all(v is not inspect.Parameter.empty for v in hp.values()), hp
    methods.make(name)  # the authors' defaults build the method
