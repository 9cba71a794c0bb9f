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
torchjd_aggregation = pytest.importorskip("torchjd.aggregation")


def _cos(a, b):
    return float(torch.nn.functional.cosine_similarity(a, b, dim=0))


# documented scale: ours = factor(K, hp) x torchjd's
ORACLES = {
    "mgda": (lambda: torchjd_aggregation.MGDA(epsilon=1e-7, max_iters=2_000), lambda K: K),
    "pcgrad": (lambda: torchjd_aggregation.PCGrad(), lambda K: 1.0),
    "aligned_mtl": (lambda: torchjd_aggregation.AlignedMTL(), lambda K: K),
    "cagrad": (lambda: torchjd_aggregation.CAGrad(c=0.4), lambda K: K / (1 + 0.4**2)),
}


@pytest.mark.parametrize("name", sorted(ORACLES))
def test_agrees_with_torchjd(rng, name):
    make_ref, factor = ORACLES[name]
    if name == "cagrad":
        pytest.importorskip("cvxpy")
    Ks = [2] if name == "pcgrad" else [2, 3, 5]  # torchjd's PCGrad order is random for K > 2
    for K in Ks:
        for _ in range(25):
            G = random_G(rng, K, int(rng.integers(K, 30)))
            ours, ref = methods.make(name)(G), make_ref()(G)
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


@st.composite
def adversarial_G(draw):
    K = draw(st.integers(1, 40))
    P = draw(st.integers(1, 12))
    seed = draw(st.integers(0, 2**31 - 1))
    r = np.random.default_rng(seed)
    G = r.standard_normal((K, P))
    kind = draw(st.sampled_from(["plain", "zero rows", "duplicates", "rank1", "scales"]))
    if kind == "zero rows":
        G[r.random(K) < 0.3] = 0.0
    elif kind == "duplicates":
        G = G[r.integers(0, max(1, K // 2), K)]
    elif kind == "rank1":
        G = np.outer(r.standard_normal(K), r.standard_normal(P))
    elif kind == "scales":
        G = G * 10.0 ** r.uniform(-8, 8, (K, 1))
    return torch.tensor(G)


@pytest.mark.parametrize("name", AGGREGATORS)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(G=adversarial_G())
def test_property_no_nan_ever(name, G):
    d = methods.make(name)(G)
    assert bool(torch.isfinite(d).all())


@pytest.mark.parametrize("name", methods.available())
def test_every_hyperparameter_has_a_default(name):
    import inspect

    hp = methods.hyperparameters(name)
    assert all(v is not inspect.Parameter.empty for v in hp.values()), hp
    methods.make(name)  # the authors' defaults build the method
